"""benchmarks/regime_table.py: a longer budget against its shorter one, seed by seed."""


def test_regime_pairs_gap_share_and_gains_by_seed(bench_script):
    tab = bench_script("regime_table")
    short = {"e2e": {0: 93.0, 1: 93.5}, "dgl": {0: 91.0, 1: 91.5}, "dgl+manpp": {0: 91.5, 1: 92.5}}
    long = {"e2e": {0: 94.0}, "dgl": {0: 93.0}}
    assert tab.regime_lines("plateau", long, short) == []  # plateau names no shorter budget
    assert tab.regime_lines("long30", {"e2e": {0: 94.0}}, short) == []  # no DGL: nothing paired
    text = "\n".join(tab.regime_lines("long30", long, short))
    assert "| 0 | 10 | 93.00 | 91.00 | 91.50 | 2.00 | 0.25 |" in text
    assert "| 0 | 30 | 94.00 | 93.00 | - | 1.00 | - |" in text
    assert "| 1 |" not in text  # seed 1 has no long run yet
    assert "e2e +1.00 (one seed); dgl +2.00 (one seed)." in text
    assert "waits for DGL+MAN++" in text and "One seed so far" in text
    long = {"e2e": {0: 94.0, 1: 94.5}, "dgl": {0: 93.0, 1: 93.0},
            "dgl+manpp": {0: 93.5, 1: 94.0}}
    text = "\n".join(tab.regime_lines("long30", long, short))
    # gaps 2.00, 2.00 -> 1.00, 1.50; shares 0.25, 0.50 -> 0.50, 0.67
    assert "The gap goes from 2.00 +- 0.00 to 1.25 +- 0.35 points" in text
    assert "the share from 0.38 +- 0.18 to 0.58 +- 0.12" in text
    assert "dgl+manpp +1.75 +- 0.35" in text and "One seed so far" not in text

