"""Analysis: CKA, linear probes, Grad-CAM, and the `analyze` / `compare` commands."""
import json
import shutil

import pytest
import torch
from torch import nn

from locallearn import TrainConfig
from locallearn.analysis import (MinibatchCKA, analyze_run, grad_cam, hsic_unbiased, linear_cka,
                                 localnet_gradcam, pool, train_probe)
from locallearn.cli import main
from locallearn.errors import ConfigError
from locallearn.train import fit


# ---- CKA -------------------------------------------------------------------------------
def test_cka_of_a_representation_with_itself_and_an_orthogonal_transform_is_one():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 32, generator=g)
    q, _ = torch.linalg.qr(torch.randn(32, 32, generator=g, dtype=torch.float64))
    assert linear_cka(x, x, batch_size=64) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, (x.double() @ q).float(), batch_size=64) == pytest.approx(1.0, abs=1e-6)
    # isotropic scaling and a shift of every feature change nothing either
    assert linear_cka(x, 3 * x + 5, batch_size=64) == pytest.approx(1.0, abs=1e-9)


def test_cka_with_independent_noise_is_near_zero():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(512, 32, generator=g)
    noise = torch.randn(512, 32, generator=g)
    assert abs(linear_cka(x, noise, batch_size=64)) < 0.03
    # half signal, half noise sits in between
    mixed = torch.cat([x[:, :16], noise[:, :16]], 1)
    assert 0.3 < linear_cka(x, mixed, batch_size=64) < 0.8


def test_minibatch_cka_matrix_of_maps():
    g = torch.Generator().manual_seed(2)
    acc = MinibatchCKA(2, 3)
    for _ in range(4):
        a = torch.randn(16, 2, 4, 4, generator=g)
        xs = [a, torch.randn(16, 5, generator=g)]
        ys = [a.flip(1), torch.randn(16, 3, 2, 2, generator=g), a * 2]
        acc.update(xs, ys)
    m = acc.compute()
    assert m.shape == (2, 3)
    assert m[0, 0] == pytest.approx(1.0) and m[0, 2] == pytest.approx(1.0)  # a channel permutation
    assert abs(float(m[1, 0])) < 0.2 and abs(float(m[1, 1])) < 0.2
    with pytest.raises(ValueError, match="at least 4"):
        hsic_unbiased(torch.eye(3), torch.eye(3))


# ---- probes ----------------------------------------------------------------------------
def test_probe_separates_linearly_separable_features_and_not_noise():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(16, 4, generator=g)
    x = torch.randn(600, 16, generator=g) * 5 + 3  # standardisation undoes scale and shift
    y = (x @ w).argmax(1)
    r = train_probe(x[:400], y[:400], x[400:], y[400:], 4)
    assert r["train_acc"] > 0.95 and r["test_acc"] > 0.9
    assert train_probe(x[:400], y[:400], x[400:], y[400:], 4) == r  # deterministic
    noise = torch.randint(0, 4, (600,), generator=g)
    r = train_probe(x[:400], noise[:400], x[400:], noise[400:], 4)
    assert r["test_acc"] < 0.4  # chance is 0.25


def test_pool_maps_and_tokens():
    assert pool(torch.ones(2, 3, 4, 4) * torch.arange(3.).view(1, 3, 1, 1)).tolist() == \
        [[0.0, 1.0, 2.0]] * 2
    assert pool(torch.arange(12.).view(1, 3, 4), "tokens").tolist() == [[4.0, 5.0, 6.0, 7.0]]


# ---- Grad-CAM --------------------------------------------------------------------------
def test_gradcam_peaks_where_the_class_evidence_is():
    # channel 0 fires on bright pixels, channel 1 on dark ones; class c = mean of channel c.
    # The image is bright only in one region: class 0's Grad-CAM must peak there, class 1's
    # everywhere else.
    conv = nn.Conv2d(1, 2, 1, stride=2)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
        conv.bias.copy_(torch.tensor([-0.5, 0.5]))
    g = torch.Generator().manual_seed(0)
    x = 0.2 + 0.05 * torch.rand(3, 1, 16, 16, generator=g)
    region = torch.zeros(16, 16, dtype=torch.bool)
    region[4:10, 8:14] = True
    x[:, :, region] = 0.9
    a = torch.relu(conv(x))
    logits = a.mean((2, 3))
    for cls, inside in ((0, True), (1, False)):
        cam = grad_cam(a, logits[:, cls], (16, 16))
        assert cam.shape == (3, 16, 16) and cam.min() >= 0 and cam.max() <= 1
        hot, cold = (region, ~region) if inside else (~region, region)
        assert (cam[:, hot].mean() > 0.8) and (cam[:, cold].mean() < 0.2), cls
        peaks = cam.flatten(1).argmax(1)
        assert all(hot.flatten()[p] for p in peaks)


def test_gradcam_of_tokens_uses_the_patch_grid():
    a = torch.zeros(1, 1 + 16, 3)
    a[0, 1 + 5, 0] = 1.0  # one patch token (row 1, col 1) carries the evidence
    a.requires_grad_(True)
    cam = grad_cam(a, a[:, 1:, 0].sum(1), (8, 8), layout="tokens")
    assert cam.shape == (1, 8, 8)
    assert divmod(int(cam.flatten().argmax()), 8) in {(2, 2), (2, 3), (3, 2), (3, 3)}


# ---- runs and the CLI ------------------------------------------------------------------
def _fit(out, dataset="synthetic:1x8x8:4", **kw):
    base = dict(model="resnet20", method="dgl+manpp", blocks=3, dataset=dataset, epochs=1,
                batch_size=16, limit_train=64, limit_test=32, device="cpu", out=str(out), seed=0)
    base.update(kw)
    return fit(TrainConfig(**base), progress=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    torch.set_num_threads(1)
    _fit(root / "local")
    _fit(root / "e2e", method="e2e", blocks=1)
    return root


def test_localnet_gradcam_gives_one_map_per_head_and_the_classifier(runs):
    from locallearn.train import load_run

    _, net, data = load_run(runs / "local")
    x, y = next(iter(data.test_batches(4, torch.device("cpu"))))
    names, maps, notes = localnet_gradcam(net.eval(), x, y)
    assert names == ["head 0", "head 1", "final"] and notes == {}
    assert maps.shape == (4, 3, 8, 8) and maps.min() >= 0 and maps.max() <= 1
    # normalised per image: peak 1, or 0 everywhere where no channel is positive evidence
    peaks = maps.flatten(2).max(2).values
    assert ((peaks == 1) | (peaks == 0)).all() and (peaks == 1).float().mean() >= 0.5


def test_analyze_writes_the_files_it_names(runs, tmp_path, capsys):
    out = tmp_path / "ana"
    args = ["analyze", "--run", str(runs / "local"), "--against", str(runs / "e2e"), "--out",
            str(out), "--samples", "64", "--images", "4", "--batch-size", "16", "--device",
            "cpu", "--no-progress"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    for name in ("analysis.json", "probes.png", "cka.png", "gradcam.png"):
        assert f"wrote {out / name}" in printed
        assert (out / name).read_bytes()[:4] == (b"\x89PNG" if name.endswith("png") else b"{\n  ")
    r = json.loads((out / "analysis.json").read_text())
    assert [b["end_unit"] for b in r["block_rows"]] == [2, 5, 9]
    assert all(0.5 < b["probe_test_acc"] <= 1 for b in r["block_rows"])  # chance: 0.25
    summary = json.loads((runs / "local" / "summary.json").read_text())
    # the last block's predictor is the network: its accuracy is the run's own
    assert r["block_rows"][-1]["head"] == pytest.approx(summary["final_test_acc"])
    assert len(r["probes"]) == 10 and len(r["cka"]["matrix"]) == 10
    assert [m["against_unit"] for m in r["cka"]["matching"]] == [2, 5, 9]
    assert r["cka"]["matched_by"] == "unit index"
    assert all(-0.1 < m["cka"] <= 1 + 1e-9 for m in r["cka"]["matching"])
    assert r["gradcam"]["methods"] == ["head 0", "head 1", "final"]
    # another analysis into the same --out needs --force (said before any work)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already exists; pass --force" in err


def test_analyze_into_the_run_dir_replaces_its_own_analysis(runs):
    for _ in range(2):
        r = analyze_run(runs / "e2e", samples=32, images=2, batch_size=16)
    assert (runs / "e2e" / "analysis.json").is_file() and (runs / "e2e" / "cka.png").is_file()
    m = torch.tensor(r["cka"]["matrix"])
    assert torch.allclose(m.diagonal(), torch.ones(10, dtype=m.dtype))  # itself, no --against
    assert r["cka"]["matching"] is None and r["gradcam"]["methods"] == ["final"]


def test_analyze_refuses_runs_of_another_shape(runs, tmp_path, capsys):
    _fit(tmp_path / "big", dataset="synthetic:1x12x12:4", method="e2e", blocks=1)
    code = main(["analyze", "--run", str(runs / "local"), "--against", str(tmp_path / "big"),
                 "--out", str(tmp_path / "x"), "--device", "cpu", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert str(runs / "local") in err and str(tmp_path / "big") in err
    assert "differ in dataset" in err or "differ in input" in err
    with pytest.raises(ConfigError, match="samples >= 8"):
        analyze_run(runs / "local", samples=2)


def test_compare_writes_figure_and_table_and_refuses_other_tasks(runs, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", str(runs / "local"), str(runs / "e2e"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert (out / "compare.png").read_bytes()[:4] == b"\x89PNG"
    table = (out / "compare.md").read_text()
    assert table.strip() in printed
    lines = table.strip().splitlines()
    assert len(lines) == 4 and "| local | resnet20 | dgl+manpp | 3 |" in lines[2]
    acc = json.loads((runs / "local" / "summary.json").read_text())["final_test_acc"]
    assert f"{100 * acc:.2f}" in lines[2]
    assert "not recorded" in lines[2]  # a CPU run has no peak-memory figure
    assert main(["compare", str(runs / "e2e"), "--out", str(out)]) == 2  # files exist
    assert "already exists" in capsys.readouterr().err
    seg = tmp_path / "seg"
    shutil.copytree(runs / "e2e", seg)
    s = json.loads((seg / "summary.json").read_text())
    (seg / "summary.json").write_text(json.dumps({**s, "task": "segmentation"}))
    assert main(["compare", str(runs / "e2e"), str(seg), "--out", str(tmp_path / "c2")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "differ in task: classification vs segmentation" in err
    assert main(["compare", str(tmp_path), "--out", str(tmp_path / "c3")]) == 2
    assert "no summary.json" in capsys.readouterr().err
