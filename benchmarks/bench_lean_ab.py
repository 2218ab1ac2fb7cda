"""What two lean-step changes gain, measured before/after in one process (issue 4).

"before" puts back, for the timed call only, the plain global pools (``x.mean((2, 3))``,
``nn.AdaptiveAvgPool2d(1)``: an NCHW gradient into channels_last maps) and the plain
MAN++ mix (``s*b + (2-s)*e``); "after" is the library as it is. Both nets start from the
same weights; E2E and the local method, before and after, are timed in turns (median of
repeats after warm-up), batch 128, Fashion-MNIST's shape, channels_last.

    .venv/bin/python benchmarks/bench_lean_ab.py [--repeats 5]
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
from pathlib import Path
from typing import Callable, Dict, Iterator, List

import torch
import torch.nn.functional as F

from locallearn import momentum
from locallearn.config import TrainConfig
from locallearn.heads import dgl, greedy
from locallearn.measure.bench import BenchSpec, _build, _full_step, environment
from locallearn.measure.timing import median, time_interleaved
from locallearn.nets import cifar_resnet, pool
from locallearn.optim import BlockOptimizers

RESULTS = Path(__file__).resolve().parent / "results"
CONFIGS = [("resnet32", "infopro+manpp", 16), ("resnet32", "dgl+manpp", 16),
           ("resnet32", "dgl", 16), ("resnet110", "infopro+manpp", 55)]


def _plain_mean(x: torch.Tensor, keepdim: bool = False) -> torch.Tensor:
    return x.mean(dim=(2, 3), keepdim=keepdim)


class _PlainMix:
    @staticmethod
    def apply(b: torch.Tensor, e: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        s = s.to(b.dtype)
        return s * b + (2.0 - s) * e


@contextlib.contextmanager
def before() -> Iterator[None]:
    """The step as it was before the two changes."""
    saved = [(m, m.spatial_mean) for m in (cifar_resnet, dgl, greedy)]
    saved_pool, saved_mix = pool.GlobalAvgPool.forward, momentum.ScaledMix
    for m, _ in saved:
        m.spatial_mean = _plain_mean
    pool.GlobalAvgPool.forward = lambda self, x: F.adaptive_avg_pool2d(x, 1)
    momentum.ScaledMix = _PlainMix
    try:
        yield
    finally:
        for m, fn in saved:
            m.spatial_mean = fn
        pool.GlobalAvgPool.forward, momentum.ScaledMix = saved_pool, saved_mix


def _steps(model: str, method: str, k: int) -> List[Callable[[], None]]:
    """E2E before, E2E after, the method before, the method after: one full step each."""
    spec = BenchSpec(model=model, batch_size=128, channels_last=True)
    x = torch.randn(128, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (128,), generator=torch.Generator().manual_seed(1))
    fns = []
    for m, kk in (("e2e", 1), (method, k)):
        for label in ("before", "after"):
            net = _build(spec, m, kk, torch.device("cpu"))
            step = _full_step(net, BlockOptimizers(net, TrainConfig()), x, y)

            def timed(step: Callable[[], None] = step, old: bool = label == "before") -> None:
                with before() if old else contextlib.nullcontext():
                    step()

            fns.append(timed)
    return fns


def write_section(out: Dict[str, object]) -> None:
    """The markdown section of a measurement (``lean_ab_cpu.json``)."""
    lines = ["## Two lean-step changes, before and after (CPU; issue 4)", "",
             f"Environment: {json.dumps(out['env'])}; date {out['date']}.  ",
             f"Command: `{out['command']}`", "",
             "Before: global pools that hand channels_last maps an NCHW gradient and the "
             "MAN++ mix as plain tensor arithmetic; after: `nets.pool.spatial_mean` and "
             "`momentum.ScaledMix` (same values). Median s/step, the four steps of a row timed "
             "in turns in one process; E2E changes only by its final pool, so its own "
             "before/after spread shows the timing noise of the machine.",
             "", "| config | E2E before -> after (s) | method before -> after (s, change) | "
             "step x E2E before -> after |", "|---|---|---|---|"]
    for r in out["rows"]:  # type: ignore[union-attr]
        lines.append(f"| {r['model']} K={r['blocks']} `{r['method']}` | {r['e2e_before_s']:.3f} -> "
                     f"{r['e2e_after_s']:.3f} | {r['before_s']:.3f} -> {r['after_s']:.3f} "
                     f"({100 * (r['after_s'] / r['before_s'] - 1):+.0f}%) | "
                     f"{r['before_s'] / r['e2e_before_s']:.2f} -> {r['after_s'] / r['e2e_after_s']:.2f} |")
    (RESULTS / "section_lean_ab.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--table-only", action="store_true", help="rewrite the section from the JSON")
    args = ap.parse_args()
    if args.table_only:
        write_section(json.loads((RESULTS / "lean_ab_cpu.json").read_text()))
        return
    rows: List[Dict[str, object]] = []
    for model, method, k in CONFIGS:
        t = [median(ts) for ts in time_interleaved(_steps(model, method, k), torch.device("cpu"), 2, args.repeats)]
        row = {"model": model, "method": method, "blocks": k, "e2e_before_s": t[0],
               "e2e_after_s": t[1], "before_s": t[2], "after_s": t[3]}
        rows.append(row)
        print(json.dumps(row), flush=True)
    out = {"env": environment(), "date": str(datetime.date.today()),
           "command": f".venv/bin/python benchmarks/bench_lean_ab.py --repeats {args.repeats}",
           "rows": rows}
    (RESULTS / "lean_ab_cpu.json").write_text(json.dumps(out, indent=1))
    write_section(out)


if __name__ == "__main__":
    main()
