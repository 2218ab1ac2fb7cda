"""How much of the step-time ratios comes from the C allocator (issue 4, honest ratios).

With glibc's default settings a freed large block above the (adaptive) mmap threshold
goes back to the kernel, and the next step's first touch of it faults the pages in again,
zero-filled. E2E frees and re-allocates its whole activation set every step (a local
step trained alone kept its blocks in the heap; timed in turns with E2E in one process it
faults as often). This runs the same timing twice, each
in a fresh process: glibc's defaults, then large blocks kept in the heap
(``MALLOC_MMAP_THRESHOLD_`` = 32 MiB, glibc's maximum, and ``MALLOC_TRIM_THRESHOLD_`` =
64 GiB), and reports step times, their ratio to E2E and minor page faults per step.

    .venv/bin/python benchmarks/bench_malloc.py [--repeats 5]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

RESULTS = Path(__file__).resolve().parent / "results"
CONFIGS = [("resnet32", "infopro+manpp", 16), ("resnet32", "dgl+manpp", 16)]
TUNED = {"MALLOC_MMAP_THRESHOLD_": str(32 * 2 ** 20), "MALLOC_TRIM_THRESHOLD_": str(64 * 2 ** 30)}

CHILD = r"""
import json, resource, sys, torch
from locallearn.config import TrainConfig
from locallearn.measure.bench import BenchSpec, _build, _full_step
from locallearn.measure.timing import median, time_interleaved
from locallearn.optim import BlockOptimizers
configs, repeats = json.loads(sys.argv[1]), int(sys.argv[2])
g = torch.Generator().manual_seed(0)
x = torch.randn(128, 1, 28, 28, generator=g).contiguous(memory_format=torch.channels_last)
y = torch.randint(0, 10, (128,), generator=g)
steps = []
for model, method, k in configs:
    net = _build(BenchSpec(model=model), method, k, torch.device("cpu"))
    steps.append(_full_step(net, BlockOptimizers(net, TrainConfig()), x, y))
times = time_interleaved(steps, torch.device("cpu"), warmup=2, repeats=repeats)
faults = []
for step in steps:  # the steady state: after the timed steps
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(3):
        step()
    faults.append((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 3)
print(json.dumps({"times": [median(t) for t in times], "faults": faults}))
"""


def child(configs: List[tuple], repeats: int, tuned: bool) -> Dict:
    env = dict(os.environ)
    for key in TUNED:
        env.pop(key, None)
    if tuned:
        env.update(TUNED)
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(configs), str(repeats)],
                         capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    models = sorted({m for m, _, _ in CONFIGS})
    results = []
    for model in models:
        configs = [(model, "e2e", 1)] + [c for c in CONFIGS if c[0] == model]
        for tuned in (False, True):
            r = child(configs, a.repeats, tuned)
            results.append({"configs": configs, "tuned": tuned, **r})
            print(results[-1], flush=True)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
    from locallearn.measure.bench import environment

    command = f".venv/bin/python benchmarks/bench_malloc.py --repeats {a.repeats}"
    lines = ["## The allocator's share of the step-time ratios (CPU, issue 4)", "",
             "Each row: one fresh process timing E2E and the local step in turns (median of "
             f"{a.repeats} after 2 warm-up steps), batch 128, channels_last, 2 threads; minor "
             "page faults per step (`getrusage`) after the timed steps. \"glibc default\": "
             "no setting; \"large blocks kept\": "
             + ", ".join(f"`{k}={v}`" for k, v in TUNED.items()) + ".  ",
             f"Environment: {json.dumps(environment())}; date {datetime.date.today()}.  ",
             f"Command: `{command}`", "",
             "| model | method | K | allocator | E2E s/step | s/step | x E2E | page faults/step, E2E | page faults/step |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        for (model, method, k), t, f in list(zip(r["configs"], r["times"], r["faults"]))[1:]:
            lines.append(f"| {model} | {method} | {k} | "
                         f"{'large blocks kept' if r['tuned'] else 'glibc default'} | "
                         f"{r['times'][0]:.3f} | {t:.3f} | {t / r['times'][0]:.2f} | "
                         f"{r['faults'][0]:.0f} | {f:.0f} |")
    lines += ["", "The step-time targets above are judged with glibc's defaults; the "
              "\"large blocks kept\" rows show "
              "the same ratios without page faults, which cost E2E more than the local steps."]
    (RESULTS / "section_malloc.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "malloc_cpu.json").write_text(json.dumps(
        {"environment": environment(), "date": str(datetime.date.today()), "command": command,
         "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
