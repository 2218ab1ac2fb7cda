"""Super-resolution benchmarks (issue 18): PSNR / SSIM of E2E vs local EDSR on the photo set,
step memory / time ratios, and the memory of the paper's large EDSR at DIV2K patch sizes.

    python benchmarks/bench_sr.py steps               # edsr_tiny step ratios to E2E (one process)
    python benchmarks/bench_sr.py train --workers 2   # the PSNR runs (resumable, claimable)
    python benchmarks/bench_sr.py memory              # large EDSR x2/x3/x4, 16 x 48x48 patches
    python benchmarks/bench_sr.py heads               # per-block head PSNR of finished runs
    python benchmarks/bench_sr.py table               # rewrite results/section_super_resolution.md
    bash benchmarks/gpu_bench.sh OUT sr  # the train runs on one CUDA GPU in one sitting

``train`` runs x2 first (every row, every seed), then x3 and x4 for E2E and the local row
with the best mean x2 PSNR. Finished runs are kept in results/sr/ (committed) and skipped;
killed ones resume from their checkpoints in runs/sr/. Workers claim runs through claim
files, so several may share the list.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from locallearn.measure.bench import BenchSpec, environment, run_bench  # noqa: E402
from kept_runs import in_workers, keep_heads, train_kept  # noqa: E402

KEPT = RESULTS / "sr"
STEPS_JSON = KEPT / "steps.json"
MEMORY_JSON = KEPT / "memory_large.json"
MODEL = "edsr_tiny"  # 8 residual blocks, 32 features: a row trains in minutes on one thread
#: the PSNR budget: 1000 steps of 16 LR patches of 24x24, Adam (no decay) lr 1e-3, cosine
BUDGET: Dict[str, Any] = dict(image_size=24, epochs=10, batch_size=16, eval_batch_size=1,
                              optimizer="adamw", lr=1e-3, weight_decay=0.0)
PATCHES = 1600  # per epoch: 100 steps of 16
ROWS_X2: Tuple[Tuple[str, int], ...] = (("e2e", 1), ("greedy", 2), ("greedy", 4), ("slm", 2),
                                         ("slm", 4), ("slm+manpp", 4))
SEEDS = (0, 1, 2)
LARGE = "edsr"  # the paper's EDSR: 32 blocks, 256 features
LARGE_ROWS: Tuple[Tuple[str, int], ...] = (("e2e", 1), ("greedy", 4), ("slm", 4),
                                           ("slm+manpp", 4))


def dataset(scale: int) -> str:
    return f"sr-photos:scale={scale},patches={PATCHES}"


def run_dirs(scale: int, method: str, k: int, seed: int) -> Tuple[Path, Path]:
    name = f"x{scale}_{method.replace('+', '_')}_k{k}_s{seed}"
    return ROOT / "runs" / "sr" / name, KEPT / name


def kept_summary(scale: int, method: str, k: int, seed: int) -> Optional[dict]:
    path = run_dirs(scale, method, k, seed)[1] / "summary.json"
    return json.loads(path.read_text()) if path.is_file() else None


def best_local() -> Optional[Tuple[str, int]]:
    """The local x2 row with the best mean final PSNR, once every x2 run is finished."""
    means = {}
    for method, k in ROWS_X2:
        runs = [kept_summary(2, method, k, s) for s in SEEDS]
        if any(r is None for r in runs):
            return None
        if method != "e2e":
            means[(method, k)] = statistics.fmean(r["final_test_psnr"] for r in runs)
    return max(means, key=means.get)


def queue() -> List[Tuple[int, str, int, int]]:
    """(scale, method, K, seed) in training order: x2 seed-major, then x3 / x4."""
    todo = [(2, m, k, s) for s in SEEDS for m, k in ROWS_X2]
    best = best_local()
    if best is not None:
        todo += [(sc, m, k, s) for s in SEEDS for sc in (3, 4) for m, k in (("e2e", 1), best)]
    return todo


def train_one(scale: int, method: str, k: int, seed: int, device: str) -> bool:
    from locallearn.config import TrainConfig

    out, kept = run_dirs(scale, method, k, seed)
    cfg = TrainConfig(model=f"{MODEL}_x{scale}", dataset=dataset(scale), method=method,
                      blocks=k, seed=seed, device=device, out=str(out), **BUDGET)
    done = train_kept(cfg, kept, f"x{scale} {method} K={k} seed {seed}")
    if done:
        head_scores(scale, method, k, seed)
    return done


def head_scores(scale: int, method: str, k: int, seed: int) -> Optional[List[dict]]:
    """Each block's own predictor's test PSNR (the last: the network's), kept as heads.json
    beside the run's summary; computed from its checkpoint once (full-size test images: one
    at a time)."""
    return keep_heads(*run_dirs(scale, method, k, seed), batch_size=1, layout=lambda rows: [
        {"block": r["block"], "units": r["units"], "psnr": r["test_psnr"]} for r in rows])


def _claimed(job: Tuple[int, str, int, int]) -> bool:
    out = run_dirs(*job)[0]
    return (out.parent / f"{out.name}.claim").exists()


def train_all(device: str) -> None:
    """Every run not finished yet; x3 / x4 wait for the x2 table (their local row is its best)."""
    while True:
        for job in queue():
            train_one(*job, device)
        todo = [job for job in queue() if kept_summary(*job) is None]
        if best_local() is not None and all(_claimed(job) for job in todo):
            return  # all done, or the rest is being trained by other workers
        time.sleep(30)  # the last x2 runs train elsewhere: x3 / x4 follow them


def step_ratios(device: str) -> None:
    """Step memory and time of each x2 row as ratios to E2E, in one process, at the budget's
    batch and patch size -> sr/steps.json."""
    spec = BenchSpec(model=f"{MODEL}_x2", methods=["greedy", "slm", "slm+manpp"], blocks=[2, 4],
                     batch_size=BUDGET["batch_size"], device=device,
                     image_size=BUDGET["image_size"], in_chans=3, num_classes=3,
                     channels_last=False, warmup=1, repeats=5)
    out = {}
    for r in run_bench("speed", spec):
        key = f"{r['method']}/{r['blocks']}"
        out[key] = {f: r.get(f, 1.0) for f in ("peak_bytes_ratio", "step_time_s_ratio",
                                              "peak_bytes", "step_time_s")}
        print(key, out[key], flush=True)
    KEPT.mkdir(parents=True, exist_ok=True)
    STEPS_JSON.write_text(json.dumps(dict(rows=out, env=environment(), date=time.strftime(
        "%Y-%m-%d"), command="benchmarks/bench_sr.py steps"), indent=1) + "\n")


def large_memory(batch: int = 16, patch: int = 48) -> None:
    """One training step of the large EDSR per row and scale under the step meter (params,
    gradients of the largest block, one optimizer buffer per parameter, peak saved
    activations) -> sr/memory_large.json; resumable per (scale, row)."""
    from locallearn import LocalNet, create_model
    from locallearn.measure.memory import measure_step_memory

    data = json.loads(MEMORY_JSON.read_text()) if MEMORY_JSON.is_file() else {"rows": []}
    done = {(r["scale"], r["method"], r["blocks"]) for r in data["rows"]}
    for scale in (2, 3, 4):
        for method, k in LARGE_ROWS:
            if (scale, method, k) in done:
                continue
            t0 = time.time()
            torch.manual_seed(0)
            net = LocalNet(create_model(f"{LARGE}_x{scale}", num_classes=3), k, method,
                           image_size=(patch, patch))
            g = torch.Generator().manual_seed(0)
            x = torch.rand(batch, 3, patch, patch, generator=g)
            y = net.task.example_target(batch, (patch, patch), 3, g)
            # each block's gradients dropped after its backward (its optimizer step)
            drop = net.zero_grad
            mem = measure_step_memory(net, x, y, after_block=lambda j: drop(set_to_none=True))
            data["rows"].append({"scale": scale, "method": method, "blocks": k,
                                 **mem.to_dict(), "seconds": round(time.time() - t0, 1)})
            data.update(env=environment(), date=time.strftime("%Y-%m-%d"), batch=batch,
                        patch=patch, command="benchmarks/bench_sr.py memory")
            KEPT.mkdir(parents=True, exist_ok=True)
            MEMORY_JSON.write_text(json.dumps(data, indent=1) + "\n")
            print(scale, method, k, mem.to_dict(), flush=True)


def main(argv: Optional[List[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("part", choices=("steps", "train", "memory", "heads", "table"))
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--device", default="cpu")
    a = p.parse_args(argv)
    if a.part == "steps":
        step_ratios(a.device)
    elif a.part == "memory":
        large_memory()
    elif a.part == "heads":  # per-block PSNR of finished runs that lack it
        for job in queue():
            head_scores(*job)
    elif a.part == "train":
        in_workers(a.workers, lambda: train_all(a.device))
    from sr_table import write_section

    write_section()


if __name__ == "__main__":
    main()
