"""Runs of a reproduce budget that are still training (a sitting may end mid-run; the next
one resumes it from its checkpoint in runs/, or parked in the repository): where each
stands, against the finished runs of the same seed at the same epoch, and its curve so far
for the per-epoch plot."""
from __future__ import annotations

import csv
import itertools
from pathlib import Path
from typing import Dict, List, NamedTuple

from locallearn.checkpoint import CHECKPOINT
from parked_runs import parked_dir  # benchmarks/ is on sys.path
from reproduce_plan import BUDGETS, finished, run_dir


class Unfinished(NamedTuple):
    method: str
    k: int
    seed: int
    accs: List[float]  # test accuracy (%) after each epoch trained so far
    seconds: float  # the last epoch's wall time: the pace for what is left
    parked: bool = False  # a copy is parked in the repository: a fresh clone resumes it


def read_rows(run: Path) -> List[Dict[str, float]]:
    """A run's metrics.csv, one dict of floats per epoch."""
    with open(run / "metrics.csv") as f:
        return [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]


def unfinished(budget: str) -> List[Unfinished]:
    """Every planned run of the budget with at least one epoch in runs/ and not kept as
    finished, in the budget's order."""
    b, out = BUDGETS[budget], []
    for k, method, seed in itertools.product(b["ks"], b["methods"], b["seeds"]):
        run = run_dir(budget, method, k, seed)
        there = parked_dir(run)
        if there is not None and not (run / "metrics.csv").is_file():
            run = there  # a fresh clone: the copy an earlier sitting parked
        rows = read_rows(run) if (run / "metrics.csv").is_file() else []
        if rows and not finished(budget, method, k, seed):
            out.append(Unfinished(method, k, seed, [100 * r["test_acc"] for r in rows],
                                  rows[-1]["seconds"],
                                  there is not None and (there / CHECKPOINT).is_file()))
    return out


def _same_epoch(run: Unfinished, by_seed: Dict[str, Dict[int, List[float]]]) -> str:
    """The finished runs of the same seed at the same epoch: the same schedule has the same
    learning rate there, so these (unlike their final accuracies) compare with it."""
    epoch = len(run.accs)
    others = [f"{m} {accs[epoch - 1]:.2f}" for m, seeds in by_seed.items()
              for s, accs in seeds.items() if s == run.seed and m != run.method and len(accs) >= epoch]
    return f" (seed {run.seed}'s finished runs at epoch {epoch}: {', '.join(others)})" if others else ""


def _left(run: Unfinished, epochs: int) -> str:
    """The time left at the last epoch's pace, to plan the sittings that finish it."""
    hours = (epochs - len(run.accs)) * run.seconds / 3600
    return f", ~{hours:.1f} h left at its last epoch's pace" if hours > 0 else ""


def training_lines(budget: str, by_seed: Dict[str, Dict[int, List[float]]] | None = None) -> List[str]:
    """Where each unfinished run stands, so the committed section shows the progress too.
    ``by_seed[method][seed]``: the finished runs' accuracy (%) after each epoch."""
    b, runs = BUDGETS[budget], unfinished(budget)
    now = [f"`{r.method}` seed {r.seed}: epoch {len(r.accs)} of {b['epochs']}, {r.accs[-1]:.2f}%"
           + _same_epoch(r, by_seed or {}) + _left(r, b["epochs"])
           + (", parked" if r.parked else "") for r in runs]
    return (["", "Not finished when this was written (each resumes from its checkpoint in "
             "runs/, or on a fresh clone from its copy in benchmarks/results/parked/ where it "
             "says \"parked\", else it starts over there; a mid-schedule accuracy is not "
             "comparable with a final one, only with the same epoch of the same schedule): "
             + "; ".join(now) + "."] if now else [])


def training_series(budget: str) -> Dict[str, tuple]:
    """The unfinished runs' curves for ``line_plot`` (drawn dashed), one per run."""
    epochs = BUDGETS[budget]["epochs"]
    return {f"{r.method} K={1 if r.method == 'e2e' else r.k} seed {r.seed} (training, "
            f"{len(r.accs)} of {epochs} epochs)": (list(range(1, len(r.accs) + 1)), r.accs)
            for r in unfinished(budget)}
