"""Issue 16 item 5: the per-block optimizer choice (SGD / AdamW) and per-block gradient
clipping, in the library, the CLI and a resume."""
from __future__ import annotations

import copy
import json
import re

import pytest
import torch
import torch.nn.functional as F

from locallearn import LocalNet, TrainConfig, fit
from locallearn.checkpoint import load_checkpoint
from locallearn.cli import main
from locallearn.nets.cifar_resnet import CifarResNet
from locallearn.optim import BlockOptimizers

DS = "synthetic:3x16x16:4"


def _batch(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(8, 3, 16, 16, generator=g), torch.randint(0, 10, (8,), generator=g)


def _net(k: int, method: str, seed: int = 0) -> LocalNet:
    torch.manual_seed(seed)
    return LocalNet(CifarResNet(8, num_classes=10), k, method, image_size=(16, 16))


def test_k1_adamw_equals_plain_torch_adamw():
    """Two steps (the lr changed between them by set_lr) match torch.optim.AdamW on a copy."""
    net = _net(1, "e2e")
    plain = copy.deepcopy(net.model)
    cfg = TrainConfig(optimizer="adamw", lr=1e-3, weight_decay=0.05)
    opt = BlockOptimizers(net, cfg)
    assert isinstance(opt.opts[0], torch.optim.AdamW)
    ref = torch.optim.AdamW(plain.parameters(), lr=1e-3, weight_decay=0.05)
    for step, lr in enumerate((1e-3, 5e-4)):
        x, y = _batch(step)
        opt.set_lr(lr)
        for g in ref.param_groups:
            g["lr"] = lr
        losses = net.train_step(x, y, after_block=opt.after_block)
        opt.finish()
        ref.zero_grad(set_to_none=True)
        ref_loss = F.cross_entropy(plain(x), y)
        ref_loss.backward()
        ref.step()
        assert torch.allclose(losses[-1], ref_loss.detach(), atol=1e-6), (losses, ref_loss)
    for (n, p), q in zip(net.model.named_parameters(), plain.parameters()):
        assert torch.allclose(p, q, atol=1e-6), n
    # the steps did move the weights (AdamW: about lr per element), not a no-op match
    start = _net(1, "e2e").model
    moved = max((p - q).abs().max().item()
                for p, q in zip(net.model.parameters(), start.parameters()))
    assert moved > 1e-4


def _clipped_step(clip: float):
    """One SGD step (no momentum / decay: update = lr * grad) of K=2 DGL with ``clip``;
    returns (weights before, the net after, each block's grads and their norm before the
    step)."""
    net = _net(2, "dgl")
    before = copy.deepcopy(net)
    cfg = TrainConfig(lr=0.1, momentum=0.0, nesterov=False, weight_decay=0.0,
                      clip_grad_norm=clip)
    opt = BlockOptimizers(net, cfg)
    grads, norms = {}, {}

    def after_block(j: int) -> None:
        ps = net.block_parameters(j)
        for p in ps:
            grads[id(p)] = p.grad.detach().clone()
        norms[j] = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in ps)).item()
        opt.after_block(j)

    x, y = _batch()
    net.train_step(x, y, after_block=after_block)
    opt.finish()
    return before, net, grads, norms


def test_clipping_is_per_block_before_the_step():
    before, net, grads, norms = _clipped_step(0.01)
    assert norms[0] > 0.01 and norms[1] > 0.01  # both blocks are clipped
    assert abs(norms[0] / norms[1] - 1) > 0.05  # one global norm would scale them alike
    old = dict(zip((id(p) for p in net.parameters()), before.parameters()))
    for j in range(net.k):
        scale = min(1.0, 0.01 / (norms[j] + 1e-6))  # torch's clip_grad_norm_ coefficient
        for p in net.block_parameters(j):
            want = old[id(p)] - 0.1 * grads[id(p)] * scale
            assert torch.allclose(p, want, atol=1e-6), (j, p.shape)
    # without clipping the same step lands elsewhere
    _, free, _, _ = _clipped_step(0.0)
    far = max((p - q).abs().max().item() for p, q in zip(net.parameters(), free.parameters()))
    assert far > 1e-3


def test_clipping_with_a_grad_scaler_clips_the_unscaled_gradients():
    """fp16's path: unscale_, clip, scaler.step give the step of unscaled training."""
    net = _net(2, "dgl")
    ref = copy.deepcopy(net)
    cfg = TrainConfig(lr=0.1, clip_grad_norm=0.01)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    opt, plain = BlockOptimizers(net, cfg, scaler), BlockOptimizers(ref, cfg)
    x, y = _batch()
    net.train_step(x, y, backward=lambda loss: scaler.scale(loss).backward(),
                   after_block=opt.after_block)
    opt.finish()
    ref.train_step(x, y, after_block=plain.after_block)
    plain.finish()
    assert scaler.get_scale() == 1024.0  # no inf found: every block stepped
    for (n, p), q in zip(net.named_parameters(), ref.parameters()):
        assert torch.allclose(p, q, atol=1e-6), n


def _train(tmp_path, *args: str) -> list:
    return ["train", *args, "--dataset", DS, "--limit-train", "32", "--limit-test", "16",
            "--batch-size", "16", "--epochs", "1", "--no-progress",
            "--out", str(tmp_path / "run")]


@pytest.mark.parametrize("args, message", [
    (["--optimizer", "adam"], r"unknown optimizer 'adam' \(choose from: sgd, adamw\)"),
    (["--clip-grad-norm", "-1"], r"clip-grad-norm must be >= 0.*-1"),
    (["--clip-grad-norm", "nan"], r"clip-grad-norm must be a finite number, got nan"),
    (["--optimizer", "adamw", "--momentum", "0.5"], r"--momentum belongs to SGD.*adamw"),
    (["--optimizer", "adamw", "--no-nesterov"], r"--no-nesterov belongs to SGD.*adamw"),
])
def test_cli_refuses_bad_optimizer_options(tmp_path, capsys, args, message):
    code = main(_train(tmp_path, *args))
    err = capsys.readouterr().err
    assert code == 2, err
    assert re.search(message, err), err
    assert "Traceback" not in err and not (tmp_path / "run" / "config.json").exists()


def test_cli_adamw_with_clipping_runs_and_records_both(tmp_path, capsys):
    code = main(_train(tmp_path, "--optimizer", "adamw", "--clip-grad-norm", "1",
                       "--method", "dgl", "--blocks", "2"))
    err = capsys.readouterr().err
    assert code == 0, err
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (saved["optimizer"], saved["clip_grad_norm"]) == ("adamw", 1.0)
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")["optimizer"]["blocks"]
    assert len(state) == 2 and all("exp_avg_sq" in s["state"][0] for s in state)


def _cfg(tmp_path, name: str, **kw) -> TrainConfig:
    base = dict(model="resnet20", method="dgl", blocks=2, dataset="synthetic:1x12x12:4",
                epochs=2, batch_size=32, lr=1e-3, weight_decay=0.05, optimizer="adamw",
                clip_grad_norm=0.5, limit_train=64, limit_test=32, device="cpu",
                out=str(tmp_path / name), seed=3)
    base.update(kw)
    return TrainConfig(**base)


def test_adamw_resume_is_bit_identical(tmp_path):
    fit(_cfg(tmp_path, "full"), progress=False)
    fit(_cfg(tmp_path, "killed"), progress=False, stop_after_epochs=1)
    assert load_checkpoint(tmp_path / "killed" / "checkpoint.pt")["epoch"] == 1
    # the saved config wins: the optimizer and clipping come from it, not from here
    fit(_cfg(tmp_path, "killed", optimizer="sgd", clip_grad_norm=0.0), resume=True,
        progress=False)
    a = load_checkpoint(tmp_path / "full" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "killed" / "checkpoint.pt")
    assert a["net"].keys() == b["net"].keys()
    for k in a["net"]:
        assert torch.equal(a["net"][k], b["net"][k]), k
    for sa, sb in zip(a["optimizer"]["blocks"], b["optimizer"]["blocks"]):
        for i, st in sa["state"].items():
            assert st.keys() == sb["state"][i].keys() and "exp_avg" in st
            assert all(torch.equal(st[t], sb["state"][i][t]) for t in st)


def test_warmup_never_starts_above_its_peak():
    from locallearn.config import TrainConfig
    from locallearn.train import lr_at

    low = TrainConfig(lr=2e-4, epochs=2, warmup_epochs=1.0)  # default start 0.01 > lr
    assert max(lr_at(low, s, 10) for s in range(20)) == pytest.approx(2e-4)
    high = TrainConfig(lr=0.8, epochs=2, warmup_epochs=1.0)
    assert lr_at(high, 0, 10) == pytest.approx(0.01) and lr_at(high, 5, 10) == pytest.approx(
        0.01 + (0.8 - 0.01) / 2)
