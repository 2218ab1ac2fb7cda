"""Wall-clock timing of a callable: warm-up excluded, median of repeats, device-synced."""
from __future__ import annotations

import statistics
import time
from typing import Callable, List, Sequence

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], device: torch.device, warmup: int = 2,
              repeats: int = 5) -> List[float]:
    """Seconds of each of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls."""
    return time_interleaved([fn], device, warmup, repeats)[0]


def time_interleaved(fns: Sequence[Callable[[], object]], device: torch.device,
                     warmup: int = 2, repeats: int = 5) -> List[List[float]]:
    """Like ``time_call`` for several callables, taken in turns (A B C A B C ...), so that
    a machine whose speed drifts (shared cores, clocks) slows them all alike and their
    ratios stay fair."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    _sync(device)
    times: List[List[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, out in zip(fns, times):
            t0 = time.perf_counter()
            fn()
            _sync(device)
            out.append(time.perf_counter() - t0)
    return times


def median(values: List[float]) -> float:
    return float(statistics.median(values))
