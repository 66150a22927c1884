from hsv_exp.cli import main

main()
