"""The parts of a reproduce.py section below its accuracy table: MAN++ against its base
paired by seed, the layer-wise accuracy of each block's head, and the checks for why
MAN++ does or does not beat DGL; plus the line plot they share."""
from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Dict, Iterable, List

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from locallearn import TrainConfig  # noqa: E402

from fidelity_table import rejects_zero  # noqa: E402  (benchmarks/ is on sys.path)
from kept_runs import read_heads  # noqa: E402
from reproduce_plan import BUDGETS, RECIPE, RESULTS, run_dir  # noqa: E402


def n_seeds(n: int) -> str:
    """3 -> "3 seeds", 1 -> "1 seed"."""
    return f"{n} seed{'' if n == 1 else 's'}"


def line_plot(series: Dict[str, tuple], xlabel: str, ylabel: str, title: str, path: Path,
              dashed: Iterable[str] = ()) -> None:
    """One line per label, distinct colours (tab20), the legend beside the axes; the labels
    in ``dashed`` (runs still training) drawn dashed."""
    dashed = set(dashed)
    fig, ax = plt.subplots(figsize=(10, 4.8))
    colors = plt.get_cmap("tab20").colors
    for i, (label, (x, y)) in enumerate(series.items()):
        ax.plot(x, y, marker="x" if label in dashed else "o",
                linestyle="--" if label in dashed else "-",
                color=colors[(2 * i) % 20 + (i // 10) % 2], label=label)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def seeds_plot(finals: Dict[str, Dict[int, float]], title: str, path: Path) -> None:
    """Each method's final accuracy, one dot per seed and a bar at the mean: the seed noise
    that every difference in the tables is judged against, at a glance."""
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(finals) + 1.4))
    names = list(finals)[::-1]  # the table's first row on top
    for y, name in enumerate(names):
        accs = list(finals[name].values())
        ax.scatter(accs, [y] * len(accs), color="tab:blue", alpha=0.7, zorder=3)
        ax.plot([statistics.mean(accs)] * 2, [y - 0.3, y + 0.3], color="black", lw=2)
    ax.set_yticks(range(len(names)), [f"{n} ({n_seeds(len(finals[n]))})" for n in names],
                  fontsize=8)
    ax.set(xlabel="final test accuracy (%): a dot per seed, a bar at the mean", title=title)
    ax.grid(axis="x", alpha=0.3)
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
            kept = read_heads({s: run_dir(budget, method, k, s, kept=True) for s in b["seeds"]})
            for seed, heads in kept.items():
                out.setdefault(method, []).append(dict(heads, seed=seed))
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
        series[f"{method} ({n_seeds(len(runs))})"] = (list(range(k)), means)
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
    out = ["", "Checks for why DGL+MAN++ does or does not beat DGL at this budget:", "",
           "- Loss weights: DGL and DGL+MAN++ train every block on the same unweighted "
           "cross-entropy of its head; there is no weight that differs between them.",
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
