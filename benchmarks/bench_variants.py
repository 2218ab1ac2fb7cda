"""Step time and memory of the options that trade math or time for speed or memory
(issue 4): the lighter InfoPro decoder (``decoder=conv_first``) and ``--recompute``,
each against E2E in the same process (CPU, batch 128). Needs an otherwise idle machine.
Writes benchmarks/results/variants_<device>.json (rows kept across runs, keyed by
variant; delete the file to re-measure) and section_variants.md.
    .venv/bin/python benchmarks/bench_variants.py [--device cpu] [--repeats 5]
"""
from __future__ import annotations

import argparse
import datetime
import json
from typing import Any, Dict, List

from bench_steps import RESULTS, git_rev
from write_benchmarks import MB, live_act
from locallearn.measure.bench import BenchSpec, environment, run_bench

VARIANTS: List[Dict[str, Any]] = [
    dict(model="resnet32", method="infopro+manpp", k=16),
    dict(model="resnet32", method="infopro+manpp", k=16, head_opts={"decoder": "conv_first"}),
    dict(model="resnet32", method="infopro+manpp", k=16, recompute=True),
    dict(model="resnet110", method="infopro+manpp", k=55),
    dict(model="resnet110", method="infopro+manpp", k=55, head_opts={"decoder": "conv_first"}),
    dict(model="resnet110", method="infopro+manpp", k=55, recompute=True),
    dict(model="resnet110", method="dgl+manpp", k=55, recompute=True),
]


def label(v: Dict[str, Any]) -> str:
    opts = " ".join(f"{k}={x}" for k, x in v.get("head_opts", {}).items())
    return (f"{v['model']} K={v['k']} {v['method']}" + (f" {opts}" if opts else "")
            + (" --recompute" if v.get("recompute") else ""))


def write_section(data: Dict[str, Any]) -> None:
    lines = ["## Options that trade math or time for speed or memory (issue 4)", "",
             f"Machine: {json.dumps(data['env'])}; locallearn git {data['git']}; "
             f"date {data['date']}.  ", f"Command: `{data['command']}`", "",
             "Ratios to E2E measured in the same process; memory by the step meter and by the "
             "live peak (all live tensors, which also sees `--recompute`'s re-run copies). "
             "`decoder=conv_first` changes the math (the decoder convolves at the feature "
             "resolution, then upsamples); its accuracy is in the reproduce table.", "",
             "| config | s/step (x E2E) | GFLOP (x) | FLOP efficiency | act. meter (x) | total meter (x) | act. live (x) | total live (x) |",
             "|---|---|---|---|---|---|---|---|"]
    for name, rows in data["rows"].items():
        e2e, r = rows[0], rows[-1]
        lines.append(
            f"| {name} | {r['step_time_s']:.3f} ({r['step_time_s_ratio']:.2f}) | "
            f"{r['flops_per_step'] / 1e9:.1f} ({r['flops_per_step_ratio']:.2f}) | "
            f"{r['flop_efficiency']:.2f} | {r['activation_bytes'] / MB:.1f} "
            f"({r['activation_bytes_ratio']:.2f}) | {r['peak_bytes'] / MB:.1f} "
            f"({r['peak_bytes_ratio']:.2f}) | {live_act(r) / MB:.1f} "
            f"({live_act(r) / live_act(e2e):.2f}) | {r['live_peak_bytes'] / MB:.1f} "
            f"({r['live_peak_bytes_ratio']:.2f}) |")
    (RESULTS / "section_variants.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    path = RESULTS / f"variants_{args.device}.json"
    data = json.loads(path.read_text()) if path.exists() else {"rows": {}}
    for v in VARIANTS:
        name = label(v)
        if name in data["rows"]:
            continue
        spec = BenchSpec(model=v["model"], methods=[v["method"]], blocks=[v["k"]],
                         device=args.device, repeats=args.repeats,
                         head_opts=v.get("head_opts", {}), recompute=v.get("recompute", False))
        data["rows"][name] = run_bench("speed", spec)
        r = data["rows"][name][-1]
        print(f"{name}: {r['step_time_s_ratio']:.2f}x time, eff {r['flop_efficiency']:.2f}", flush=True)
        data.update(env=environment(), git=git_rev(), date=datetime.date.today().isoformat(),
                    command=f".venv/bin/python benchmarks/bench_variants.py --device {args.device} "
                            f"--repeats {args.repeats}")
        path.write_text(json.dumps(data, indent=2) + "\n")
        write_section(data)


if __name__ == "__main__":
    main()
