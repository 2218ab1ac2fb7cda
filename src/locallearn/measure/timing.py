"""Wall-clock timing of a callable: warm-up excluded, median of repeats, device-synced."""
from __future__ import annotations

import statistics
import time
from typing import Callable, List

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], device: torch.device, warmup: int = 2,
              repeats: int = 5) -> List[float]:
    """Seconds of each of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


def median(values: List[float]) -> float:
    return float(statistics.median(values))
