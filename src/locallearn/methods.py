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


def methods_for_task(task: str) -> List[str]:
    """The specs whose head family can serve ``task`` (e2e and bridge-only ones too)."""
    from .heads import serves

    return [m for m in list_methods()
            if m == "e2e" or m in BRIDGE_KINDS or serves(m.split("+")[0], task)]


def check_method_task(method: str, model_default_head: str, task: str) -> None:
    """Raise ConfigError when ``method``'s head family cannot serve ``task`` (before any
    work: the same message LocalNet would give, naming the specs that fit)."""
    from .heads import HEADS

    spec = parse_method(method)
    if spec.is_e2e:
        return
    family = model_default_head if spec.head == "auto" else spec.head
    tasks = getattr(HEADS.get(family), "tasks", None)
    if tasks is not None and task not in tasks:
        raise ConfigError(f"method {method!r}: head {family!r} serves {'/'.join(tasks)} only, "
                          f"not {task}; for {task} choose from: "
                          f"{', '.join(methods_for_task(task))}")
