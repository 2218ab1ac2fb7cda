"""Auxiliary heads: one family per module, all registered in ``HEADS``."""
from __future__ import annotations

import inspect
from typing import Any, Dict, List

from ..errors import ConfigError, ConfigTypeError, choice_error
from ..nets.checks import as_float, as_int
from .base import HEADS, AuxHead, HeadContext, interpolate
from . import dgl, greedy, infopro, predsim, slm, vit  # noqa: F401  (register the families)
from .losses import supcon_loss

__all__ = ["HEADS", "AuxHead", "HeadContext", "build_head", "serves", "head_options",
           "interpolate", "supcon_loss"]


def _option_params(name: str) -> List[inspect.Parameter]:
    """The keyword options of a family's builder (everything after ``ctx``)."""
    params = list(inspect.signature(HEADS.get(name)).parameters.values())
    return [p for p in params[1:] if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def head_options(name: str) -> Dict[str, Any]:
    """Default option values of head family ``name`` (for CLI help / type conversion)."""
    return {p.name: p.default for p in _option_params(name)}


def serves(family: str, task: str) -> bool:
    """Whether head family ``family`` can serve ``task`` (its ``tasks``; None: every task)."""
    tasks = getattr(HEADS.get(family), "tasks", None)
    return tasks is None or task in tasks


def build_head(name: str, ctx: HeadContext, **opts: Any) -> AuxHead:
    """Build head family ``name`` for ``ctx``; unknown names/options raise ConfigError."""
    builder = HEADS.get(name)
    layouts = getattr(builder, "layouts", ("maps",))
    if ctx.info.layout not in layouts:
        fits = [n for n in HEADS.names() if ctx.info.layout in getattr(HEADS.get(n), "layouts", ("maps",))]
        raise ConfigError(f"head {name!r} reads {'/'.join(layouts)} but unit {ctx.info.name!r} "
                          f"outputs {ctx.info.layout}; use one of: {', '.join(fits)}")
    tasks = getattr(builder, "tasks", None)
    if tasks is not None and ctx.task.name not in tasks:
        fits = [n for n in HEADS.names() if serves(n, ctx.task.name)]
        raise ConfigError(f"head {name!r} serves {'/'.join(tasks)} only, not "
                          f"{ctx.task.name}; for {ctx.task.name} use one of: {', '.join(fits)}")
    defaults = {p.name: p.default for p in _option_params(name)}
    for key in opts:
        if key not in defaults:
            raise choice_error(f"{name} head option", key, list(defaults) or ["(none)"])
    opts = {k: _typed(f"{name} head option {k}", v, defaults[k]) for k, v in opts.items()}
    return builder(ctx, **opts)


def _typed(what: str, value: Any, default: Any) -> Any:
    """``value`` checked against the type of the option's default, so that a wrong type
    fails here, naming the option, not as a comparison deep inside a head's constructor."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigTypeError(f"{what} must be True or False, got {value!r}")
        return value
    if isinstance(default, int):
        return as_int(what, value)
    if isinstance(default, float):
        return as_float(what, value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigTypeError(f"{what} must be a string, got {value!r}")
        return value
    if isinstance(default, (tuple, list)):  # a (start, end) pair, or one number for both
        if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
            return as_float(what, value)
        return tuple(as_float(what, v) for v in value)
    return value
