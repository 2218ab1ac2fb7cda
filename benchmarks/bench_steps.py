"""Memory, FLOPs and step time of ResNet-32/110 for the papers' methods and K (CPU, batch 128).

Writes one JSON per model into benchmarks/results/ (skipped when present, so a killed
run resumes); then run benchmarks/write_benchmarks.py to render BENCHMARKS.md.
    .venv/bin/python benchmarks/bench_steps.py [--device cpu] [--repeats 5]
"""
from __future__ import annotations

import argparse
import datetime
import json
import subprocess
from pathlib import Path

from locallearn.measure.bench import BenchSpec, environment, format_table, run_bench

RESULTS = Path(__file__).parent / "results"
METHODS = ["dgl", "dgl+manpp", "infopro", "infopro+manpp"]
GRID = {"resnet32": [8, 16], "resnet110": [32, 55]}


def git_rev() -> str:
    """This checkout's commit, "-dirty" when its code has uncommitted changes."""
    root = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True,
                                      cwd=root).strip()
        # results being rewritten do not make the measuring code dirty
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", ".", ":!benchmarks/results",
                                ":!BENCHMARKS.md"], cwd=root).returncode != 0
        return rev + ("-dirty" if dirty else "")  # measured with uncommitted changes
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--recompute", action="store_true")
    ap.add_argument("--results", type=Path, default=RESULTS,
                    help="where the JSON goes (default benchmarks/results)")
    args = ap.parse_args()
    args.results.mkdir(parents=True, exist_ok=True)
    for model, ks in GRID.items():
        tag = f"steps_{model}_{args.device}{'_recompute' if args.recompute else ''}"
        path = args.results / f"{tag}.json"
        if path.exists():
            print(f"{path} exists, skipped")
            continue
        spec = BenchSpec(model=model, methods=METHODS, blocks=ks, batch_size=args.batch_size,
                         device=args.device, repeats=args.repeats, recompute=args.recompute)
        rows = run_bench("speed", spec)
        print(model)
        print(format_table(rows), flush=True)
        # a GPU machine's python3 usually holds torch already (no .venv there)
        python = ".venv/bin/python" if args.device == "cpu" else "PYTHONPATH=src python3"
        cmd = (f"{python} benchmarks/bench_steps.py --device {args.device} "
               f"--batch-size {args.batch_size} --repeats {args.repeats}"
               + (" --recompute" if args.recompute else ""))
        path.write_text(json.dumps({"env": environment(), "git": git_rev(), "command": cmd,
                                    "date": datetime.date.today().isoformat(), "rows": rows},
                                   indent=2) + "\n")


if __name__ == "__main__":
    main()
