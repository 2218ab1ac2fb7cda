"""Issue 15's regime question: does the share of the DGL -> E2E gap that DGL+MAN++ closes
grow when the same recipe trains longer? A budget that names a ``shorter`` one (long30:
plateau) is compared with it seed by seed: the same seed gives both the same initial
backbone, so the gap, the share and each method's gain from the longer schedule pair up.
"""
from __future__ import annotations

import csv
import statistics
from typing import Dict, List

from fidelity_table import _mean_sd
from reproduce_plan import BUDGETS, finished, run_dir

METHODS = ("e2e", "dgl", "dgl+manpp")


def finals(budget: str) -> Dict[str, Dict[int, float]]:
    """Final test accuracy (%) of each of METHODS' finished runs of ``budget``, by seed."""
    b, out = BUDGETS[budget], {}
    for method in METHODS:
        for seed in b["seeds"]:
            k = b["ks"][0]
            if not finished(budget, method, k, seed):
                continue
            with open(run_dir(budget, method, k, seed, kept=True) / "metrics.csv") as f:
                rows = list(csv.DictReader(f))
            out.setdefault(method, {})[seed] = 100 * float(rows[-1]["test_acc"])
    return out


def _cell(v: Dict[str, float], m: str) -> str:
    return f"{v[m]:.2f}" if m in v else "-"


def _gap_share(v: Dict[str, float]) -> tuple:
    gap = v["e2e"] - v["dgl"] if {"e2e", "dgl"} <= v.keys() else None
    share = ((v["dgl+manpp"] - v["dgl"]) / gap if gap and "dgl+manpp" in v else None)
    return gap, share


def regime_lines(budget: str, long: Dict[str, Dict[int, float]] | None = None,
                 short: Dict[str, Dict[int, float]] | None = None) -> List[str]:
    """The longer budget beside its ``shorter`` one, seed by seed (empty unless the budget
    names one and both have E2E and DGL finished for a common seed). ``long``/``short``
    default to the kept runs (tests pass their own)."""
    shorter = BUDGETS[budget].get("shorter")
    if shorter is None:
        return []
    long = finals(budget) if long is None else long
    short = finals(shorter) if short is None else short
    seeds = sorted(s for s in BUDGETS[budget]["seeds"]
                   if all(s in d.get(m, {}) for d in (long, short) for m in ("e2e", "dgl")))
    if not seeds:
        return []
    ep = {n: BUDGETS[n]["epochs"] for n in (shorter, budget)}
    lines = ["", f"### Longer schedule: the gap at {ep[shorter]} and {ep[budget]} epochs "
                 "(issue 15)", "",
             f"Same recipe and seeds, budget `{shorter}` ({ep[shorter]} epochs) against "
             f"`{budget}` ({ep[budget]} epochs); gap = E2E - DGL (points), share = "
             "(DGL+MAN++ - DGL) / gap. \"-\": not finished yet.", "",
             "| seed | epochs | E2E | DGL | DGL+MAN++ | gap | share |", "|---|---|---|---|---|---|---|"]
    gaps: Dict[str, List[float]] = {shorter: [], budget: []}
    shares: Dict[str, List[float]] = {shorter: [], budget: []}
    for seed in seeds:
        for name, data in ((shorter, short), (budget, long)):
            v = {m: data[m][seed] for m in METHODS if seed in data.get(m, {})}
            gap, share = _gap_share(v)
            gaps[name].append(gap)
            if share is not None:
                shares[name].append(share)
            lines.append(f"| {seed} | {ep[name]} | {_cell(v, 'e2e')} | {_cell(v, 'dgl')} | "
                         f"{_cell(v, 'dgl+manpp')} | {gap:.2f} | "
                         f"{'-' if share is None else f'{share:.2f}'} |")
    gains = {m: [long[m][s] - short[m][s] for s in seeds if s in long.get(m, {})
                 and s in short.get(m, {})] for m in METHODS}
    said = "; ".join(f"{m} {_mean_sd(g, '{:+.2f}')}" for m, g in gains.items() if g)
    lines += ["", f"From {ep[shorter]} to {ep[budget]} epochs (points, paired by seed): {said}. "
                  f"The gap goes from {_mean_sd(gaps[shorter])} to {_mean_sd(gaps[budget])} "
                  "points"
              + (f"; the share from {_mean_sd(shares[shorter])} to {_mean_sd(shares[budget])}"
                 if shares[budget] else
                 f"; the share at {ep[budget]} epochs waits for DGL+MAN++")
              + (" (the papers' 0.69 is after 400 epochs on CIFAR-10)." if shares[budget]
                 else ".")]
    if len(gaps[budget]) == 1:
        lines[-1] += " One seed so far: no spread, no test."
    return lines
