"""Method specs: a head family plus an optional bridge, e.g. ``infopro+manpp``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

from .errors import ConfigError
from .momentum import BRIDGE_KINDS


@dataclass(frozen=True)
class MethodSpec:
    """``head``: a registered head family, ``"auto"`` (the model's default family, for
    specs naming only a bridge such as ``manpp``) or ``None`` for ``e2e``;
    ``bridge``: ema/man/manpp or ``None``."""

    head: Optional[str]
    bridge: Optional[str] = None

    @property
    def is_e2e(self) -> bool:
        return self.head is None

    def __str__(self) -> str:
        if self.head is None:
            return "e2e"
        if self.head == "auto":
            return str(self.bridge)
        return self.head if self.bridge is None else f"{self.head}+{self.bridge}"


def list_methods() -> List[str]:
    """Every valid spec: e2e, each head family, and each family with each bridge."""
    from .heads import HEADS

    out = ["e2e", *BRIDGE_KINDS]
    for h in HEADS.names():
        out.append(h)
        out.extend(f"{h}+{b}" for b in BRIDGE_KINDS)
    return out


def parse_method(spec: str) -> MethodSpec:
    """Parse ``head[+bridge]``; unknown parts raise ConfigError listing valid specs."""
    from .heads import HEADS

    text = spec.strip().lower()
    if text == "e2e":
        return MethodSpec(None)
    if text in BRIDGE_KINDS:
        return MethodSpec("auto", text)
    parts = text.split("+")
    head = parts[0]
    bridge = parts[1] if len(parts) == 2 else None
    if len(parts) > 2 or head not in HEADS or (len(parts) == 2 and bridge not in BRIDGE_KINDS):
        raise ConfigError(f"unknown method {spec!r} (choose from: {', '.join(list_methods())})")
    return MethodSpec(head, bridge)
