"""Seeded, stratified subsets: ``--limit-train N`` keeps every class in proportion."""
from __future__ import annotations

from typing import Dict, List, Sequence

import torch


def stratified_subset(labels: Sequence[int], n: int, seed: int) -> List[int]:
    """Indices (sorted) of ``n`` of the samples, each class in proportion to its size.

    When ``n`` >= the number of classes every class gets at least one sample; the rest
    is shared in proportion (largest remainder, ties broken at random). Which samples of
    a class are kept is drawn from ``seed``; the same (labels, n, seed) give the same
    subset on every machine.
    """
    if n >= len(labels):
        return list(range(len(labels)))
    by_class: Dict[int, List[int]] = {}
    for i, y in enumerate(labels):
        by_class.setdefault(int(y), []).append(i)
    classes = sorted(by_class)
    counts = [len(by_class[c]) for c in classes]
    g = torch.Generator().manual_seed(int(seed) & 0xFFFFFFFFFFFFFFFF)  # any int --seed
    tie_rank = torch.randperm(len(classes), generator=g).tolist()
    # n >= K: one sample per class first, then share the rest over what is left of each
    base = 1 if n >= len(classes) else 0
    rest = n - base * len(classes)
    caps = [c - base for c in counts]
    total = sum(caps)
    quota = [base + rest * cap // total for cap in caps]
    frac = [rest * cap % total for cap in caps]  # exact integer remainders
    short = n - sum(quota)
    for k in sorted(range(len(classes)), key=lambda k: (-frac[k], tie_rank[k]))[:short]:
        quota[k] += 1
    keep: List[int] = []
    for k, c in enumerate(classes):
        pick = torch.randperm(counts[k], generator=g)[:quota[k]].tolist()
        keep.extend(by_class[c][j] for j in pick)
    return sorted(keep)
