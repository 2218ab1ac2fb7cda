"""The training configuration: one dataclass, mapped 1:1 by the CLI, saved with each run."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from .errors import ConfigError, choice_error

AMP_CHOICES = ("none", "bf16", "fp16")


@dataclass
class TrainConfig:
    """Everything that defines a run. Defaults follow the papers' CIFAR recipe."""

    model: str = "resnet32"
    method: str = "e2e"
    blocks: int = 1
    dataset: str = "fashion-mnist"
    data_dir: Optional[str] = None
    image_size: Optional[int] = None
    download: bool = False
    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.0
    warmup_start_lr: float = 0.01
    seed: int = 0
    device: str = "auto"
    channels_last: bool = False
    amp: str = "none"
    augment: bool = True
    limit_train: Optional[int] = None
    limit_test: Optional[int] = None
    out: str = "runs/run"
    lb: str = "unit"
    ema_momentum: float = 0.995
    bridge_init: str = "copy"  # MAN/MAN++ copies: "copy" of the unit, or "random" (reference code)
    recompute: bool = False
    ddp: bool = False
    head_opts: Dict[str, Any] = field(default_factory=dict)
    boundaries: Optional[List[int]] = None
    split: str = "equal"
    eval_batch_size: int = 512
    log_interval: int = 25
    checkpoint_minutes: float = 10.0  # also checkpoint mid-epoch this often (0: epochs only)

    def validate(self) -> "TrainConfig":
        """Raise ConfigError naming the first bad value; return self."""
        positive_ints = {"epochs": self.epochs, "batch_size": self.batch_size,
                         "eval_batch_size": self.eval_batch_size,
                         "log_interval": self.log_interval}
        for name, value in positive_ints.items():
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name.replace('_', '-')} must be a positive integer, got {value!r}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be positive, got {self.lr!r}")
        for name in ("limit_train", "limit_test"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name.replace('_', '-')} must be >= 1, got {value!r}")
        if not self.checkpoint_minutes >= 0:
            raise ConfigError(f"checkpoint-minutes must be >= 0, got {self.checkpoint_minutes!r}")
        if self.amp not in AMP_CHOICES:
            raise choice_error("amp mode", self.amp, AMP_CHOICES)
        if self.weight_decay < 0 or not 0 <= self.momentum < 1:
            raise ConfigError(f"need weight-decay >= 0 and 0 <= momentum < 1, got "
                              f"{self.weight_decay!r} and {self.momentum!r}")
        if self.warmup_epochs < 0 or self.warmup_epochs > self.epochs:
            raise ConfigError(f"warmup-epochs must be in [0, epochs], got {self.warmup_epochs!r}")
        return self

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def save(self, path: Path) -> None:
        from .checkpoint import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> "TrainConfig":
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError, TypeError) as e:
            raise ConfigError(f"cannot read run config {path}: {e}") from None
