"""User-facing errors: the CLI prints their message as one line and exits non-zero."""


class HsvError(Exception):
    """Something the user can fix (bad input, bad config, missing data)."""


class ConfigError(HsvError):
    """An invalid combination of config values."""


class DataError(HsvError):
    """Missing or malformed data files."""
