"""The papers' accuracy table on Fashion-MNIST (issue 4, section 4), resumable.

    .venv/bin/python benchmarks/reproduce.py --budget short    # 3 epochs x 20k samples, 3 seeds
    .venv/bin/python benchmarks/reproduce.py --budget long     # E2E/DGL/DGL+MAN++, 6 epochs x 60k
    .venv/bin/python benchmarks/reproduce.py --budget plateau  # the same, 10 epochs x 60k
    .venv/bin/python benchmarks/reproduce.py --budget short8   # the short main rows at K=8
    .venv/bin/python benchmarks/reproduce.py --budget long30   # E2E/DGL/DGL+MAN++, 30 epochs x 60k
    .venv/bin/python benchmarks/reproduce.py --workers 2       # both, in PLAN's order, two
                                                               # single-thread trainers

On a small CPU two single-thread processes train about 1.4x more runs per hour than one
two-thread process; workers claim runs through ``<run>.claim`` files (a claim whose
process is gone is taken over), so any number of them can be started or killed at will.

Each run trains in runs/reproduce/<budget>/<method>_K<k>_s<seed>/ (a normal run directory;
a killed one resumes from its last checkpoint; one stopped by a signal is also parked in
benchmarks/results/parked/ if its checkpoint is small, so that a fresh clone resumes it:
see parked_runs.py); a finished run's config, metrics and summary
are copied to benchmarks/results/reproduce/ (committed), and a run found there is skipped. After every run the
table benchmarks/results/section_reproduce_<budget>.md and its plot are rewritten from
the run directories, so partial results are always current.
"""
from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Tuple

from locallearn import TrainConfig, fit
from locallearn.checkpoint import CHECKPOINT, atomic_write_text
from locallearn.measure.bench import environment
from locallearn.presets import apply_preset

from bench_steps import git_rev  # benchmarks/ is on sys.path
from kept_runs import stoppable
from parked_runs import parking
from ablation_table import ablation_lines
from fidelity_table import fidelity_lines, share_lines
from reproduce_plan import (BUDGETS, RECIPE, RESULTS, finished, jobs, method_list, run_dir,
                            split_variant)
from reproduce_sections import (layerwise_section, line_plot, n_seeds, paired_lines,
                               seeds_plot, why_lines)
from regime_table import regime_lines
from run_claims import SEGMENTS, claim, note_segment, release
from unfinished_runs import read_rows, training_lines, training_series


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


def train_config(b: dict, method: str, k: int, seed: int, device: str,
                 out: Path) -> Tuple[TrainConfig, List[str]]:
    """The TrainConfig of one run of budget ``b``, and what its preset (if any) set."""
    spec, overrides, head_opts = split_variant(method)
    preset = overrides.pop("preset", None)
    recipe = {**RECIPE, **b.get("recipe", {})}
    cfg = TrainConfig(model="resnet32", method=spec, blocks=1 if spec == "e2e" else k,
                      dataset="fashion-mnist", epochs=b["epochs"], seed=seed, device=device,
                      channels_last=True, limit_train=b["limit_train"], head_opts=head_opts,
                      out=str(out), **recipe, **overrides)
    if not preset:
        return cfg, []
    # the preset's details; the budget's recipe (every field set above) stays, and so do
    # the fields the variant sets by hand
    given = {"model", "method", "blocks", "dataset", "epochs", "batch_size", "lr",
             "momentum", "nesterov", "weight_decay", "warmup_epochs", "warmup_start_lr",
             "lr_schedule", "seed", "device", "channels_last", "limit_train", "out",
             *overrides, *(["head_opts"] if head_opts else [])}
    return cfg, apply_preset(cfg, preset, given=given)


def _train(b: dict, budget: str, method: str, k: int, seed: int, device: str,
           out: Path, kept: Path) -> None:
    cfg, said = train_config(b, method, k, seed, device, out)
    if said:
        print("\n".join(said), flush=True)
    print(f"== {budget}: {method} K={cfg.blocks} seed {seed} -> {out}", flush=True)
    with parking(out):  # a fresh clone resumes the run parked by an earlier sitting
        note_segment(out, device)
        # segments.json is already there: a new run is forced into its own directory (force
        # replaces run files only); one with a config.json resumes (or restarts from it)
        started = (out / "config.json").is_file()
        fit(cfg, resume=started, force=not started, progress=True)
    kept.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "metrics.csv", "summary.json", SEGMENTS):
        shutil.copyfile(out / name, kept / name)
    layerwise(out, kept, device)


def _off_default(segment: dict) -> bool:
    """A part of a run trained on a GPU, or on the CPU with more than one thread."""
    machine = segment["machine"]
    return segment["device"] != "cpu" or (
        machine.endswith("thread(s)") and not machine.endswith(" 1 thread(s)"))


def _epochs(first: int, last: int) -> str:
    return f"epoch {last}" if first == last else f"epochs {first}-{last}"


def _segments(budget: str):
    """(method, seed, its segments.json list) of every kept run of a budget."""
    b = BUDGETS[budget]
    for method, k, seed in itertools.product(b["methods"], b["ks"], b["seeds"]):
        path = run_dir(budget, method, k, seed, kept=True) / SEGMENTS
        yield method, seed, json.loads(path.read_text()) if path.is_file() else []


def _trained_when(budget: str) -> str:
    """When the kept runs trained (the tables may be rewritten long after)."""
    dates = sorted(seg["date"] for _, _, segs in _segments(budget) for seg in segs)
    if not dates:
        return ""
    span = f"on {dates[0]}" if dates[0] == dates[-1] else f"from {dates[0]} to {dates[-1]}"
    return f"; the runs trained {span}"


def devices_line(budget: str) -> List[str]:
    """Which kept runs trained (in part) off this CPU, from their segments.json."""
    b, where = BUDGETS[budget], {}
    for method, seed, segs in _segments(budget):
        ends = [s["from_epoch"] for s in segs[1:]] + [b["epochs"]]
        # the parts that trained (a restart of a finished run trains none), the same
        # machine's consecutive parts as one
        spans: List[list] = []
        for seg, end in zip(segs, ends):
            if end <= seg["from_epoch"]:
                continue
            where_on = {key: seg[key] for key in ("device", "machine", "torch", "date")}
            if spans and spans[-1][0] == where_on:
                spans[-1][2] = end
            else:
                spans.append([where_on, seg["from_epoch"], end])
        if not any(_off_default(on) for on, _, _ in spans):
            continue
        parts = ", then ".join(
            f"{_epochs(first + 1, end)} on {on['machine']} (torch {on['torch']}, {on['date']})"
            for on, first, end in spans)
        where.setdefault(parts, []).append(f"`{method}` seed {seed}")
    if not where:
        return []
    return ["", "Trained (in part) on a GPU in a GPU sitting (`benchmarks/gpu_checks.sh`, "
            "`benchmarks/gpu_fidelity.sh` or `benchmarks/gpu_bench.sh`) or on this CPU with "
            "more than one thread (the speed differs, not the math; the other runs: on this "
            "CPU, one thread each): " + "; ".join(
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


def recipe_text(b: dict) -> str:
    r = {**RECIPE, **b.get("recipe", {})}
    warm = (f", {r['warmup_epochs']:g} warm-up epoch(s) from 0.01" if r["warmup_epochs"] else "")
    schedule = "cosine per epoch (the reference's)" if r["lr_schedule"] == "epoch" else "cosine"
    return f"batch {r['batch_size']}, SGD Nesterov lr {r['lr']:g} {schedule}{warm}, wd 1e-4"


def seeds_text(budget: str) -> str:
    """The seeds the budget plans, and which methods train more of them than the rest."""
    planned: Dict[str, List[int]] = {}
    for _, method, _, seed in jobs(budget):
        planned.setdefault(method, []).append(seed)
    sets = [tuple(sorted(set(v))) for v in planned.values()]
    common = list(max(sets, key=sets.count)) if sets else BUDGETS[budget]["seeds"]  # most methods'
    more: Dict[tuple, List[str]] = {}  # the extra seeds -> the methods that train them
    for m, v in planned.items():
        if set(v) > set(common):
            more.setdefault(tuple(sorted(set(v) - set(common))), []).append(f"`{m}`")
    extra = "".join(f"; seeds {_span(list(v))} too for {' and '.join(ms)}" for v, ms in more.items())
    return f"seeds {common}{extra}"


def _span(seeds: List[int]) -> str:
    """[3, 4, 5] -> "3-5" (consecutive), else the list."""
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}-{seeds[-1]}"
    return ", ".join(map(str, seeds))


def write_section(budget: str, command: str) -> None:
    b = BUDGETS[budget]
    lines = [f"## Accuracy on Fashion-MNIST, ResNet-32, budget `{budget}` (issue {b['issues']})", "",
             f"{b['epochs']} epoch(s) on {b['limit_train'] or 60000} training samples, "
             f"{recipe_text(b)}, crop+flip; test on all 10,000 test images; "
             f"{seeds_text(budget)}. Rows still training show the seeds finished so far. Each "
             f"run trains in one process on one CPU thread (`--workers 2`: two side by side) "
             f"unless said otherwise below. "
             "The MAN++ ablation: `dgl+ema` = EMA only, `dgl+man` = EMA + LB, `dgl+manpp` = "
             "EMA + LB + scale; `@channel`: the lightweight per-channel LB; `@key=value`: one "
             "setting changed (a TrainConfig field or a head option), `@preset=NAME`: a "
             "preset's details over the budget's recipe, `,key=value` after it: a field "
             "set back by hand."
             + "".join(f" The `{m}` row is budget `{src}`'s runs (it "
                       f"does not depend on K)." for m, (src, _) in b.get("reuse", {}).items()) + "  ",
             f"Tables written on {datetime.date.today()}, git {git_rev()}, in: "
             f"{json.dumps(environment())}{_trained_when(budget)}.  ", f"Command: `{command}`", "",
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
                rows = read_rows(run)
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
            "runs/)."] + training_lines(budget)) + "\n")
        return
    lines += share_lines(by_seed)
    lines += devices_line(budget) + training_lines(budget, by_seed)
    lines += paired_lines(by_seed)
    lines += fidelity_lines(b, by_seed, RESULTS / "reproduce" / f"{budget}_unfinished",
                            lambda m, s: run_dir(budget, m, b["ks"][0], s).name)
    lines += ablation_lines(by_seed)
    lines += regime_lines(budget)
    if curves:
        series = {}
        for label, runs in curves.items():
            n = min(len(r) for r in runs)
            series[f"{label} ({n_seeds(len(runs))})"] = (
                list(range(1, n + 1)), [statistics.mean(r[e] for r in runs) for e in range(n)])
        training = training_series(budget)
        line_plot({**series, **training}, "epoch", "test accuracy (%)",
                  f"ResNet-32 on Fashion-MNIST ({budget})", RESULTS / f"reproduce_{budget}.png",
                  dashed=training)
        lines += ["", f"![test accuracy per epoch](benchmarks/results/reproduce_{budget}.png)"]
        seeds_plot({m: {s: c[-1] for s, c in v.items()} for m, v in by_seed.items()},
                   f"Final accuracy by seed ({budget})", RESULTS / f"reproduce_{budget}_seeds.png")
        lines += ["", f"![final accuracy by seed](benchmarks/results/reproduce_{budget}_seeds.png)"]
    lines += layerwise_section(budget)
    lines += why_lines(budget, by_seed)
    atomic_write_text(section, "\n".join(lines) + "\n")  # several workers rewrite it


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
    if a.only is not None:
        budgets = sorted(BUDGETS) if a.budget == "all" else [a.budget]
        allowed = sorted({m for b in budgets for m in BUDGETS[b]["methods"]})
        unknown = [m for m in method_list(a.only) if m not in allowed]
        if unknown:
            ap.error(f"--only {','.join(unknown)}: not a method of budget {a.budget}; "
                     f"its methods: {', '.join(allowed)}")
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
        def train_all() -> None:
            for budget, method, k, seed in jobs(a.budget):
                if a.seeds is not None and seed not in a.seeds:
                    continue
                if a.only is not None and method not in method_list(a.only):
                    continue
                if train_one(budget, method, k, seed, a.device):
                    write_section(budget, command(budget))
        code = stoppable(train_all)  # a stop signal: one line (the run checkpointed), no traceback
        if code:
            raise SystemExit(code)
    for budget in (sorted(BUDGETS) if a.budget == "all" else [a.budget]):
        write_section(budget, command(budget))

if __name__ == "__main__":
    main()
