"""User-facing errors. Every CLI maps ``UsageError`` to a one-line message and exit code 2."""

from __future__ import annotations


class UsageError(ValueError):
    """Bad input from the user: a config field, a CLI flag, a data file.

    The message must name the field (or row/column) and the allowed values.
    """

    exit_code = 2


class ConfigError(UsageError):
    """A config field has an invalid value."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"{field}: {message}")


def require(condition: bool, field: str, message: str) -> None:
    """Raise ``ConfigError(field, message)`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(field, message)
