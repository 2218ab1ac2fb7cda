"""What local learning learned (issue 19): CKA against E2E and linear probes per block, for
ResNet-32 K=16 on Fashion-MNIST, the reproduction's short budget (seed 0).

    python benchmarks/bench_analysis.py train --workers 2   # the 7 runs (resumable, claimable)
    python benchmarks/bench_analysis.py analyze             # locallearn analyze each vs E2E
    python benchmarks/bench_analysis.py table               # figures + section_analysis.md
    bash benchmarks/gpu_bench.sh OUT analysis  # the train runs on one CUDA GPU in one sitting

The runs train in runs/analysis/ (with their checkpoints: analyze needs the weights; the
reproduction keeps only metrics); each run's analysis.json is copied to
results/analysis/<run>/ (committed), from which the figures and the section are drawn.
"""
from __future__ import annotations

import argparse
import datetime
import json
import shutil
import statistics
import sys
from pathlib import Path
from typing import List, Optional, Tuple

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from kept_runs import in_workers, train_kept  # noqa: E402
from reproduce_plan import BUDGETS, RECIPE  # noqa: E402

KEPT = RESULTS / "analysis"
RUNS = ROOT / "runs" / "analysis"
METHODS = ("e2e", "dgl", "dgl+ema", "dgl+man", "dgl+manpp", "infopro", "infopro+manpp")
K, SEED, SAMPLES = 16, 0, 1024
#: the papers' pairs: (base, with the bridge); the claim is that the second is closer to E2E
PAIRS = (("dgl", "dgl+manpp"), ("dgl", "dgl+ema"), ("dgl", "dgl+man"), ("infopro", "infopro+manpp"))


def name(method: str) -> str:
    return method.replace("+", "_")


def train_all(device: str) -> None:
    from locallearn.config import TrainConfig

    b = BUDGETS["short"]
    for method in METHODS:
        out = RUNS / name(method)
        cfg = TrainConfig(model="resnet32", method=method, blocks=1 if method == "e2e" else K,
                          dataset="fashion-mnist", epochs=b["epochs"], seed=SEED, device=device,
                          channels_last=True, limit_train=b["limit_train"], out=str(out),
                          **RECIPE)
        # "kept" is the run itself: its checkpoint stays for analyze
        train_kept(cfg, RUNS / name(method) / "kept", f"{method} K={cfg.blocks}")


def analyze_all(device: str) -> None:
    from locallearn.analysis import analyze_run

    for method in METHODS:
        kept = KEPT / name(method)
        if (kept / "analysis.json").is_file():
            continue
        run = RUNS / name(method)
        if not (run / "kept" / "summary.json").is_file():  # still training (or not started)
            print(f"== {method}: not finished training, skipped", flush=True)
            continue
        print(f"== analyze {method}", flush=True)
        analyze_run(run, against=RUNS / "e2e", device=device, samples=SAMPLES, images=6,
                    progress=False)
        kept.mkdir(parents=True, exist_ok=True)
        for f in ("analysis.json", "probes.png", "cka.png", "gradcam.png", "summary.json",
                  "metrics.csv"):
            shutil.copy2(run / f, kept / f)


def _series(analysis: dict, key: str) -> List[Optional[float]]:
    """Per depth: ``cka`` with E2E at the matching depth (per block), or ``probe_acc`` (the
    probe's test accuracy per body unit; with K=16 on ResNet-32 unit j ends block j)."""
    if key == "cka":
        cka = analysis.get("cka") or {}
        return [row.get("cka") for row in cka.get("matching") or []]
    return [row.get("test_acc") for row in analysis.get("probes") or []]


def _wins(base: dict, bridged: dict, key: str) -> Tuple[int, int]:
    """(blocks where ``bridged``'s series beats ``base``'s, blocks compared)."""
    pairs = [(x, y) for x, y in zip(_series(base, key), _series(bridged, key))
             if x is not None and y is not None]
    return sum(y > x for x, y in pairs), len(pairs)


def write_section() -> None:
    """Two figures (CKA vs E2E per block; probe accuracy per block) and the section."""
    from locallearn.checkpoint import atomic_write_text
    from locallearn.plots import plt, save_figure

    data = {m: json.loads((KEPT / name(m) / "analysis.json").read_text())
            for m in METHODS if (KEPT / name(m) / "analysis.json").is_file()}
    lines = ["## What the blocks learned: CKA with E2E and linear probes (issue 19)", ""]
    if not data:
        lines.append("(not run yet: `benchmarks/bench_analysis.py train`, then `analyze`)")
        atomic_write_text(RESULTS / "section_analysis.md", "\n".join(lines) + "\n")
        return
    for key, fname, label in (("cka", "analysis_cka.png", "linear CKA with E2E at the same depth"),
                              ("probe_acc", "analysis_probes.png", "linear probe test accuracy")):
        fig, ax = plt.subplots(figsize=(7, 4))
        for m, a in data.items():
            ys = _series(a, key)
            if any(y is not None for y in ys) and not (key == "cka" and m == "e2e"):
                ax.plot(range(len(ys)), ys, marker="o", ms=3, label=m)
        ax.set(xlabel="block (ResNet-32, K=16)", ylabel=label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        save_figure(fig, RESULTS / fname)
    from locallearn.analysis import compare_runs
    from locallearn.measure.bench import environment

    # `locallearn compare` over the kept runs: results/analysis/compare.png and .md
    compare_runs([KEPT / name(m) for m in data], KEPT, force=True)

    b = BUDGETS["short"]
    env = environment()
    lines += [f"ResNet-32 K=16 (one residual unit per block) on Fashion-MNIST, the reproduction's "
              f"short budget ({b['epochs']} epochs on {b['limit_train']} images, batch "
              f"{RECIPE['batch_size']}, SGD lr {RECIPE['lr']}), seed {SEED}; `locallearn analyze "
              f"--against <e2e run>` on {SAMPLES} training / test images: minibatch-unbiased "
              "linear CKA of each block's output with the E2E network's unit at the same "
              "depth, and a linear probe (L-BFGS on pooled features) per block. Command: "
              "`.venv/bin/python benchmarks/bench_analysis.py train --workers 2`, then "
              f"`... analyze`. One seed: differences of a few hundredths of CKA between "
              "runs are within what another seed could move. Probe accuracy is per body unit "
              "(for E2E too: its units at the same depths). "
              f"Written {datetime.date.today()}"
              + f", {env['machine']} CPU, torch {env['torch']}.", "",
              "![CKA with E2E](results/analysis_cka.png) "
              "![probes](results/analysis_probes.png)", "",
              "All seven side by side (`locallearn compare benchmarks/results/analysis/*/ "
              "--out benchmarks/results/analysis --force`):", "",
              "![compare](results/analysis/compare.png)", "",
              "| method | final test acc % | mean CKA with E2E | CKA at block 0 / 7 / 14 "
              "| mean probe acc % |", "|---|---|---|---|---|"]
    for m, a in data.items():
        cka = [c for c in _series(a, "cka") if c is not None]
        probe = [p for p in _series(a, "probe_acc") if p is not None]
        series = _series(a, "cka")
        at = " / ".join("-" if i >= len(series) or series[i] is None else f"{series[i]:.2f}"
                        for i in (0, 7, 14))
        acc = json.loads((KEPT / name(m) / "summary.json").read_text())["final_test_acc"]
        mean_probe = f"{100 * statistics.fmean(probe):.2f}" if probe else "-"
        if m == "e2e":  # the reference every CKA is taken against
            lines.append(f"| {m} | {100 * acc:.2f} | (reference) | (reference) | {mean_probe} |")
        else:
            lines.append(f"| {m} | {100 * acc:.2f} | "
                         + (f"{statistics.fmean(cka):.3f} | {at}" if cka else "- | -")
                         + f" | {mean_probe} |")
    lines += ["", "The papers' claim (MAN++ Fig. 6): with the bridge, the blocks' representations "
              "stay closer to E2E than their base method's, at every depth. Here, per pair "
              "(blocks where the bridged run's CKA with E2E is higher / all blocks):", ""]
    for base, bridged in PAIRS:
        if base in data and bridged in data:
            wins, n = _wins(data[base], data[bridged], "cka")
            pwins, pn = _wins(data[base], data[bridged], "probe_acc")
            lines.append(f"- `{bridged}` vs `{base}`: closer at {wins} / {n} blocks"
                         f" ({'shown at every depth' if wins == n else 'not at every depth'}); "
                         f"its linear probe is higher at {pwins} / {pn} blocks.")
    means = {m: statistics.fmean(c for c in _series(a, "cka") if c is not None)
             for m, a in data.items() if m != "e2e" and any(_series(a, "cka"))}
    if means:  # Fig. 6 also ranks the methods: MAN++ closest, InfoPro drifting
        lines += ["", "Mean CKA with E2E over the blocks, highest first: " + ", ".join(
            f"`{m}` {v:.3f}" for m, v in sorted(means.items(), key=lambda kv: -kv[1])) + "."]
    atomic_write_text(RESULTS / "section_analysis.md", "\n".join(lines) + "\n")
    print(f"wrote {RESULTS / 'section_analysis.md'}")


def main(argv: Optional[List[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("part", choices=("train", "analyze", "table"))
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--device", default="cpu")
    a = p.parse_args(argv)
    if a.part == "train":
        in_workers(a.workers, lambda: train_all(a.device))
    elif a.part == "analyze":
        analyze_all(a.device)
    write_section()


if __name__ == "__main__":
    main()
