"""Step memory of ImageNet-size backbones through the adapters (issue 5), beside MAN++ Table III.

    .venv/bin/python benchmarks/bench_any_model.py [--batch-size 16] [--device cpu]

One JSON per model in benchmarks/results/ (skipped when present), then the section
benchmarks/results/section_any_model.md for BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path

from locallearn.measure.bench import BenchSpec, environment, format_table, run_bench

RESULTS = Path(__file__).resolve().parent / "results"
MB = 2.0 ** 20
# model, method, K values, paper's (E2E GB, MAN++ GB) from MAN++ Table III (8 GPUs, ImageNet)
GRID = [("tv:resnet101", "infopro+manpp", [2, 4], (19.71, 10.94)),
        ("tv:resnet152", "infopro+manpp", [2, 4], (26.29, 14.04)),
        ("timm:vit_tiny_patch16_224", "manpp", [4, 6], (6.69, 3.41))]
PAPER_K = {"tv:resnet101": 4, "tv:resnet152": 4, "timm:vit_tiny_patch16_224": 6}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    files = []
    for model, method, ks, paper in GRID:
        path = RESULTS / f"any_{model.replace(':', '_')}_{a.device}.json"
        if not path.exists():
            spec = BenchSpec(model=model, methods=[method], blocks=ks, batch_size=a.batch_size,
                             device=a.device, image_size=224, in_chans=3, num_classes=1000,
                             channels_last=True)
            rows = run_bench("memory", spec)
            print(model)
            print(format_table(rows), flush=True)
            path.write_text(json.dumps({
                "env": environment(), "date": datetime.date.today().isoformat(), "rows": rows,
                "command": f".venv/bin/python benchmarks/bench_any_model.py --batch-size "
                           f"{a.batch_size} --device {a.device}"}, indent=2) + "\n")
        d = json.loads(path.read_text())
        mem_path = RESULTS / f"any_{model.replace(':', '_')}_{a.device}_memsplit.json"
        if model.startswith("tv:"):  # the same K cut where measured activations balance
            if not mem_path.exists():
                spec = BenchSpec(model=model, methods=[method], blocks=[PAPER_K[model]],
                                 batch_size=a.batch_size, device=a.device, image_size=224,
                                 in_chans=3, num_classes=1000, channels_last=True, split="memory")
                rows = run_bench("memory", spec)
                print(format_table(rows), flush=True)
                mem_path.write_text(json.dumps({"rows": rows}, indent=2) + "\n")
            for r in json.loads(mem_path.read_text())["rows"][1:]:
                r["method"] += " (--split memory)"
                d["rows"].append(r)
        files.append((d, paper))
    d0 = files[0][0]
    lines = ["## Any model: ImageNet-size backbones (issue 5)", "",
             f"`locallearn bench memory` through the torchvision / timm adapters, 3x224x224 "
             f"inputs, 1000 classes, batch {d0['rows'][0]['batch_size']}, {d0['rows'][0]['device']}; "
             "InfoPro heads with the ImageNet recipe (5*BCE + 0.75*CE, decoder convolving before "
             "upsampling, classifier conv capped at 256 channels) for the ResNets, LayerNorm + "
             "class-token heads and a learnable copy of the next two blocks for the ViT; blocks "
             "cut into equal numbers of units, or (`--split memory`) where the activations measured "
             "by a dry run balance. Totals include parameters, gradients and SGD "
             "momentum, which weigh more at this small batch than at the papers'. The papers' figures are "
             "`torch.cuda.max_memory_allocated` on GPUs at their ImageNet batch (MAN++ Table "
             "III); compare the ratios, not the bytes.  ",
             f"Environment: {json.dumps(d0['env'])}; date {d0['date']}.  ",
             f"Command: `{d0['command']}`", "",
             "| model | method | K | activations MB (x E2E) | total MB (x E2E) | GFLOP/step (x) | paper: E2E -> MAN++ GB (x) |",
             "|---|---|---|---|---|---|---|"]
    for d, (e2e_gb, ours_gb) in files:
        for r in d["rows"]:
            paper = (f"{e2e_gb} -> {ours_gb} ({ours_gb / e2e_gb:.2f}) at K={PAPER_K[r['model']]}"
                     if r["blocks"] == PAPER_K[r["model"]] and "split" not in r["method"] else "")
            lines.append(f"| {r['model']} | {r['method']} | {r['blocks']} | "
                         f"{r['activation_bytes'] / MB:.0f} ({r['activation_bytes_ratio']:.2f}) | "
                         f"{r['peak_bytes'] / MB:.0f} ({r['peak_bytes_ratio']:.2f}) | "
                         f"{r['flops_per_step'] / 1e9:.0f} ({r['flops_per_step_ratio']:.2f}) | {paper} |")
    (RESULTS / "section_any_model.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
