"""Argument checks shared by ``create_model``, ``wrap`` and ``LocalNet``.

Each raises a ConfigError (a ValueError) for a bad value and a ConfigTypeError (also a
TypeError) for a wrong type, with a message naming the argument; the CLI prints either
as one line.
"""
from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from typing import Optional, Tuple

from ..errors import ConfigError, ConfigTypeError


def as_int(name: str, value: object, minimum: Optional[int] = None) -> int:
    """``value`` as an int (numpy / torch integers too; bools and floats refused)."""
    if isinstance(value, bool):
        raise ConfigTypeError(f"{name} must be an integer, got {value!r}")
    try:
        out = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise ConfigTypeError(f"{name} must be an integer, got {value!r}") from None
    if minimum is not None and out < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {out}")
    return out


def as_float(name: str, value: object) -> float:
    """``value`` as a finite float (ints and numpy / torch scalars too; bools refused)."""
    if isinstance(value, (bool, str, bytes)) or value is None:
        raise ConfigTypeError(f"{name} must be a number, got {value!r}")
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigTypeError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(out):
        raise ConfigError(f"{name} must be a finite number, got {out}")
    return out


def as_size(name: str, value: object, allow_int: bool = False) -> Tuple[int, int]:
    """An (H, W) pair of positive ints; with ``allow_int`` a single int means (n, n)."""
    shape = "an int or an (H, W) pair of positive ints" if allow_int else \
        "an (H, W) pair of positive ints"
    if allow_int and _is_int(value):
        n = as_int(name, value, 1)
        return n, n
    if not _is_sequence(value):
        hint = f" (e.g. ({value}, {value}) for a square)" if _is_int(value) else ""
        raise ConfigTypeError(f"{name} must be {shape}, got {value!r}{hint}")
    items = list(value)  # type: ignore[call-overload]
    if len(items) != 2:
        raise ConfigError(f"{name} must be {shape}, got {len(items)} values: {value!r}")
    try:
        h, w = (as_int(name, v) for v in items)
    except ConfigTypeError:
        raise ConfigTypeError(f"{name} must be {shape}, got {value!r}") from None
    if h < 1 or w < 1:
        raise ConfigError(f"{name} must be {shape}, got {value!r}")
    return h, w


def as_floats(name: str, value: object) -> Tuple[float, ...]:
    """A non-empty sequence of finite floats (e.g. per-channel mean / std)."""
    if not _is_sequence(value):
        raise ConfigTypeError(f"{name} must be a sequence of numbers (one per channel), "
                              f"got {value!r}")
    out = tuple(as_float(name, v) for v in value)  # type: ignore[union-attr]
    if not out:
        raise ConfigError(f"{name} must not be empty")
    return out


def _is_int(value: object) -> bool:
    return not isinstance(value, bool) and hasattr(value, "__index__")


def _is_sequence(value: object) -> bool:
    """Lists, tuples, torch.Size, and 1-D tensors / arrays; not strings."""
    if isinstance(value, (str, bytes)):
        return False
    shape = getattr(value, "shape", None)
    return isinstance(value, Sequence) or (shape is not None and len(shape) == 1)
