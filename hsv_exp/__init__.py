"""hsv_exp: hidden-state variability guided layer selection for transfer learning."""
