"""The exception types for user mistakes."""
from __future__ import annotations

from typing import Iterable


class ConfigError(ValueError):
    """Bad user input: the CLI turns it into one line on stderr and exit code 2."""


class ConfigTypeError(ConfigError, TypeError):
    """A user-supplied value of the wrong type (``None``, a str for an int, ...).

    A ``TypeError`` for Python callers, and still a ``ConfigError``, so the CLI's
    one-line handler catches it like every other user mistake.
    """


def choice_error(what: str, value: object, allowed: Iterable[object]) -> ConfigError:
    """Build the standard 'unknown X: V (choose from: ...)' error (a ConfigTypeError
    when ``value`` is not even a string)."""
    names = ", ".join(str(a) for a in allowed)
    cls = ConfigError if isinstance(value, str) else ConfigTypeError
    return cls(f"unknown {what} {value!r} (choose from: {names})")


def check_choice(what: str, value: object, allowed: Iterable[object]) -> None:
    """Raise ``choice_error`` unless ``value`` is one of ``allowed``."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise choice_error(what, value, allowed)
