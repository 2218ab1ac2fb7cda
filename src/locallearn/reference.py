"""What the MAN / MAN++ reference code does differently, as reusable pieces.

Every piece here is selectable on its own (``bridge_init="reference"``,
``head_init="reference"``, ``split="reference"``, ``lr_schedule="epoch"``); the
presets (``presets.py``) only name sets of them. Facts: ``../shared/REFERENCE.md``,
"Where the reference code differs".
"""
from __future__ import annotations

import math
from typing import Dict, List, Tuple

import torch
from torch import nn

from .config import HEAD_INITS
from .errors import ConfigError

INIT_CHOICES = HEAD_INITS


@torch.no_grad()
def reference_init_(module: nn.Module) -> nn.Module:
    """Redraw ``module`` in place as the reference's weight-init loop does: every
    ``Conv2d`` weight from N(0, 2 / (kh * kw * out_channels)) (Kaiming normal, fan-out),
    every ``BatchNorm2d`` to weight 1, bias 0. Conv biases and Linear layers keep their
    values (the loop does not touch them). Returns ``module``."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            m.weight.normal_(0.0, math.sqrt(2.0 / n))
        elif isinstance(m, nn.BatchNorm2d):
            m.weight.fill_(1.0)
            m.bias.zero_()
    return module


# The reference's local-module tables (networks/config.py of the MAN / MAN++ CIFAR code):
# for each K, the (stage, index) of the last residual unit of each module after the stem,
# which the reference always trains as a module of its own. So a table of n entries makes
# n + 1 blocks here: "K=16" on ResNet-32 is 16 blocks (15 entries), "K=8" is 9.
_TABLES: Dict[str, Dict[int, List[Tuple[int, int]]]] = {
    "resnet32": {
        2: [(2, 1), (3, 4)],
        3: [(1, 4), (2, 4), (3, 4)],
        4: [(1, 2), (2, 1), (3, 0), (3, 4)],
        8: [(1, 0), (1, 2), (1, 4), (2, 1), (2, 3), (3, 0), (3, 2), (3, 4)],
        16: [(s, i) for s in (1, 2, 3) for i in range(5)],
    },
    "resnet110": {
        2: [(2, 8), (3, 17)],
        3: [(1, 17), (2, 17), (3, 17)],
        4: [(1, 11), (2, 7), (3, 3), (3, 17)],
        8: [(1, 4), (1, 11), (2, 0), (2, 7), (2, 14), (3, 3), (3, 10), (3, 17)],
        16: [(1, 1), (1, 4), (1, 7), (1, 10), (1, 13), (1, 16), (2, 1), (2, 4), (2, 7),
             (2, 11), (2, 15), (3, 1), (3, 5), (3, 9), (3, 13), (3, 17)],
        32: [(1, 1), (1, 2), (1, 4), (1, 5), (1, 7), (1, 9), (1, 11), (1, 13), (1, 14),
             (1, 16), (1, 17), (2, 1), (2, 2), (2, 4), (2, 5), (2, 7), (2, 9), (2, 11),
             (2, 13), (2, 14), (2, 16), (2, 17), (3, 1), (3, 3), (3, 4), (3, 6), (3, 7),
             (3, 9), (3, 11), (3, 13), (3, 15), (3, 17)],
        55: [(s, i) for s in (1, 2, 3) for i in range(18)],
    },
}
_UNITS_PER_STAGE = {"resnet32": 5, "resnet110": 18}


def reference_split_models() -> Dict[str, Tuple[int, ...]]:
    """Model -> the K values the reference's tables define."""
    return {m: tuple(sorted(t)) for m, t in _TABLES.items()}


def reference_boundaries(model: str, k: int, stem_alone: bool = True) -> List[int]:
    """The reference's cut points for ``model`` at its ``K``, as the unit indices where
    blocks 2.. start. ``stem_alone``: the MAN++ code trains the stem as a module of its
    own (unit 0 alone first); the MAN (ECCV) code does not (the stem joins the first
    module of the table, so its K=16 is 15 blocks)."""
    if model not in _TABLES:
        raise ConfigError(f"split 'reference' has tables for {', '.join(_TABLES)} only, not "
                          f"{model!r}; use --split equal or --boundaries")
    table = _TABLES[model]
    if k not in table:
        raise ConfigError(f"split 'reference' defines K in {sorted(table)} for {model}, "
                          f"got K={k}")
    n = _UNITS_PER_STAGE[model]
    ends = [1 + n * (stage - 1) + index for stage, index in table[k]]
    return ([1] if stem_alone else []) + [e + 1 for e in ends[:-1]]


def reference_block_sizes(model: str, k: int, stem_alone: bool = True) -> List[int]:
    """Body units per block under the reference's table, e.g. [1, 1, 2, 2, 2, 2, 2, 2, 2]
    for resnet32 at its K=8 (the stem, then the modules of its table)."""
    cuts = reference_boundaries(model, k, stem_alone)
    ends = [*cuts, 1 + 3 * _UNITS_PER_STAGE[model]]
    return [e - s for s, e in zip([0, *cuts], ends)]


def epoch_lr(base_lr: float, epoch: int, epochs: int, warmup_epochs: float,
             warmup_start_lr: float) -> float:
    """The reference's ``adjust_learning_rate`` with ``--cos_lr``: one value per epoch
    (``epoch`` 0-based here, 1-based there), cosine ``0.5 * lr * (1 + cos(pi * e / E))``,
    blended during the first ``warmup_epochs`` epochs with ``warmup_start_lr`` as
    ``cos * (e - 1) / W + start * (W + 1 - e) / W`` (W = 10 in the reference)."""
    e = epoch + 1
    cos = 0.5 * base_lr * (1.0 + math.cos(math.pi * e / epochs))
    w = warmup_epochs
    if w > 0 and e <= w:
        return cos * (e - 1) / w + warmup_start_lr * (w + 1 - e) / w
    return cos
