"""The speed benchmark behind `make bench` (outside the hsv_exp package: users of hsv_exp do not need it)."""
