"""The one exception type for user mistakes."""
from __future__ import annotations

from typing import Iterable


class ConfigError(ValueError):
    """Bad user input: the CLI turns it into one line on stderr and exit code 2."""


def choice_error(what: str, value: object, allowed: Iterable[object]) -> ConfigError:
    """Build the standard 'unknown X: V (choose from: ...)' error."""
    names = ", ".join(str(a) for a in allowed)
    return ConfigError(f"unknown {what} {value!r} (choose from: {names})")
