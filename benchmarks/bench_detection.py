"""Detection benchmarks (issue 16): mAP of E2E vs local methods on the scene set, and the
memory of RetinaNet K=4 at a COCO-like input beside the MAN++ paper's Table IV.

    python benchmarks/bench_detection.py memory            # RetinaNet-R34/R101/R152, 2 x 600x1000
    python benchmarks/bench_detection.py train --workers 2 # the mAP runs (resumable, claimable)
    python benchmarks/bench_detection.py steps             # step memory / time ratios to E2E
    python benchmarks/bench_detection.py heads             # each block's own detector's mAP
    python benchmarks/bench_detection.py table             # rewrite results/section_detection.md
    bash benchmarks/gpu_bench.sh OUT detection  # the train runs on one CUDA GPU in one sitting
    bash benchmarks/gpu_bench.sh OUT detection,fidelity  # ... beside issue 15's plateau runs

Every part is resumable: ``memory`` skips models already in its json, ``train`` skips
finished runs (kept in results/detection/, committed) and resumes killed ones from their
checkpoints in runs/detection/ (not committed). Workers claim runs through claim files,
so several may share the list.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from locallearn.measure.bench import BenchSpec, environment, run_bench  # noqa: E402
from kept_runs import in_workers, keep_heads, train_kept  # noqa: E402

MEMORY_JSON = RESULTS / "detection_memory_cpu.json"
STEPS_JSON = RESULTS / "detection" / "steps.json"
#: the MAN++ paper's Table IV (COCO, from scratch): GPU GB per GPU, E2E -> MAN++ (K=4)
TABLE_IV = {"retinanet_resnet18": (11.5, 3.36), "retinanet_resnet34": (13.7, 3.59),
            "retinanet_resnet50": (18.1, 6.34), "retinanet_resnet101": (26.2, 6.81),
            "retinanet_resnet152": (29.3, 7.74)}
MEMORY_MODELS = ("retinanet_resnet34", "retinanet_resnet101", "retinanet_resnet152")

#: the mAP budget: fmnist-scenes-det at 128 px, K=4 at the ResNet stages
BUDGET: Dict[str, Any] = dict(dataset="fmnist-scenes-det", image_size=128, limit_train=2000,
                              limit_test=500, epochs=8, batch_size=16, eval_batch_size=32,
                              optimizer="adamw", lr=2e-4, weight_decay=1e-4,
                              clip_grad_norm=1.0, warmup_epochs=0.5)
FAMILIES = {"retinanet": "retinanet_resnet18_w64", "yolo": "yolo_resnet18_w128"}
METHODS = ("e2e", "greedy+manpp", "slm", "slm+manpp")
SEEDS = (0, 1, 2)


def measure_memory() -> None:
    """One training step of E2E and greedy+manpp K=4 (stages = the reference's split; and
    the memory-balanced split) per model, 2 images of 600x1000, 80 classes."""
    rows = json.loads(MEMORY_JSON.read_text())["rows"] if MEMORY_JSON.is_file() else []
    done = {r["model"] for r in rows}
    for model in MEMORY_MODELS:
        if model in done:
            continue
        t0 = time.time()
        for split in ("stages", "memory"):
            spec = BenchSpec(model=model, methods=["greedy+manpp"], blocks=[4], batch_size=2,
                             image_size=(600, 1000), in_chans=3, num_classes=80, split=split,
                             channels_last=False)
            for r in run_bench("memory", spec):
                if r["method"] == "e2e" and split != "stages":
                    continue
                rows.append({**r, "model": model, "split": split if r["blocks"] > 1 else "-"})
        print(f"{model}: {time.time() - t0:.0f}s", flush=True)
        MEMORY_JSON.write_text(json.dumps({"environment": environment(), "date":
                                           time.strftime("%Y-%m-%d"), "rows": rows}, indent=1))


def block_breakdown(model: str = "retinanet_resnet34") -> None:
    """Saved activations alive when each block's loss is formed (that block's graph, the
    largest moment of its step), greedy+manpp K=4 stages, 2 x 600x1000 -> the memory json."""
    from locallearn import LocalNet, create_model
    from locallearn.measure.memory import ActivationMeter

    torch.manual_seed(0)
    net = LocalNet(create_model(model, num_classes=80, in_chans=3), 4, "greedy+manpp",
                   image_size=(600, 1000), split_by="stages")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 600, 1000, generator=g)
    y = net.task.example_target(2, (600, 1000), 80, g)
    meter = ActivationMeter(exclude=[*net.parameters(), *net.buffers()])
    saved = []
    with meter.hooks():
        for j, loss in net.block_losses(x, y):
            start, end = net.ranges[j]
            names = [net.model.unit_info[i].name for i in (start, end - 1)]
            saved.append({"block": j, "units": names, "saved_bytes": meter.current})
            loss.backward()
            net.zero_grad(set_to_none=True)
    data = json.loads(MEMORY_JSON.read_text())
    data["blocks"] = {"model": model, "rows": saved}
    MEMORY_JSON.write_text(json.dumps(data, indent=1))


def step_ratios(device: str) -> None:
    """Step memory and time of every local row as ratios to E2E in one process, at the
    mAP budget's batch and image size, per family -> detection/steps.json."""
    out: Dict[str, dict] = {}
    for family, model in FAMILIES.items():
        spec = BenchSpec(model=model, methods=[m for m in METHODS if m != "e2e"], blocks=[4],
                         batch_size=BUDGET["batch_size"], device=device,
                         image_size=BUDGET["image_size"], in_chans=1, num_classes=10,
                         split="stages", channels_last=False, warmup=1, repeats=3)
        for r in run_bench("speed", spec):
            out[f"{family}/{r['method']}"] = {f: r.get(f, 1.0) for f in (
                "peak_bytes_ratio", "step_time_s_ratio", "peak_bytes", "step_time_s")}
            print(family, r["method"], out[f"{family}/{r['method']}"], flush=True)
    STEPS_JSON.parent.mkdir(parents=True, exist_ok=True)
    STEPS_JSON.write_text(json.dumps(dict(rows=out, env=environment(), date=time.strftime(
        "%Y-%m-%d"), command="benchmarks/bench_detection.py steps"), indent=1) + "\n")


def run_dirs(family: str, method: str, seed: int) -> tuple:
    name = f"{family}_{method.replace('+', '_')}_s{seed}"
    return ROOT / "runs" / "detection" / name, RESULTS / "detection" / name


def train_all(device: str) -> None:
    """Every (family, method, seed) not finished yet, seed-major so that a partial table
    has whole seeds."""
    from locallearn.config import TrainConfig

    for seed in SEEDS:
        for family, model in FAMILIES.items():
            for method in METHODS:
                out, kept = run_dirs(family, method, seed)
                if (kept / "summary.json").is_file():
                    continue
                cfg = TrainConfig(model=model, method=method, blocks=1 if method == "e2e" else 4,
                                  split="equal" if method == "e2e" else "stages",
                                  seed=seed, device=device, out=str(out), **BUDGET)
                if train_kept(cfg, kept, f"{family} {method} seed {seed}") and method != "e2e":
                    keep_heads(out, kept, device)


def heads_all(device: str) -> None:
    """heads.json (each block's own detector's mAP) for every finished local run whose
    checkpoint is still in runs/detection/."""
    for seed in SEEDS:
        for family in FAMILIES:
            for method in METHODS[1:]:
                out, kept = run_dirs(family, method, seed)
                if not (kept / "heads.json").is_file() and keep_heads(out, kept, device):
                    print(f"== heads: {family} {method} seed {seed}", flush=True)


def main(argv: List[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("part", choices=("memory", "train", "steps", "heads", "table"))
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--device", default="cpu")
    a = p.parse_args(argv)
    if a.part == "memory":
        measure_memory()
        block_breakdown()
    elif a.part == "steps":
        step_ratios(a.device)
    elif a.part == "heads":
        heads_all(a.device)
    elif a.part == "train":
        in_workers(a.workers, lambda: train_all(a.device))
    from detection_table import write_section

    write_section()


if __name__ == "__main__":
    main()
