"""Peak live memory of the step grid, without and with ``--recompute`` (issue 4).

Memory only (no timing, so it may run while the machine is busy): for each model of
bench_steps.py's grid, every method and K, the step meter and the peak of all live
tensors (``locallearn.measure.LivePeak``, the CPU analogue of max_memory_allocated,
which also sees the bridge copies that ``--recompute`` re-runs in backward).
Writes benchmarks/results/live_<model>_<device>[_recompute].json (skipped when present).
    .venv/bin/python benchmarks/bench_live.py [--device cpu]
"""
from __future__ import annotations

import argparse
import datetime
import json

from bench_steps import GRID, METHODS, RESULTS, git_rev
from locallearn.measure.bench import BenchSpec, environment, format_table, run_bench


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=128)
    args = ap.parse_args()
    for model, ks in GRID.items():
        for recompute in (False, True):
            path = RESULTS / f"live_{model}_{args.device}{'_recompute' if recompute else ''}.json"
            if path.exists():
                print(f"{path} exists, skipped")
                continue
            spec = BenchSpec(model=model, methods=METHODS, blocks=ks, batch_size=args.batch_size,
                             device=args.device, recompute=recompute)
            rows = run_bench("memory", spec)
            print(model, "recompute" if recompute else "")
            print(format_table(rows), flush=True)
            cmd = f".venv/bin/python benchmarks/bench_live.py --device {args.device} " \
                  f"--batch-size {args.batch_size}"
            path.write_text(json.dumps({"env": environment(), "git": git_rev(), "command": cmd,
                                        "date": datetime.date.today().isoformat(),
                                        "recompute": recompute, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
