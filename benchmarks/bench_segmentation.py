"""Semantic segmentation on fmnist-scenes (issue 14): E2E vs local methods, resumable.

    .venv/bin/python benchmarks/bench_segmentation.py                # train missing runs, then tables
    .venv/bin/python benchmarks/bench_segmentation.py --workers 2    # two single-thread trainers
    .venv/bin/python benchmarks/bench_segmentation.py --table-only   # rewrite the section only
    .venv/bin/python benchmarks/bench_segmentation.py --steps        # step memory / time ratios
    .venv/bin/python benchmarks/bench_segmentation.py --memory       # DeepLabV3/V3+ vs Table VI

Every row trains with the same budget (BUDGET) through ``locallearn.fit``; each run lives
in runs/segmentation/<row>_s<seed>/ (a killed one resumes) and, when finished, its config,
metrics and summary are copied to benchmarks/results/segmentation/ (committed; a run
found there is skipped). The section benchmarks/results/section_segmentation.md is
rewritten from the kept runs after every run, so partial results are always current.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import datetime
from pathlib import Path
from typing import Dict, List, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))

from locallearn import TrainConfig, fit  # noqa: E402
from locallearn.checkpoint import atomic_write_text  # noqa: E402
from locallearn.measure.bench import BenchSpec, environment, run_bench  # noqa: E402

from bench_steps import git_rev  # noqa: E402
from run_claims import claim, release  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
KEPT = RESULTS / "segmentation"
RUNS = ROOT / "runs" / "segmentation"
ROWS: List[Tuple[str, int]] = [("e2e", 1), ("infopro", 2), ("infopro+manpp", 2), ("slm", 2),
                               ("slm", 4), ("slm+manpp", 4)]
# a CPU budget (~75 s an epoch of E2E on one thread). With batch 32 and 1000 scenes
# (125 steps) every method stayed at "all background"; 375 steps of 16 learn the items
BUDGET = dict(model="deeplabv3_resnet20", dataset="fmnist-scenes", image_size=64, epochs=3,
              limit_train=2000, limit_test=500, batch_size=16, lr=0.2, seeds=[0, 1, 2])
# Cityscapes-like crop for the memory table (MAN++ Table VI: K=2 InfoPro+MAN++ vs E2E)
MEMORY_MODELS = ["deeplabv3_resnet50", "deeplabv3_resnet101", "deeplabv3plus_resnet50",
                 "deeplabv3plus_resnet101"]
MEMORY_SPEC = dict(image_size=512, batch_size=2, num_classes=19, in_chans=3)
PAPER_TABLE_VI = "-12% to -18% (MAN++ Table VI, Cityscapes, K=2 InfoPro+MAN++ vs E2E)"


def name(method: str, k: int, seed: Optional[int] = None) -> str:
    return f"{method.replace('+', '_')}_K{k}" + ("" if seed is None else f"_s{seed}")


def finished(method: str, k: int, seed: int) -> bool:
    """Kept and trained with this BUDGET (a run of an older budget counts as missing)."""
    path = KEPT / name(method, k, seed)
    if not (path / "summary.json").is_file():
        return False
    cfg = json.loads((path / "config.json").read_text())
    same = all(cfg.get(key) == BUDGET[key] for key in BUDGET if key != "seeds")
    return same and json.loads((path / "summary.json").read_text())["epochs"] >= BUDGET["epochs"]


def train_one(method: str, k: int, seed: int, device: str) -> bool:
    out, kept = RUNS / name(method, k, seed), KEPT / name(method, k, seed)
    if finished(method, k, seed) or not claim(out):
        return False
    try:
        cfg = TrainConfig(model=BUDGET["model"], dataset=BUDGET["dataset"], method=method,
                          blocks=k, epochs=BUDGET["epochs"], batch_size=BUDGET["batch_size"],
                          lr=BUDGET["lr"], image_size=BUDGET["image_size"],
                          limit_train=BUDGET["limit_train"], limit_test=BUDGET["limit_test"],
                          seed=seed, device=device, eval_batch_size=100, out=str(out))
        print(f"== {method} K={k} seed {seed} -> {out}", flush=True)
        started = (out / "config.json").is_file()
        fit(cfg, resume=started, force=not started, progress=True)
        kept.mkdir(parents=True, exist_ok=True)
        for f in ("config.json", "metrics.csv", "summary.json"):
            shutil.copyfile(out / f, kept / f)
    finally:
        release(out)
    return True


def step_ratios(device: str) -> None:
    """Memory of a step (the step meter's total) and step time, each as a ratio to E2E
    measured in the same process, for every row -> segmentation/steps.json."""
    out: Dict[str, dict] = {}
    for method, k in ROWS[1:]:
        spec = BenchSpec(model=BUDGET["model"], methods=[method], blocks=[k],
                         batch_size=BUDGET["batch_size"], device=device,
                         image_size=BUDGET["image_size"], in_chans=1, num_classes=11,
                         channels_last=False, warmup=1, repeats=5)
        rows = run_bench("speed", spec)
        out[name(method, k)] = {f: rows[1][f] for f in ("peak_bytes_ratio", "step_time_s_ratio",
                                                          "peak_bytes", "step_time_s")}
        out[name("e2e", 1)] = {"peak_bytes_ratio": 1.0, "step_time_s_ratio": 1.0,
                               "peak_bytes": rows[0]["peak_bytes"],
                               "step_time_s": rows[0]["step_time_s"]}
        print(method, k, out[name(method, k)], flush=True)
    KEPT.mkdir(parents=True, exist_ok=True)
    atomic_write_text(KEPT / "steps.json", json.dumps(dict(
        rows=out, env=environment(), date=str(datetime.date.today()), git=git_rev(),
        command="benchmarks/bench_segmentation.py --steps"), indent=1) + "\n")


def memory_table(device: str) -> None:
    """DeepLabV3/V3+ R50/R101, E2E vs infopro+manpp K=2 -> segmentation/memory.json.

    One metered step per row (``measure_step_memory``: parameters + buffers, the largest
    block's gradients, SGD momentum, the peak of saved activations), not ``run_bench``'s
    four (FLOPs, live peak): at 512x512 a step of DeepLabV3-R101 takes minutes on a CPU."""
    import torch

    from locallearn import LocalNet, create_model
    from locallearn.devices import resolve_device
    from locallearn.measure.memory import measure_step_memory

    dev = resolve_device(device)
    out: Dict[str, list] = {}
    size, b = MEMORY_SPEC["image_size"], MEMORY_SPEC["batch_size"]
    for model_name in MEMORY_MODELS:
        rows = []
        for method, k in (("e2e", 1), ("infopro+manpp", 2)):
            torch.manual_seed(0)
            model = create_model(model_name, num_classes=MEMORY_SPEC["num_classes"],
                                 in_chans=MEMORY_SPEC["in_chans"])
            net = LocalNet(model, k, method, image_size=(size, size)).to(dev)
            g = torch.Generator().manual_seed(0)
            x = torch.randn(b, MEMORY_SPEC["in_chans"], size, size, generator=g).to(dev)
            y = net.task.example_target(b, (size, size), MEMORY_SPEC["num_classes"], g).to(dev)

            def drop(j: int) -> None:  # step-and-drop: one block's gradients at a time
                for p in net.block_parameters(j):
                    p.grad = None

            mem = measure_step_memory(net, x, y, after_block=drop).to_dict()
            rows.append({"method": method, "blocks": k, **mem})
            print(model_name, method, {k2: round(v / 2**20) for k2, v in mem.items()}, flush=True)
        for r in rows:
            for f in ("peak_bytes", "activation_bytes"):
                r[f + "_ratio"] = r[f] / rows[0][f]
        out[model_name] = rows
        KEPT.mkdir(parents=True, exist_ok=True)
        atomic_write_text(KEPT / "memory.json", json.dumps(dict(
            models=out, spec=MEMORY_SPEC, env=environment(), date=str(datetime.date.today()),
            git=git_rev(), command="benchmarks/bench_segmentation.py --memory"), indent=1) + "\n")


def _stat(values: List[float]) -> str:
    if not values:
        return "-"
    mean = 100 * statistics.fmean(values)
    sd = 100 * statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{mean:.2f} +- {sd:.2f}" if len(values) > 1 else f"{mean:.2f}"


def write_section() -> None:
    b = BUDGET
    env = environment()
    lines = ["## Semantic segmentation on fmnist-scenes (issue 14)", "",
             f"`{b['model']}` on `{b['dataset']}` {b['image_size']}x{b['image_size']} "
             f"(11 classes: background + 10), {b['epochs']} epochs on {b['limit_train']} "
             f"training scenes, batch {b['batch_size']}, SGD Nesterov lr {b['lr']} cosine, "
             f"wd 1e-4, flip + resized crop; test on {b['limit_test']} test scenes (scenes "
             f"of test items only); seeds {b['seeds']} (the scenes are the same for every "
             "seed). The same budget for every row; each run trains in one process on one CPU thread, two side by side. mIoU / mean accuracy / pixel accuracy "
             "as in MAN++ Table V, over the whole test set. Step memory (the step meter's "
             "total: parameters, gradients, optimizer state, saved activations) and step "
             "time are ratios to E2E measured in one process (`--steps`).  ",
             f"Environment: {json.dumps(env)}; date {datetime.date.today()}; git {git_rev()}.  ",
             "Command: `.venv/bin/python benchmarks/bench_segmentation.py --workers 2` then "
             "`--steps`", "",
             "| method | K | seeds done | mIoU % | mIoU per seed | mean acc % | pixel acc % "
             "| step memory x E2E | step time x E2E |", "|---|---|---|---|---|---|---|---|---|"]
    steps_path = KEPT / "steps.json"
    steps = json.loads(steps_path.read_text())["rows"] if steps_path.is_file() else {}
    per_seed: Dict[str, Dict[int, float]] = {}
    for method, k in ROWS:
        cols: Dict[str, List[float]] = {"miou": [], "mean_acc": [], "pixel_acc": []}
        for seed in b["seeds"]:
            p = KEPT / name(method, k, seed) / "summary.json"
            if p.is_file() and finished(method, k, seed):
                s = json.loads(p.read_text())
                for c in cols:
                    cols[c].append(s[f"final_test_{c}"])
                per_seed.setdefault(f"{method} K={k}", {})[seed] = s["final_test_miou"]
        st = steps.get(name(method, k), {})
        mem = f"{st['peak_bytes_ratio']:.2f}" if st else "-"
        tim = f"{st['step_time_s_ratio']:.2f}" if st else "-"
        seeds = ", ".join(f"{100 * v:.2f}" for v in per_seed.get(f"{method} K={k}", {}).values())
        lines.append(f"| {method} | {k} | {len(cols['miou'])} | {_stat(cols['miou'])} | {seeds} | "
                     f"{_stat(cols['mean_acc'])} | {_stat(cols['pixel_acc'])} | {mem} | {tim} |")
    lines += ["", "mIoU differences paired by seed (points): " + "; ".join(
        f"{a} - {b_}: " + ", ".join(f"{100 * (per_seed[a][sd] - per_seed[b_][sd]):+.2f}"
                                     for sd in sorted(per_seed[a]) if sd in per_seed[b_])
        for a, b_ in (("infopro+manpp K=2", "infopro K=2"), ("infopro+manpp K=2", "e2e K=1"),
                      ("slm K=2", "e2e K=1"), ("slm K=4", "e2e K=1"),
                      ("slm+manpp K=4", "slm K=4"))
        if a in per_seed and b_ in per_seed) + ". This budget (375 steps on one CPU thread) "
        "leaves every model far from converged and the spread between seeds (the same "
        "scenes, another initialisation and order) is as large as the spread between rows: "
        "read a difference as real only where every seed agrees. It is not a test of the "
        "papers' converged Cityscapes numbers; a GPU run of this script with a longer "
        "budget is."]
    mem_path = KEPT / "memory.json"
    if mem_path.is_file():
        m = json.loads(mem_path.read_text())
        spec = m["spec"]
        lines += ["", "### Memory of a step, DeepLabV3 / V3+ at a Cityscapes-like crop", "",
                  f"{spec['batch_size']} x {spec['in_chans']}x{spec['image_size']}x"
                  f"{spec['image_size']}, {spec['num_classes']} classes, `infopro+manpp` K=2 vs "
                  f"E2E; the step meter's total (parameters and buffers, the largest block's "
                  f"gradients, SGD momentum, the peak of saved activations) on "
                  f"{m['env'].get('gpu', 'CPU')}; date {m['date']}; git "
                  f"{m['git']}. Paper: {PAPER_TABLE_VI}.", "",
                  "| model | E2E MB | K=2 MB | change | activations x E2E |", "|---|---|---|---|---|"]
        for model, rows in m["models"].items():
            e2e, loc = rows[0], rows[1]
            lines.append(f"| {model} | {e2e['peak_bytes'] / 2**20:.0f} | "
                         f"{loc['peak_bytes'] / 2**20:.0f} | "
                         f"{100 * (loc['peak_bytes_ratio'] - 1):+.1f}% | "
                         f"{loc['activation_bytes_ratio']:.2f} |")
    atomic_write_text(RESULTS / "section_segmentation.md", "\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="auto")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--table-only", action="store_true")
    ap.add_argument("--steps", action="store_true", help="measure step memory/time ratios")
    ap.add_argument("--memory", action="store_true", help="DeepLabV3/V3+ memory vs Table VI")
    a = ap.parse_args()
    if a.steps:
        step_ratios(a.device)
    elif a.memory:
        memory_table(a.device)
    elif a.workers > 1 and not a.table_only:
        env = dict(os.environ, OMP_NUM_THREADS="1")
        procs = [subprocess.Popen([sys.executable, __file__, "--device", a.device], env=env)
                 for _ in range(a.workers)]
        for p in procs:
            p.wait()
    elif not a.table_only:
        for seed in BUDGET["seeds"]:
            for method, k in ROWS:
                if train_one(method, k, seed, a.device):
                    write_section()
    write_section()


if __name__ == "__main__":
    main()
