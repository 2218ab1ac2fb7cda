"""The demo (``locallearn demo``): its picture, its rows, its reruns, on a tiny budget."""
import csv
import struct
from pathlib import Path

import numpy as np
import pytest

from locallearn.data.idx import FILES
from locallearn.demo import STEPS_FILE, eval_steps, run_demo
from locallearn.errors import ConfigError
from locallearn.plots import plot_demo

N_TRAIN, N_TEST, BLOCKS = 384, 128, 2  # batch 128: 3 steps an epoch


def _idx(path: Path, a: np.ndarray) -> None:
    magic = 2051 if a.ndim == 3 else 2049
    path.write_bytes(struct.pack(">I", magic) + struct.pack(f">{a.ndim}I", *a.shape)
                     + a.astype(np.uint8).tobytes())


@pytest.fixture
def fmnist(tmp_path: Path) -> str:
    """A tiny Fashion-MNIST look-alike (IDX files, 28x28, 10 classes) that can be learned:
    class c is a bright bar at row 2c + 3 on noise."""
    rng = np.random.default_rng(0)
    d = tmp_path / "fmnist"
    d.mkdir()
    arrays = []
    for n in (N_TRAIN, N_TEST):
        y = np.arange(n) % 10
        x = rng.integers(0, 60, (n, 28, 28))
        for i, c in enumerate(y):
            x[i, 2 * c + 3: 2 * c + 5, 4:24] = 230
        arrays += [x, y]
    for name, a in zip(FILES, arrays):
        _idx(d / name, a)
    return str(d)


def test_eval_steps_spread_over_each_epoch():
    assert eval_steps(78, 2) == [26, 52, 78, 104, 130, 156]  # the default demo's
    assert eval_steps(78, 2, per_epoch=4) == [20, 39, 58, 78, 98, 117, 136, 156]
    assert eval_steps(2, 2) == [1, 2, 3, 4]  # fewer steps than points: every step
    assert eval_steps(1, 3) == [1, 2, 3]


def test_block_accuracy_uses_heads_with_class_scores(tmp_path, fmnist):
    """A head with class scores (greedy) is read as it is; only the others get a probe."""
    import torch

    from locallearn.config import TrainConfig
    from locallearn.data import load_dataset
    from locallearn.demo import _block_accuracy, _net_from_checkpoint
    from locallearn.evaluate import evaluate_heads
    from locallearn.train import fit

    cfg = TrainConfig(model="resnet32", method="greedy", blocks=2, dataset="fashion-mnist",
                      data_dir=fmnist, epochs=1, limit_train=N_TRAIN, limit_test=N_TEST,
                      device="cpu", out=str(tmp_path / "run")).validate()
    summary = fit(cfg, progress=False)
    data = load_dataset("fashion-mnist", data_dir=fmnist, limit_train=N_TRAIN,
                        limit_test=N_TEST)
    dev = torch.device("cpu")
    heads, accs, kinds = _block_accuracy(Path(cfg.out), data, dev, 0, summary["final_test_acc"])
    assert kinds == ["head", "network"]
    net, _ = _net_from_checkpoint(Path(cfg.out), data, dev)
    assert heads == accs == pytest.approx(evaluate_heads(net, data.test_batches(512, dev), dev))
    assert heads[-1] == pytest.approx(summary["final_test_acc"])


def test_demo_tells_the_story(tmp_path, fmnist, capsys):
    out = tmp_path / "demo"
    rows = run_demo(out=out, epochs=2, limit_train=N_TRAIN, limit_test=N_TEST, blocks=BLOCKS,
                    device="cpu", data_dir=fmnist, progress=False)
    printed = capsys.readouterr().out
    png = out / "demo.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"plot: {png}" in printed and "act. saved" in printed

    e2e, local = rows
    assert (e2e["method"], e2e["K"]) == ("e2e", 1)
    assert (local["method"], local["K"]) == ("infopro+manpp", BLOCKS)
    for r in rows:
        # more than two points: every step here (3 steps an epoch, 3 points an epoch)
        assert [s for s, _ in r["curve"]] == [1, 2, 3, 4, 5, 6]
        assert all(0.0 <= a <= 1.0 for _, a in r["curve"])
        # the curve ends at the run's final accuracy (fit's own evaluation)
        assert r["curve"][-1][1] == pytest.approx(r["test_acc"])
        with open(out / r["method"].replace("+", "_") / STEPS_FILE) as f:
            saved = [(int(x["step"]), float(x["test_acc"])) for x in csv.DictReader(f)]
        assert saved == r["curve"]  # floats written as repr: read back exactly
    # each block's own head, the last one the network itself: the recipe's InfoPro heads
    # are contrastive (no class scores), so the first block is read by a linear probe
    assert len(local["head_acc"]) == BLOCKS and local["head_acc"][0] is None
    assert local["head_acc"][-1] == pytest.approx(local["test_acc"])
    assert local["block_acc_from"] == ["probe"] * (BLOCKS - 1) + ["network"]
    assert len(local["block_acc"]) == BLOCKS
    assert all(0.0 <= a <= 1.0 for a in local["block_acc"])
    assert local["block_acc"][-1] == local["head_acc"][-1]
    # the probe learns the bars of this data far above chance (10 classes)
    assert local["block_acc"][0] > 0.5
    assert e2e["head_acc"] == e2e["block_acc"] == [e2e["test_acc"]]
    # the saving (small at K=2: the equal split puts the full-resolution stage and its
    # reconstruction head in the first block; the default K=8 saves about half)
    assert e2e["activation_saving"] == 0.0 and e2e["total_saving"] == 0.0
    assert 0.0 < local["activation_saving"] < 1.0
    assert local["total_saving"] > 0.0
    assert local["activation_mb"] < e2e["activation_mb"]
    assert local["activation_saving"] == pytest.approx(
        1 - local["activation_mb"] / e2e["activation_mb"])

    # a rerun reuses the finished runs and their curves: the same numbers, no new training
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/checkpoint.pt")}
    again = run_demo(out=out, epochs=2, limit_train=N_TRAIN, limit_test=N_TEST, blocks=BLOCKS,
                     device="cpu", data_dir=fmnist, progress=False)
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/checkpoint.pt")} == stamps
    for a, b in zip(rows, again):
        assert a["curve"] == b["curve"] and a["test_acc"] == b["test_acc"]
        assert a["block_acc"] == pytest.approx(b["block_acc"])

    # another budget in the same folder is refused before any training
    with pytest.raises(ConfigError, match="epochs=2"):
        run_demo(out=out, epochs=3, limit_train=N_TRAIN, limit_test=N_TEST, blocks=BLOCKS,
                 device="cpu", data_dir=fmnist, progress=False)


def test_plot_demo_draws_the_three_panels(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from locallearn import plots

    figs = []
    close = plt.close
    monkeypatch.setattr(plots.plt, "close", figs.append)  # keep the figure to look at
    path = tmp_path / "d.png"
    plot_demo({"e2e K=1": [(10, 0.5), (20, 0.7), (30, 0.8)],
               "infopro+manpp K=4": [(10, 0.4), (20, 0.65), (30, 0.75)]},
              {"e2e K=1": {"activation_mb": 100.0, "total_mb": 120.0},
               "infopro+manpp K=4": {"activation_mb": 30.0, "total_mb": 60.0}},
              [0.5, 0.6, None, 0.65], ("e2e K=1", 0.7), path, title="t", steps_per_epoch=10,
              heads_label="infopro+manpp K=4", kinds=["probe", "head", "head", "network"])
    try:
        assert path.is_file() and path.stat().st_size > 10_000
        ax_acc, ax_mem, ax_heads = figs[0].axes
        curves = [ln for ln in ax_acc.lines if len(ln.get_xdata()) == 3]
        assert [list(ln.get_ydata()) for ln in curves] == [[50, 70, 80], [40, 65, 75]]
        assert sorted(p.get_height() for p in ax_mem.patches) == [30, 60, 100, 120]
        texts = [t.get_text() for t in ax_mem.texts]
        assert "30 MB\n-70%" in texts and "60 MB\n-50%" in texts  # the saving on the bar
        bars = sorted((round(p.get_x() + p.get_width() / 2, 6), p.get_height())
                      for p in ax_heads.patches)
        assert bars == [(1, 50), (2, 60), (3, 0), (4, 65)]  # one bar per block, in %
        hatched = [round(p.get_x() + p.get_width() / 2) for p in ax_heads.patches
                   if p.get_hatch()]
        assert hatched == [1]  # block 1's accuracy is a probe's: drawn apart
        assert [t.get_text() for t in ax_heads.texts] == ["50", "60", "n/a", "65"]
        assert [ln.get_ydata()[0] for ln in ax_heads.lines] == [70]  # E2E's final accuracy
    finally:
        for fig in figs:
            close(fig)
