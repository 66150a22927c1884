"""Run dirs -> a study's tables and figures (`python -m hsv_exp.results DIRS --out DIR`).

Modules in import order, none importing a later one: `runs` (reading run dirs, conditions, scan
curves) -> `tables` (runs.csv, markdown tables) -> `claims` (the paper's claims) and `plots`
(figures) -> `study` (summary.md, writing a study folder) and `lowres` (the low-resource study's
paired.csv, tables.md and score_vs_n.png) -> `__main__` (the command line).
"""
