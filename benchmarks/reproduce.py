"""The papers' accuracy table on Fashion-MNIST (issue 4, section 4), resumable.

    .venv/bin/python benchmarks/reproduce.py --budget short    # 3 epochs x 20k samples, 3 seeds
    .venv/bin/python benchmarks/reproduce.py --budget long     # E2E/DGL/DGL+MAN++, 6 epochs x 60k
    .venv/bin/python benchmarks/reproduce.py --budget plateau  # the same, 10 epochs x 60k
    .venv/bin/python benchmarks/reproduce.py --budget short8   # the short main rows at K=8
    .venv/bin/python benchmarks/reproduce.py --workers 2       # both, in PLAN's order, two
                                                               # single-thread trainers

On a small CPU two single-thread processes train about 1.4x more runs per hour than one
two-thread process; workers claim runs through ``<run>.claim`` files (a claim whose
process is gone is taken over), so any number of them can be started or killed at will.

Each run trains in runs/reproduce/<budget>/<method>_K<k>_s<seed>/ (a normal run directory;
a killed one resumes from its last epoch); a finished run's config, metrics and summary
are copied to benchmarks/results/reproduce/ (committed), and a run found there is skipped. After every run the
table benchmarks/results/section_reproduce_<budget>.md and its plot are rewritten from
the run directories, so partial results are always current.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime
import itertools
import math
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from locallearn import TrainConfig, fit  # noqa: E402
from locallearn.checkpoint import CHECKPOINT, atomic_write_text, load_checkpoint  # noqa: E402
from locallearn.devices import resolve_device  # noqa: E402
from locallearn.measure.bench import environment  # noqa: E402
from locallearn.presets import apply_preset  # noqa: E402

from bench_steps import git_rev  # noqa: E402  (benchmarks/ is on sys.path)
from fidelity_table import fidelity_lines, rejects_zero  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
BUDGETS = {
    # the MAN++ ablation on DGL: none / EMA / EMA+LB / EMA+LB+scale, plus InfoPro and E2E
    "short": dict(epochs=3, limit_train=20000, seeds=[0, 1, 2], ks=[16],
                  main=["e2e", "dgl", "dgl+manpp", "infopro", "infopro+manpp"],
                  # why MAN++ does not beat DGL here: the EMA's lag, on every seed
                  probe=["dgl+manpp@ema_momentum=0.81"],
                  methods=["e2e", "dgl", "dgl+manpp", "infopro", "infopro+manpp",
                           # the papers' EMA half-life (m=0.995: 138 steps) is 0.7% of
                           # their ~20k steps but 30% of these 470; m=0.81 keeps the 0.7%
                           "dgl+manpp@ema_momentum=0.81",
                           # the reference code's copies start freshly initialised
                           "dgl+manpp@bridge_init=random",
                           "dgl+ema", "dgl+man", "dgl+manpp@channel",
                           "infopro+manpp@decoder=conv_first", "slm", "slm+manpp",
                           "dgl+manpp@preset=manpp-cifar-dgl", "dgl@preset=manpp-cifar-dgl",
                           "dgl+manpp@ema_timing=before-step",
                           "dgl+manpp@bridge_init=reference",
                           "dgl+manpp@head_init=reference",
                           "infopro+manpp@preset=manpp-cifar-infopro"],
                  # the feature-bank paper's aux nets beside DGL and InfoPro (issue 14)
                  slm=["slm", "slm+manpp"],
                  # issue 15 on the CPU: the reference preset's details, all at once, the
                  # DGL base under it, each detail alone, then InfoPro's preset
                  fidelity=["dgl+manpp@preset=manpp-cifar-dgl"],
                  fidelity_base=["dgl@preset=manpp-cifar-dgl"],
                  factors=["dgl+manpp@ema_timing=before-step",
                           "dgl+manpp@bridge_init=reference",
                           "dgl+manpp@head_init=reference"],
                  fidelity_infopro=["infopro+manpp@preset=manpp-cifar-infopro"]),
    # the papers' regime: all 60k images, cosine to zero over 6 epochs, so that E2E's
    # curve flattens out; ~47 min a run on one CPU thread, i.e. the three rows finish in
    # one sitting (run directories are not kept between sittings on every machine)
    "long": dict(epochs=6, limit_train=None, seeds=[0], ks=[16],
                 # the slowest first, so that two workers finish together
                 main=["dgl+manpp", "dgl", "e2e"], methods=["e2e", "dgl", "dgl+manpp"]),
    # the same rows trained 10 epochs, closer to E2E's plateau (6 epochs ended at 92.6%):
    # ~90 min for dgl+manpp on one thread on a fast day (6 epochs took 54 min), dgl + e2e
    # ~75 min on the other; on 2026-11-24 this CPU ran 2.5-3x slower, so it did not fit
    # seeds 1 and 2 are meant for a GPU (one sitting: benchmarks/gpu_checks.sh)
    "plateau": dict(epochs=10, limit_train=None, seeds=[0, 1, 2], ks=[16],
                    main=["dgl+manpp", "dgl", "e2e"],
                    # issue 15: the reference preset's details (at this budget's recipe),
                    # all at once, then one at a time (fidelity_table.py)
                    fidelity=["dgl+manpp@preset=manpp-cifar-dgl"],
                    fidelity_base=["dgl@preset=manpp-cifar-dgl"],
                    factors=["dgl+manpp@ema_timing=before-step",
                             "dgl+manpp@bridge_init=reference",
                             "dgl+manpp@head_init=reference"],
                    methods=["e2e", "dgl", "dgl+manpp", "dgl@preset=manpp-cifar-dgl",
                             "dgl+manpp@preset=manpp-cifar-dgl",
                             "dgl+manpp@ema_timing=before-step",
                             "dgl+manpp@bridge_init=reference",
                             "dgl+manpp@head_init=reference"]),
    # the short budget's main rows at K=8 (the "K=8 if the budget allows"); E2E
    # does not depend on K, so its row is the short budget's own runs (``reuse``)
    "short8": dict(epochs=3, limit_train=20000, seeds=[0, 1, 2], ks=[8],
                   main=["infopro+manpp", "dgl+manpp", "infopro", "dgl"],
                   methods=["e2e", "dgl", "dgl+manpp", "infopro", "infopro+manpp",
                            "slm", "slm+manpp"],
                   slm=["slm", "slm+manpp"], reuse={"e2e": ("short", 16)}),
    # issue 15, the papers' regime as far as a GPU sitting allows: their recipe (batch
    # 1024, lr 0.8, per-epoch cosine with the blended warm-up; 10 of 400 epochs would be
    # 0.5 of 20, which a per-epoch schedule cannot hold: one epoch at 0.01) on all 60k
    # images; today's defaults beside the reference preset, then the MAN++ ablation.
    # For GPU sittings: bash benchmarks/gpu_fidelity.sh OUT 540 6 paper
    "paper": dict(epochs=20, limit_train=None, seeds=[0, 1, 2], ks=[16],
                  recipe=dict(batch_size=1024, lr=0.8, warmup_epochs=1.0,
                              lr_schedule="epoch"),
                  main=["dgl+manpp@preset=manpp-cifar-dgl", "dgl+manpp", "dgl", "e2e"],
                  ablation=["dgl+ema", "dgl+man"],
                  methods=["e2e", "dgl", "dgl+manpp", "dgl+manpp@preset=manpp-cifar-dgl",
                           "dgl+ema", "dgl+man"]),
}
# ``--budget all``: what to train first when CPU time is short. The main rows of the
# short budget for every seed (mean +- std), the ablation for one seed, the long budget,
# the probe of MAN++'s EMA momentum for every seed, the ablation's other seeds, then the
# plateau budget.
PLAN = [("short", "main", [0, 1, 2]), ("short", "rest", [0]), ("long", "main", [0]),
        ("short", "probe", [1, 2]), ("short", "rest", [1, 2]), ("plateau", "main", [0]),
        ("short8", "main", [0]), ("short8", "main", [1, 2]), ("plateau", "main", [1, 2]),
        ("short8", "slm", [0]), ("short", "slm", [0]), ("short8", "slm", [1, 2]),
        ("short", "slm", [1, 2]),
        ("short", "fidelity", [0, 1, 2]), ("short", "factors", [0, 1, 2]),
        ("short", "fidelity_base", [0, 1, 2]), ("short", "fidelity_infopro", [0, 1, 2]),
        # issue 15 (GPU): MAN++ under the reference preset for every seed, then DGL under
        # it, then each of its details alone
        ("plateau", "fidelity", [0, 1, 2]), ("plateau", "fidelity_base", [0, 1, 2]),
        ("plateau", "factors", [0]), ("plateau", "factors", [1, 2]),
        ("paper", "main", [0, 1, 2]), ("paper", "ablation", [0, 1, 2])]
GROUPS = ("main", "probe", "slm", "fidelity", "fidelity_base", "factors",
          "fidelity_infopro", "ablation")  # "rest": a budget's other methods


def jobs(budget: str) -> List[tuple]:
    """(budget, method, k, seed) in training order (see PLAN)."""
    out = []
    for name, group, seeds in PLAN:
        if budget not in ("all", name):
            continue
        b = BUDGETS[name]
        named = {m for g in GROUPS for m in b.get(g, [])}
        methods = (b.get(group, []) if group in GROUPS
                   else [m for m in b["methods"] if m not in named])
        out += [(name, m, k, s) for s in seeds if s in b["seeds"] for k in b["ks"] for m in methods]
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed worker not yet reaped by its parent is a zombie: dead for our purpose
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def claim(out: Path) -> bool:
    """Atomically claim a run for this process; a claim left by a dead process is taken over."""
    path = out.parent / f"{out.name}.claim"
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                owner = int(path.read_text() or 0)
            except (OSError, ValueError):
                owner = 0
            if owner and owner != os.getpid() and _alive(owner):
                return False
            path.unlink(missing_ok=True)  # stale: its process was killed
            continue
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        return True
    return False


def release(out: Path) -> None:
    (out.parent / f"{out.name}.claim").unlink(missing_ok=True)


def run_dir(budget: str, method: str, k: int, seed: int, kept: bool = False) -> Path:
    """Where a run trains (runs/, not committed) or where its finished metrics are kept
    (benchmarks/results/reproduce/, committed, so a later session on a fresh clone
    skips it). A method the budget ``reuse``s is kept under the budget and K it names."""
    if kept and method in BUDGETS[budget].get("reuse", {}):
        budget, k = BUDGETS[budget]["reuse"][method]
    spec, _, variant = method.partition("@")
    name = spec.replace("+", "_") + (f"_lb{variant}" if variant == "channel" else
                                     f"_{variant.replace('=', '_')}" if variant else "")
    base = RESULTS / "reproduce" if kept else ROOT / "runs" / "reproduce"
    return base / budget / f"{name}_K{k}_s{seed}"


def split_variant(method: str) -> tuple:
    """Options that change the math, after ``@``: ``dgl+manpp@channel`` -> lb ``channel``;
    ``dgl+manpp@ema_momentum=0.95`` -> a TrainConfig field; ``infopro+manpp@decoder=conv_first``
    -> a head option. Returns (spec, TrainConfig overrides, head options)."""
    spec, _, variant = method.partition("@")
    if not variant:
        return spec, {}, {}
    if "=" not in variant:
        return spec, {"lb": variant}, {}
    key, _, value = variant.partition("=")
    if key == "preset":  # applied by _train over the budget's recipe
        return spec, {"preset": value}, {}
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    if key in fields:
        kind = type(fields[key].default)
        return spec, {key: kind(value) if kind in (int, float) else value}, {}
    return spec, {}, {key: value}


def finished(budget: str, method: str, k: int, seed: int) -> bool:
    kept = run_dir(budget, method, k, seed, kept=True) / "summary.json"
    return kept.is_file() and json.loads(kept.read_text())["epochs"] >= BUDGETS[budget]["epochs"]


def train_one(budget: str, method: str, k: int, seed: int, device: str) -> bool:
    """Train one run unless it is finished or another worker holds it; True if trained."""
    b = BUDGETS[budget]
    out, kept = run_dir(budget, method, k, seed), run_dir(budget, method, k, seed, kept=True)
    if finished(budget, method, k, seed) or not claim(out):
        return False
    try:
        _train(b, budget, method, k, seed, device, out, kept)
    finally:
        release(out)
    return True


def _train(b: dict, budget: str, method: str, k: int, seed: int, device: str,
           out: Path, kept: Path) -> None:
    spec, overrides, head_opts = split_variant(method)
    preset = overrides.pop("preset", None)
    recipe = {**RECIPE, **b.get("recipe", {})}
    cfg = TrainConfig(model="resnet32", method=spec, blocks=1 if spec == "e2e" else k,
                      dataset="fashion-mnist", epochs=b["epochs"], seed=seed, device=device,
                      channels_last=True, limit_train=b["limit_train"], head_opts=head_opts,
                      out=str(out), **recipe, **overrides)
    if preset:  # the preset's details; the budget's recipe (every field set above) stays
        given = {"model", "method", "blocks", "dataset", "epochs", "batch_size", "lr",
                 "momentum", "nesterov", "weight_decay", "warmup_epochs", "warmup_start_lr",
                 "lr_schedule", "seed", "device", "channels_last", "limit_train", "out"}
        print("\n".join(apply_preset(cfg, preset, given=given)), flush=True)
    print(f"== {budget}: {method} K={cfg.blocks} seed {seed} -> {out}", flush=True)
    note_segment(out, device)
    # segments.json is already there: a new run is forced into its own directory (force
    # replaces run files only); one with a config.json resumes (or restarts from it)
    started = (out / "config.json").is_file()
    fit(cfg, resume=started, force=not started, progress=True)
    kept.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "metrics.csv", "summary.json", SEGMENTS):
        shutil.copyfile(out / name, kept / name)
    layerwise(out, kept, device)


SEGMENTS = "segments.json"


def note_segment(out: Path, device: str) -> None:
    """Append where this (re)start trains to <run>/segments.json: a run may be started on
    a GPU and finished on a CPU (it resumes bit-exactly only on the same kind of device)."""
    path, ckpt = out / SEGMENTS, out / CHECKPOINT
    segments = json.loads(path.read_text()) if path.is_file() else []
    env, dev = environment(), resolve_device(device)
    segments.append(dict(from_epoch=load_checkpoint(ckpt)["epoch"] if ckpt.is_file() else 0,
                         device=dev.type, machine=env.get("gpu", "") if dev.type == "cuda"
                         else f"{env['machine']} CPU, {env['cpu_threads']} thread(s)",
                         torch=env["torch"], date=str(datetime.date.today())))
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(segments, indent=1) + "\n")


def devices_line(budget: str) -> List[str]:
    """Which kept runs trained (in part) off this CPU, from their segments.json."""
    b, where = BUDGETS[budget], {}
    for method, k, seed in itertools.product(b["methods"], b["ks"], b["seeds"]):
        path = run_dir(budget, method, k, seed, kept=True) / SEGMENTS
        segs = json.loads(path.read_text()) if path.is_file() else []
        if not any(s["device"] != "cpu" for s in segs):
            continue
        ends = [s["from_epoch"] for s in segs[1:]] + [b["epochs"]]
        parts = ", then ".join(
            f"epochs {s['from_epoch'] + 1}-{e} on {s['machine']} (torch {s['torch']}, "
            f"{s['date']})" for s, e in zip(segs, ends) if e > s["from_epoch"])
        where.setdefault(parts, []).append(f"`{method}` seed {seed}")
    if not where:
        return []
    return ["", "Trained on a GPU in a GPU sitting (`benchmarks/gpu_checks.sh`, "
            "`benchmarks/gpu_fidelity.sh` or `benchmarks/gpu_bench.sh`; the other runs: on this CPU, one thread each): " + "; ".join(
                f"{', '.join(runs)}: {parts}" for parts, runs in where.items()) + "."]


def layerwise(out: Path, kept: Path, device: str) -> None:
    """Test accuracy of every block's classifier and MAN++'s learned scales -> heads.json
    (recomputed: a run resumed for more epochs replaces its old one)."""
    from kept_runs import keep_heads  # it imports this module

    (kept / "heads.json").unlink(missing_ok=True)
    keep_heads(out, kept, device, layout=lambda rows: dict(
        test_acc=[r["test_acc"] for r in rows],
        bridge_scale=[r["bridge_scale"] for r in rows[:-1]],  # None: no bridge there
        ema_lag=[r["ema_lag"] for r in rows[:-1]]))


def layerwise_missing(device: str) -> None:
    """heads.json for every finished run still in runs/ that has none kept."""
    for budget, method, k, seed in jobs("all"):
        out, kept = run_dir(budget, method, k, seed), run_dir(budget, method, k, seed, kept=True)
        if (finished(budget, method, k, seed) and (out / CHECKPOINT).is_file()
                and not (kept / "heads.json").is_file() and claim(out)):
            try:
                print(f"== layer-wise accuracy: {out}", flush=True)
                layerwise(out, kept, device)
            finally:
                release(out)


def _rows(run: Path) -> List[Dict[str, float]]:
    with open(run / "metrics.csv") as f:
        return [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]


# the recipe of every budget unless it names its own (``recipe``)
RECIPE = dict(batch_size=128, lr=0.1, warmup_epochs=0.0, lr_schedule="cosine")


def recipe_text(b: dict) -> str:
    r = {**RECIPE, **b.get("recipe", {})}
    warm = (f", {r['warmup_epochs']:g} warm-up epoch(s) from 0.01" if r["warmup_epochs"] else "")
    schedule = "cosine per epoch (the reference's)" if r["lr_schedule"] == "epoch" else "cosine"
    return f"batch {r['batch_size']}, SGD Nesterov lr {r['lr']:g} {schedule}{warm}, wd 1e-4"


def write_section(budget: str, command: str) -> None:
    b = BUDGETS[budget]
    lines = [f"## Accuracy on Fashion-MNIST, ResNet-32, budget `{budget}` (issue 4)", "",
             f"{b['epochs']} epoch(s) on {b['limit_train'] or 60000} training samples, "
             f"{recipe_text(b)}, crop+flip; test on all 10,000 test images; "
             f"seeds {b['seeds']}. Rows still training show the seeds finished so far. Each "
             f"run trains in one process on one CPU thread (`--workers 2`: two side by side) "
             f"unless said otherwise below. "
             "The MAN++ ablation: `dgl+ema` = EMA only, `dgl+man` = EMA + LB, `dgl+manpp` = "
             "EMA + LB + scale; `@channel`: the lightweight per-channel LB; `@key=value`: one "
             "setting changed (a TrainConfig field or a head option)."
             + "".join(f" The `{m}` row is budget `{src}`'s runs (it "
                       f"does not depend on K)." for m, (src, _) in b.get("reuse", {}).items()) + "  ",
             f"Environment: {json.dumps(environment())}; date {datetime.date.today()}; "
             f"git {git_rev()}.  ", f"Command: `{command}`", "",
             "| method | K | seeds done | final test acc % (mean +- std) | per seed |",
             "|---|---|---|---|---|"]
    curves: Dict[str, List[List[float]]] = {}
    means: Dict[str, float] = {}
    by_seed: Dict[str, Dict[int, float]] = {}
    for k in b["ks"]:
        for method in b["methods"]:
            accs, per = [], []
            for seed in b["seeds"]:
                run = run_dir(budget, method, k, seed, kept=True)
                if not (run / "metrics.csv").is_file():
                    continue
                rows = _rows(run)
                if len(rows) < b["epochs"]:
                    continue
                accs.append(100 * rows[-1]["test_acc"])
                per.append(f"{accs[-1]:.2f}")
                by_seed.setdefault(method, {})[seed] = [100 * r["test_acc"] for r in rows]
                curves.setdefault(f"{method} K={k if method != 'e2e' else 1}", []).append(
                    [100 * r["test_acc"] for r in rows])
            if not accs:
                continue
            means[method] = statistics.mean(accs)
            spread = f" +- {statistics.stdev(accs):.2f}" if len(accs) > 1 else " (one seed)"
            lines.append(f"| {method} | {1 if method == 'e2e' else k} | {len(accs)} | "
                         f"{means[method]:.2f}{spread} | {', '.join(per)} |")
    section = RESULTS / f"section_reproduce_{budget}.md"
    if not means:  # nothing finished: say so instead of an empty table
        atomic_write_text(section, "\n".join(lines[:3] + [
            f"No run of this budget has finished yet; `{command}` trains them "
            f"({', '.join(b['methods'])}; a killed run resumes from its last checkpoint in "
            "runs/)."]) + "\n")
        return
    if {"e2e", "dgl", "dgl+manpp"} <= means.keys() and means["e2e"] != means["dgl"]:
        closed = (means["dgl+manpp"] - means["dgl"]) / (means["e2e"] - means["dgl"])
        lines += ["", f"Share of the DGL -> E2E error gap closed by DGL+MAN++: {closed:.2f} "
                      "(papers, CIFAR-10 ResNet-32 K=16: 0.69)."]
    lines += devices_line(budget)
    lines += paired_lines(by_seed)
    lines += fidelity_lines(b, by_seed, RESULTS / "reproduce" / f"{budget}_unfinished",
                            lambda m, s: run_dir(budget, m, b["ks"][0], s).name)
    if curves:
        series = {}
        for label, runs in curves.items():
            n = min(len(r) for r in runs)
            series[f"{label} ({len(runs)} seeds)"] = (
                list(range(1, n + 1)), [statistics.mean(r[e] for r in runs) for e in range(n)])
        line_plot(series, "epoch", "test accuracy (%)",
                  f"ResNet-32 on Fashion-MNIST ({budget})", RESULTS / f"reproduce_{budget}.png")
        lines += ["", f"![test accuracy per epoch](benchmarks/results/reproduce_{budget}.png)"]
    lines += layerwise_section(budget)
    lines += why_lines(budget, by_seed)
    atomic_write_text(section, "\n".join(lines) + "\n")  # several workers rewrite it




def line_plot(series: Dict[str, tuple], xlabel: str, ylabel: str, title: str, path: Path) -> None:
    """One line per label, distinct colours (tab20), the legend beside the axes."""
    fig, ax = plt.subplots(figsize=(10, 4.8))
    colors = plt.get_cmap("tab20").colors
    for i, (label, (x, y)) in enumerate(series.items()):
        ax.plot(x, y, marker="o", color=colors[(2 * i) % 20 + (i // 10) % 2], label=label)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def paired_lines(by_seed: Dict[str, Dict[int, List[float]]]) -> List[str]:
    """MAN++ (or a variant) minus its base method, seed by seed: the same seed gives both
    the same initial backbone and data order, so the paired difference is the test.
    ``by_seed[method][seed]`` is the test accuracy after each epoch."""
    out = ["", "Paired by seed. Verdict: \"better\" / \"worse\" when a two-sided paired t-test "
           "rejects a zero mean difference at 5%, else \"within noise\" (one seed: no verdict).",
           "",
           "| MAN++ vs its base, same seeds | final, per seed (points) | final, mean +- std "
           "| verdict | mean difference after each epoch |", "|---|---|---|---|---|"]
    for method, seeds in by_seed.items():
        base = method.split("+")[0]
        if method == base or base not in by_seed or base == "e2e":
            continue
        common = sorted(set(seeds) & set(by_seed[base]))
        if not common:
            continue
        diffs = [seeds[s][-1] - by_seed[base][s][-1] for s in common]
        spread = f" +- {statistics.stdev(diffs):.2f}" if len(diffs) > 1 else ""
        epochs = min(len(seeds[s]) for s in common)
        by_epoch = [statistics.mean(seeds[s][e] - by_seed[base][s][e] for s in common)
                    for e in range(epochs)]
        mean = statistics.mean(diffs)
        if len(diffs) < 2:
            verdict = "one seed"
        elif rejects_zero(diffs):
            verdict = "better" if mean > 0 else "worse"
        else:
            verdict = "within noise"
        out.append(f"| {method} - {base} | {', '.join(f'{d:+.2f}' for d in diffs)} | "
                   f"{mean:+.2f}{spread} | {verdict} ({sum(d > 0 for d in diffs)} of "
                   f"{len(diffs)} seeds up) | "
                   f"{', '.join(f'{d:+.2f}' for d in by_epoch)} |")
    return out if len(out) > 5 else []


def kept_heads(budget: str) -> Dict[str, List[dict]]:
    """The kept ``heads.json`` of every run of a budget, by method, each with its seed."""
    b = BUDGETS[budget]
    out: Dict[str, List[dict]] = {}
    for k in b["ks"]:
        for method in b["methods"]:
            for seed in b["seeds"]:
                path = run_dir(budget, method, k, seed, kept=True) / "heads.json"
                if path.is_file():
                    out.setdefault(method, []).append(dict(json.loads(path.read_text()), seed=seed))
    return out


def layerwise_section(budget: str) -> List[str]:
    """Mean test accuracy of each block's classifier over the seeds kept, per method,
    as a table and a plot (the papers' layer-wise view of what each block learned)."""
    per_method = {m: runs for m, runs in kept_heads(budget).items() if m != "e2e"}
    if not per_method:
        return []
    k = max(len(r[0]["test_acc"]) for r in per_method.values())
    lines = ["", "Test accuracy (%) of each block's own classifier (its auxiliary head; the "
             "last block: the network), mean over the seeds with a kept checkpoint "
             "(`locallearn eval --heads`). \"-\": a head without class scores. Scale s: "
             "MAN++'s learned mix (init 1). EMA lag: ||EMA copy - its unit|| / ||unit|| "
             "at the end of training.", "",
             "| method | seeds | " + " | ".join(f"b{j}" for j in range(k)) + " | mean scale s | mean EMA lag |",
             "|---|---|" + "---|" * k + "---|---|"]
    series = {}
    for method, runs in per_method.items():
        means: List[float] = []
        cells = []
        for j in range(k):
            vals = [r["test_acc"][j] for r in runs if r["test_acc"][j] is not None]
            means.append(100 * statistics.mean(vals) if vals else float("nan"))
            cells.append(f"{means[-1]:.1f}" if vals else "-")
        scales = [v for r in runs for v in r["bridge_scale"] if v is not None]
        scale = f"{statistics.mean(scales):.2f}" if scales else "-"
        lag_vals = [v for r in runs for v in r.get("ema_lag", []) if v is not None]
        lag = f"{statistics.mean(lag_vals):.3f}" if lag_vals else "-"
        seeds = ", ".join(str(r["seed"]) for r in runs)
        lines.append(f"| {method} | {seeds} | " + " | ".join(cells) + f" | {scale} | {lag} |")
        series[f"{method} ({len(runs)} seeds)"] = (list(range(k)), means)
    line_plot(series, "block", "test accuracy of the block's classifier (%)",
              f"Layer-wise accuracy, ResNet-32 K={k} ({budget})", RESULTS / f"layerwise_{budget}.png")
    return lines + ["", f"![layer-wise accuracy](benchmarks/results/layerwise_{budget}.png)"]


def why_lines(budget: str, by_seed: Dict[str, Dict[int, List[float]]]) -> List[str]:
    """The issue's checklist for "MAN++ does not beat its base": the scale's weight decay,
    the EMA momentum, the EMA initialisation, the loss weights, each answered from this
    budget's numbers (no number typed by hand)."""
    b = BUDGETS[budget]
    if not {"dgl", "dgl+manpp"} <= by_seed.keys():
        return []
    cfg = TrainConfig()
    samples = b["limit_train"] or 60000
    recipe = {**RECIPE, **b.get("recipe", {})}
    steps = b["epochs"] * -(-samples // recipe["batch_size"])
    paper_steps = 400 * -(-50000 // 1024)  # MAN++: 400 epochs of CIFAR-10 at batch 1024
    half_life = math.log(0.5) / math.log(cfg.ema_momentum)
    decay = (1 - recipe["lr"] * cfg.weight_decay) ** steps
    heads = {m: runs for m, runs in kept_heads(budget).items() if m in ("dgl", "dgl+manpp")}
    scales = [v for r in heads.get("dgl+manpp", []) for v in r["bridge_scale"] if v is not None]
    out = ["", f"Checks for why DGL+MAN++ does or does not beat DGL at this budget:", "",
           f"- Loss weights: DGL and DGL+MAN++ train every block on the same unweighted "
           f"cross-entropy of its head; there is no weight that differs between them.",
           f"- The scale's weight decay alone would multiply s by (1 - lr*wd)^steps >= "
           f"{decay:.4f} over the {steps} steps of a run (lr <= {recipe['lr']:g}, wd {cfg.weight_decay:g})"
           + (f"; the learned s end between {min(scales):.2f} and {max(scales):.2f}, so the "
              f"decay does not shut the learnable branch off." if scales else ".")]
    probe = [m for m in b["methods"] if "@ema_momentum=" in m]
    out.append(f"- EMA momentum {cfg.ema_momentum}: a half-life of {half_life:.0f} steps, "
               f"{100 * half_life / steps:.1f}% of this run against "
               f"{100 * half_life / paper_steps:.1f}% of the papers' {paper_steps} steps."
               + (f" The probe `{probe[0]}` gives the EMA about the papers' share; see its "
                  f"row in the paired table." if probe else ""))
    if "dgl+manpp@bridge_init=random" in b["methods"]:
        out.append("- EMA initialisation: the copies start equal to the unit (the paper's "
                   "intent); `dgl+manpp@bridge_init=random` starts them freshly initialised "
                   "as the reference code does; see its row in the paired table.")
    for method, runs in heads.items():
        k = len(runs[0]["test_acc"])
        mean = [statistics.mean(r["test_acc"][j] for r in runs) for j in range(k)]
        best = max(range(k - 1), key=lambda j: mean[j])
        out.append(f"- Layer-wise, {method} ({len(runs)} seed(s)): its best head is block "
                   f"{best}'s ({100 * mean[best]:.1f}%), the network itself "
                   f"{100 * mean[-1]:.1f}%"
                   + (": the last block, one unit and a linear classifier, ends below "
                      "the heads before it." if mean[-1] < mean[best] else "."))
    return out


def command(budget: str) -> str:
    return f".venv/bin/python benchmarks/reproduce.py --budget {budget} --workers 2"


def seed_list(text: str) -> List[int]:
    """``--seeds 1,2`` -> [1, 2]."""
    try:
        return [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of "
                                         "integers, e.g. 1,2") from None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", choices=["all", *sorted(BUDGETS)], default="all")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--table-only", action="store_true", help="only rewrite the table")
    ap.add_argument("--layerwise", action="store_true",
                    help="only add the per-block accuracy (heads.json) of finished runs "
                         "whose checkpoint is still in runs/")
    ap.add_argument("--workers", type=int, default=1,
                    help="start this many single-thread trainers (each claims runs)")
    ap.add_argument("--seeds", type=seed_list, default=None,
                    help="train only these seeds, e.g. 1,2 (default: the budget's)")
    ap.add_argument("--only", default=None,
                    help="train only these methods (comma-separated, as in the table)")
    a = ap.parse_args()
    if a.workers < 1:
        ap.error(f"--workers must be >= 1, got {a.workers}")
    known = sorted({s for b in BUDGETS.values() for s in b["seeds"]})
    if a.seeds is not None and not set(a.seeds) <= set(known):
        ap.error(f"--seeds {','.join(map(str, a.seeds))}: the budgets' seeds are {known}")
    if a.layerwise:
        layerwise_missing(a.device)
        a.table_only = True
    if a.workers > 1 and not a.table_only:
        env = dict(os.environ, OMP_NUM_THREADS="1")
        procs = [subprocess.Popen([sys.executable, __file__, "--budget", a.budget,
                                   "--device", a.device]
                                  + (["--seeds", ",".join(map(str, a.seeds))] if a.seeds else [])
                                  + (["--only", a.only] if a.only else []),
                                  env=env) for _ in range(a.workers)]
        for p in procs:
            p.wait()
    elif not a.table_only:
        for budget, method, k, seed in jobs(a.budget):
            if a.seeds is not None and seed not in a.seeds:
                continue
            if a.only is not None and method not in a.only.split(","):
                continue
            if train_one(budget, method, k, seed, a.device):
                write_section(budget, command(budget))
    for budget in (sorted(BUDGETS) if a.budget == "all" else [a.budget]):
        write_section(budget, command(budget))

if __name__ == "__main__":
    main()
