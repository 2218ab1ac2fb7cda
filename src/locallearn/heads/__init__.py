"""Auxiliary heads: one family per module, all registered in ``HEADS``."""
from __future__ import annotations

import inspect
from typing import Any, Dict, List

from ..errors import ConfigError, choice_error
from .base import HEADS, AuxHead, HeadContext, interpolate
from . import dgl, greedy, infopro, predsim, vit  # noqa: F401  (register the families)
from .losses import supcon_loss

__all__ = ["HEADS", "AuxHead", "HeadContext", "build_head", "head_options",
           "interpolate", "supcon_loss"]


def _option_params(name: str) -> List[inspect.Parameter]:
    """The keyword options of a family's builder (everything after ``ctx``)."""
    params = list(inspect.signature(HEADS.get(name)).parameters.values())
    return [p for p in params[1:] if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def head_options(name: str) -> Dict[str, Any]:
    """Default option values of head family ``name`` (for CLI help / type conversion)."""
    return {p.name: p.default for p in _option_params(name)}


def build_head(name: str, ctx: HeadContext, **opts: Any) -> AuxHead:
    """Build head family ``name`` for ``ctx``; unknown names/options raise ConfigError."""
    builder = HEADS.get(name)
    layouts = getattr(builder, "layouts", ("maps",))
    if ctx.info.layout not in layouts:
        fits = [n for n in HEADS.names() if ctx.info.layout in getattr(HEADS.get(n), "layouts", ("maps",))]
        raise ConfigError(f"head {name!r} reads {'/'.join(layouts)} but unit {ctx.info.name!r} "
                          f"outputs {ctx.info.layout}; use one of: {', '.join(fits)}")
    valid = [p.name for p in _option_params(name)]
    for key in opts:
        if key not in valid:
            raise choice_error(f"{name} head option", key, valid or ["(none)"])
    return builder(ctx, **opts)
