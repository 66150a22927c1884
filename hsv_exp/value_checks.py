"""The value checks the schema's `__post_init__` bodies use (hsv_exp/config.py): each raises a
ConfigError whose one line names the dotted key, the allowed range and the value given."""

from __future__ import annotations

from hsv_exp.errors import ConfigError


def check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def at_least(group: str, obj, minimum: float, *keys: str) -> None:
    """Each of obj's `keys` (None = unset, not checked) is >= minimum."""
    for key in keys:
        value = getattr(obj, key)
        check(value is None or value >= minimum, f"{group}.{key} must be >= {minimum}, got {value}")


def positive(group: str, obj, *keys: str) -> None:
    for key in keys:
        value = getattr(obj, key)
        check(value is None or value > 0, f"{group}.{key} must be > 0, got {value}")


def probability(group: str, obj, *keys: str) -> None:
    """Dropout-like probabilities: in [0, 1) (1 would drop everything)."""
    for key in keys:
        value = getattr(obj, key)
        check(0 <= value < 1, f"{group}.{key} must be in [0, 1), got {value}")
