"""The training configuration: one dataclass, mapped 1:1 by the CLI, saved with each run."""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from .errors import ConfigError, check_choice

AMP_CHOICES = ("none", "bf16", "fp16")
# the choices of the fidelity options, defined here (no torch import) and used by
# momentum.py / reference.py
EMA_TIMINGS = ("after-step", "before-step")
BRIDGE_INITS = ("copy", "random", "reference")
HEAD_INITS = ("default", "reference")
LR_SCHEDULES = ("cosine", "epoch")
SPLITS = ("equal", "memory", "time", "stages", "reference", "reference-man")
OPTIMIZERS = ("sgd", "adamw")
PIPELINE_MODES = ("stream", "lockstep")


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
    optimizer: str = "sgd"  # per block; "adamw": default betas, momentum/nesterov unused
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4
    clip_grad_norm: float = 0.0  # max gradient norm of each block, before its step (0: off)
    warmup_epochs: float = 0.0
    warmup_start_lr: float = 0.01
    # "cosine": per step, linear warm-up then cosine to 0; "epoch": the reference's
    # per-epoch cosine with its blended warm-up (reference.epoch_lr)
    lr_schedule: str = "cosine"
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
    # MAN/MAN++ copies: "copy" of the unit, "random" (one fresh default init for both) or
    # "reference" (each redrawn independently with the reference's init)
    bridge_init: str = "copy"
    ema_timing: str = "after-step"  # or "before-step" (the reference: pre-step weights)
    head_init: str = "default"  # or "reference": the heads' convs redrawn as the reference does
    recompute: bool = False
    ddp: bool = False
    # PPLL (parallel/pipeline.py): blocks spread over the torchrun ranks
    pipeline: bool = False
    pipeline_mode: str = "stream"  # or "lockstep": one batch in the pipe at a time (exact)
    pipeline_depth: int = 2  # stream: batches in flight per link (also the EMA staleness)
    ema_sync_every: int = 1  # steps between fetches of the next rank's unit for the EMA
    head_opts: Dict[str, Any] = field(default_factory=dict)
    # options of single heads over head_opts, by head index ("0": the first head)
    head_overrides: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    boundaries: Optional[List[int]] = None
    # "reference": the MAN++ code's K tables (reference.reference_boundaries); its K
    # counts the modules after the stem's own, so K=8 on resnet32 is 9 blocks;
    # "reference-man": the MAN (ECCV) code's, the stem in the first module (K=16: 15)
    split: str = "equal"
    preset: str = ""  # the preset the run started from, if any (what it set is in here)
    eval_batch_size: int = 512
    log_interval: int = 25
    checkpoint_minutes: float = 10.0  # also checkpoint mid-epoch this often (0: epochs only)
    nan_patience: int = 0  # steps with a non-finite loss tolerated before the run stops
    dist_timeout: float = 300.0  # seconds a collective may wait for a peer rank (--ddp)
    version: str = ""  # the locallearn version that wrote the config (filled in by fit)

    def validate(self) -> "TrainConfig":
        """Raise ConfigError naming the first bad value; return self."""
        positive_ints = {"epochs": self.epochs, "batch_size": self.batch_size,
                         "eval_batch_size": self.eval_batch_size,
                         "log_interval": self.log_interval, "blocks": self.blocks}
        for name, value in positive_ints.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                got = f"K={value!r}" if name == "blocks" else repr(value)
                raise ConfigError(f"{_flag(name)} must be a positive integer, got {got}")
        floats = ("lr", "momentum", "weight_decay", "warmup_epochs", "warmup_start_lr",
                  "ema_momentum", "checkpoint_minutes", "dist_timeout", "clip_grad_norm")
        for name in floats:  # nan / inf would train on (or write invalid JSON) silently
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value):
                raise ConfigError(f"{_flag(name)} must be a finite number, got {value!r}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be positive, got {self.lr!r}")
        for name in ("limit_train", "limit_test", "image_size"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 1):
                raise ConfigError(f"{_flag(name)} must be an integer >= 1, got {value!r}")
        if not self.checkpoint_minutes >= 0:
            raise ConfigError(f"checkpoint-minutes must be >= 0, got {self.checkpoint_minutes!r}")
        if not self.clip_grad_norm >= 0:
            raise ConfigError(f"clip-grad-norm must be >= 0 (0: off), got {self.clip_grad_norm!r}")
        if not self.dist_timeout > 0:
            raise ConfigError(f"dist-timeout must be > 0 seconds, got {self.dist_timeout!r}")
        if isinstance(self.nan_patience, bool) or not isinstance(self.nan_patience, int) \
                or self.nan_patience < 0:
            raise ConfigError(f"nan-patience must be an integer >= 0, got {self.nan_patience!r}")
        for name in ("pipeline_depth", "ema_sync_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{_flag(name)} must be an integer >= 1, got {value!r}")
        check_choice("pipeline-mode", self.pipeline_mode, PIPELINE_MODES)
        if self.pipeline and self.ddp:
            raise ConfigError("--pipeline and --ddp are two ways to use the ranks; pick one")
        if self.pipeline and self.method == "e2e":
            raise ConfigError("--pipeline runs gradient-isolated blocks on different ranks; "
                              "method 'e2e' is one block (use a local method, e.g. dgl+manpp "
                              "with --blocks >= the number of processes)")
        check_choice("amp mode", self.amp, AMP_CHOICES)
        for what, value, allowed in (("ema-timing", self.ema_timing, EMA_TIMINGS),
                                     ("bridge-init", self.bridge_init, BRIDGE_INITS),
                                     ("head-init", self.head_init, HEAD_INITS),
                                     ("lr-schedule", self.lr_schedule, LR_SCHEDULES),
                                     ("split", self.split, SPLITS),
                                     ("optimizer", self.optimizer, OPTIMIZERS)):
            check_choice(what, value, allowed)
        if not isinstance(self.head_overrides, dict) or not all(
                isinstance(v, dict) for v in self.head_overrides.values()):
            raise ConfigError(f"head-overrides must map a head index to options, got "
                              f"{self.head_overrides!r}")
        if self.weight_decay < 0 or not 0 <= self.momentum < 1:
            raise ConfigError(f"need weight-decay >= 0 and 0 <= momentum < 1, got "
                              f"{self.weight_decay!r} and {self.momentum!r}")
        if self.optimizer == "sgd" and self.nesterov and self.momentum == 0:
            raise ConfigError("Nesterov SGD needs momentum > 0: pass --momentum > 0, or "
                              "--no-nesterov for plain SGD with --momentum 0")
        if not 0 <= self.ema_momentum < 1:
            raise ConfigError(f"ema-momentum must be in [0, 1), got {self.ema_momentum!r}")
        if self.warmup_epochs < 0 or self.warmup_epochs > self.epochs:
            raise ConfigError(f"warmup-epochs must be in [0, epochs], got {self.warmup_epochs!r}")
        if self.split.startswith("reference") and self.boundaries is None:
            self.resolve_split()
        if self.boundaries is not None and len(self.boundaries) != self.blocks - 1:
            raise ConfigError(f"boundaries {list(self.boundaries)} give "
                              f"{len(self.boundaries) + 1} blocks but blocks is {self.blocks}; "
                              "pass --boundaries alone (it implies K) or K-1 of them")
        if self.method.strip().lower() == "e2e" and (self.blocks != 1 or self.boundaries):
            raise ConfigError(f"e2e trains the whole network as one block; blocks "
                              f"{self.blocks} / boundaries {self.boundaries} need a local "
                              "method, e.g. --method dgl+manpp")
        return self

    def resolve_split(self) -> None:
        """``split="reference"``: the reference's cut points for this model and K, written
        into ``boundaries`` (and ``blocks``, the reference's K + 1 where its table leaves
        the stem out, e.g. K=8 on resnet32 -> 9 blocks). A saved config is already
        resolved, so a resume builds the same blocks."""
        from .reference import reference_boundaries

        if self.method.strip().lower() == "e2e":
            return
        self.boundaries = reference_boundaries(self.model, self.blocks,
                                               stem_alone=self.split == "reference")
        self.blocks = len(self.boundaries) + 1

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def save(self, path: Path) -> None:
        from .checkpoint import atomic_write_text

        # allow_nan=False: validate() keeps nan/inf out, and the file stays valid JSON
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n")

    @classmethod
    def load(cls, path: Path) -> "TrainConfig":
        try:
            data = json.loads(Path(path).read_text())
            if not isinstance(data, dict):
                raise TypeError(f"expected a JSON object, got {type(data).__name__}")
            return cls.from_dict(data)
        except (OSError, ValueError, TypeError) as e:  # JSONDecodeError is a ValueError
            raise ConfigError(f"cannot read run config {path}: {e}") from None


def _flag(name: str) -> str:
    """The CLI spelling of a config field, for messages."""
    return name.replace("_", "-")
