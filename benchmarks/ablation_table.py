"""Issue 15's ablation table: MAN++ built up one step at a time on DGL (none, EMA, EMA +
LB, EMA + LB + scale), each step's gain paired by seed against the step before it, beside
the papers' Table VII (CIFAR-10, ResNet-32, K=16)."""
from __future__ import annotations

import statistics
from typing import Dict, List

from fidelity_table import _final, _mean_sd, _paired, _shares, verdict

# MAN++ Table VII: test error (%) of each step, and E2E's (Table I)
PAPERS_ERROR = {"dgl": 14.08, "dgl+ema": 11.07, "dgl+man": 9.11, "dgl+manpp": 8.75}
PAPERS_E2E_ERROR = 6.37
STEPS = [("none (DGL)", "dgl"), ("+ EMA", "dgl+ema"), ("+ LB", "dgl+man"), ("+ scale (MAN++)", "dgl+manpp")]


def _papers(method: str, before: str) -> str:
    """The papers' share of the gap at this step and the step's gain (points)."""
    err, gap = PAPERS_ERROR[method], PAPERS_ERROR["dgl"] - PAPERS_E2E_ERROR
    gain = f"; {PAPERS_ERROR[before] - err:+.2f} points" if before else ""
    return f"{(PAPERS_ERROR['dgl'] - err) / gap:.2f}{gain}"


def ablation_lines(by_seed: Dict[str, Dict[int, List[float]]]) -> List[str]:
    """The ablation table (empty until E2E and every step have a finished seed)."""
    if not all(m in by_seed for _, m in STEPS) or "e2e" not in by_seed:
        return []
    e2e, dgl = _final(by_seed["e2e"]), _final(by_seed["dgl"])
    out = ["", "### The MAN++ ablation, step by step (issue 15; the papers' Table VII)", "",
           "Each step adds one part of MAN++'s auxiliary head to DGL's; its gain is paired by "
           "seed with the step before it (verdict: two-sided paired t-test at 5%). Share: of "
           "the DGL -> E2E gap, seed by seed. Papers: CIFAR-10 ResNet-32 K=16, share so far; "
           "the step's gain in points of test error.", "",
           "| step | method | seeds | final acc % | gain over the step before, paired (points) "
           "| gap share so far | papers: share so far; gain |", "|---|---|---|---|---|---|---|"]
    before = ""
    for name, method in STEPS:
        acc = _final(by_seed[method])
        if before:
            prev = _final(by_seed[before])
            diffs = [acc[s] - prev[s] for s in sorted(set(acc) & set(prev))]
            if len(diffs) > 1:
                gain = (f"{_mean_sd(diffs, '{:+.2f}')} ({verdict(diffs)}, "
                        f"{sum(d > 0 for d in diffs)} of {len(diffs)} seeds up)")
            else:
                gain = _paired(diffs) if diffs else "-"
            share = _mean_sd(_shares(acc, dgl, e2e))
        else:
            gain, share = "-", "0 (the base)"
        out.append(f"| {name} | `{method}` | {len(acc)} | {_mean_sd(list(acc.values()))} | "
                   f"{gain} | {share} | {_papers(method, before)} |")
        before = method
    steps = {m: statistics.mean(_final(by_seed[m]).values()) for _, m in STEPS}
    ranked = " < ".join(f"`{m}`" for m in sorted(steps, key=steps.get))
    out += ["", f"Order of the means here: {ranked} (the papers': each step above the one "
                "before)."]
    return out
