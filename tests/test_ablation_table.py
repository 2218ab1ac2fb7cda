"""benchmarks/ablation_table.py: MAN++ built up step by step, paired seed by seed."""


def test_ablation_steps_are_paired_with_the_step_before(bench_script):
    tab = bench_script("ablation_table")
    by_seed = {"e2e": {0: [90.0], 1: [92.0]}, "dgl": {0: [80.0], 1: [82.0]},
               "dgl+ema": {0: [81.0], 1: [84.0]}, "dgl+man": {0: [85.0], 1: [86.0]}}
    assert tab.ablation_lines(by_seed) == []  # a step missing: no table
    by_seed["dgl+manpp"] = {0: [84.0]}  # one seed so far
    text = "\n".join(tab.ablation_lines(by_seed))
    # EMA: +1 and +2 over DGL; LB: +4, +2 over EMA; scale: -1 over LB on seed 0 only
    assert "| + EMA | `dgl+ema` | 2 | 82.50 +- 2.12 | +1.50 +- 0.71 (within noise, 2 of 2 seeds up) | 0.15 +- 0.07 |" in text
    assert "| + LB | `dgl+man` | 2 | 85.50 +- 0.71 | +3.00 +- 1.41 (within noise, 2 of 2 seeds up) | 0.45 +- 0.07 |" in text
    assert "| + scale (MAN++) | `dgl+manpp` | 1 | 84.00 (one seed) | -1.00 (one seed, no test) | 0.40 (one seed) |" in text
    # the papers' Table VII: shares (14.08 - err) / 7.71 and each step's gain
    assert "| 0.39; +3.01 points |" in text and "| 0.64; +1.96 points |" in text
    assert "| 0.69; +0.36 points |" in text and "| 0 (the base) | 0.00 |" in text
    assert "Order of the means here: `dgl` < `dgl+ema` < `dgl+manpp` < `dgl+man`" in text
