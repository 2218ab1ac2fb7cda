"""Issue 15: the reference-exact options and the presets that name them.

The core check: one training step of the library under the ``manpp-cifar-dgl`` preset's
options equals a hand computation of the reference code's order of operations (every
block's forward + backward with the EMA copy moved right after it, one optimizer step
for all parameters at the end), in losses, gradients, weights and EMA weights.
"""
from __future__ import annotations

import copy
import math
from typing import Dict, List

import pytest
import torch
import torch.nn.functional as F

from locallearn import LocalNet, TrainConfig
from locallearn.cli import main
from locallearn.errors import ConfigError
from locallearn.heads.losses import supcon_loss
from locallearn.nets.cifar_resnet import CifarResNet
from locallearn.optim import BlockOptimizers
from locallearn.presets import PRESETS, apply_preset, preset_settings
from locallearn.reference import epoch_lr, reference_boundaries, reference_block_sizes
from locallearn.train import lr_at

LR, WD, M = 0.1, 1e-4, 0.9


def _preset_net(seed: int = 0, **over) -> LocalNet:
    s, _ = preset_settings("manpp-cifar-dgl", "dgl+manpp")
    torch.manual_seed(seed)
    model = CifarResNet(8, num_classes=10)  # stem + 3 residual units + classifier
    kw = dict(lb=s["lb"], ema_momentum=s["ema_momentum"], ema_timing=s["ema_timing"],
              bridge_init=s["bridge_init"], head_init=s["head_init"],
              head_opts=dict(s["head_opts"]))
    kw.update(over)
    return LocalNet(model, 4, "dgl+manpp", image_size=(16, 16), **kw)


def _batch(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(8, 3, 16, 16, generator=g), torch.randint(0, 10, (8,), generator=g)


def _library_step(net: LocalNet, x, y):
    """The step as ``fit`` takes it, recording each block's gradients before its step."""
    cfg = TrainConfig(lr=LR, weight_decay=WD, momentum=M)
    opt = BlockOptimizers(net, cfg)
    grads: Dict[str, torch.Tensor] = {}
    names = {id(p): n for n, p in net.named_parameters()}

    def after_block(j: int) -> None:
        for p in net.block_parameters(j):
            grads[names[id(p)]] = p.grad.detach().clone()
        opt.after_block(j)

    losses = net.train_step(x, y, after_block=after_block)
    opt.finish()
    net.ema_update()
    return losses, grads


def _dgl_head_loss(net: LocalNet, j: int, mixed, x, y):
    return F.cross_entropy(net.heads[j].logits(mixed), y)


def _reference_step(net: LocalNet, x, y, ema_m: float, head_loss=_dgl_head_loss):
    """The reference's order, written out: zero_grad; per block forward, mix
    ``s*LB(h) + (2-s)*EMA(h)``, head loss, backward, EMA <- m*EMA + (1-m)*unit (the unit's
    weights before any step), detach; the last block's CE; then ONE SGD step."""
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=LR, momentum=M, nesterov=True, weight_decay=WD)
    opt.zero_grad()
    units = list(net.model.units)
    h, losses = x, []
    for j, (start, end) in enumerate(net.ranges):
        block = units[start:end] if j < net.k - 1 else units[start:]
        for u in block:
            h = u(h)
        if j == net.k - 1:
            loss = F.cross_entropy(h, y)
        else:
            b = net.bridges[j]
            s = b.scale
            mixed = s * b.lb(h) + (2 - s) * b.ema(h)
            loss = head_loss(net, j, mixed, x, y)
        loss.backward()
        losses.append(loss.detach())
        if j < net.k - 1:
            src = units[net.ranges[j + 1][0]]
            with torch.no_grad():
                for pe, pu in zip(net.bridges[j].ema.parameters(), src.parameters()):
                    pe.copy_(pe * ema_m + pu * (1 - ema_m))
        h = h.detach()
    grads = {n: p.grad.detach().clone() for n, p in net.named_parameters() if p.grad is not None}
    opt.step()
    return torch.stack(losses), grads


def test_preset_step_equals_the_reference_order_by_hand():
    net = _preset_net()
    ref = copy.deepcopy(net)
    x, y = _batch()
    losses, grads = _library_step(net, x, y)
    ref_losses, ref_grads = _reference_step(ref, x, y, net.ema_momentum)
    assert torch.allclose(losses, ref_losses, atol=1e-6), (losses, ref_losses)
    assert set(grads) == set(ref_grads) and len(grads) > 20
    for n in grads:
        # float32 sums in another order (ScaledMix vs the plain mix): ~1e-6 apart
        assert torch.allclose(grads[n], ref_grads[n], rtol=1e-4, atol=1e-5), n
    for (n, p), (_, q) in zip(net.named_parameters(), ref.named_parameters()):
        assert torch.allclose(p, q, rtol=1e-5, atol=1e-6), n  # weights after the step, EMA copies too
    # the EMA copies followed the *pre-step* weights: after-step timing does not match
    late = _preset_net(ema_timing="after-step")
    _library_step(late, x, y)
    ema_now = torch.cat([p.flatten() for p in net.bridges[0].ema.parameters()])
    ema_late = torch.cat([p.flatten() for p in late.bridges[0].ema.parameters()])
    assert not torch.allclose(ema_now, ema_late, atol=1e-7)


def _infopro_head_loss(net: LocalNet, j: int, mixed, x, y):
    """The reference InfoPro head: ixx * BCE(sigmoid(decoder), image in [0, 1]) + ixy *
    (CE, or SupCon over all anchors on the normalised embedding), written out."""
    head = net.heads[j]
    image01 = (x * 0.25 + 0.5).clamp(0, 1)
    recon = torch.sigmoid(head.decoder.last(head.decoder.first(
        F.interpolate(mixed, size=x.shape[-2:], mode="bilinear", align_corners=True))))
    bce = F.binary_cross_entropy(recon, image01)
    out = head.classifier.net(mixed)
    if head.classifier.loss_mode == "ce":
        task = F.cross_entropy(out, y)
    else:  # SupCon by hand: mean over every anchor, one without a positive counting 0
        z = F.normalize(out, dim=1)
        logits = z @ z.t() / 0.07
        eye = torch.eye(len(y), dtype=torch.bool)
        logits = logits.masked_fill(eye, float("-inf"))
        logp = logits - torch.logsumexp(logits, 1, keepdim=True)
        pos = (y[:, None] == y[None, :]) & ~eye
        per = -torch.where(pos, logp, torch.zeros_like(logp)).sum(1) / pos.sum(1).clamp_min(1)
        task = per.mean()
    return head.ixx * bce + head.ixy * task


def test_infopro_preset_step_equals_the_reference_order_by_hand():
    s, _ = preset_settings("manpp-cifar-infopro", "infopro+manpp")
    torch.manual_seed(0)
    net = LocalNet(CifarResNet(8, num_classes=4), 4, "infopro+manpp", image_size=(16, 16),
                   mean=(0.5,), std=(0.25,), ema_momentum=s["ema_momentum"],
                   ema_timing=s["ema_timing"], bridge_init=s["bridge_init"],
                   head_init=s["head_init"], head_opts=dict(s["head_opts"], interp_over=2),
                   head_overrides=s["head_overrides"])
    # head 0: 1c2f + SupCon at 5 / 0.5; head 1 reads stage 2 of 3: ixx 5 * (1 - 2/2) = 0
    assert net.heads[0].classifier.loss_mode == "supcon" and net.heads[0].ixx == 5.0
    assert net.heads[1].ixx == 0.0 and net.heads[1].classifier.loss_mode == "ce"
    ref = copy.deepcopy(net)
    g = torch.Generator().manual_seed(2)
    # class 3 has one sample: an anchor without a positive, which SupCon "all" counts as 0
    x, y = torch.randn(8, 3, 16, 16, generator=g), torch.tensor([0, 0, 1, 1, 2, 2, 3, 0])
    losses, grads = _library_step(net, x, y)
    ref_losses, ref_grads = _reference_step(ref, x, y, net.ema_momentum, _infopro_head_loss)
    assert torch.allclose(losses, ref_losses, rtol=1e-5, atol=1e-6), (losses, ref_losses)
    for n in grads:
        assert torch.allclose(grads[n], ref_grads[n], rtol=1e-4, atol=1e-5), n
    for (n, p), (_, q) in zip(net.named_parameters(), ref.named_parameters()):
        assert torch.allclose(p, q, rtol=1e-5, atol=1e-6), n


def test_before_step_ema_moves_towards_the_pre_step_unit():
    net = _preset_net(ema_momentum=0.5)
    ema0 = [p.clone() for p in net.bridges[1].ema.parameters()]
    unit0 = [p.clone() for p in net.ema_sources()[1].parameters()]
    _library_step(net, *_batch())
    for e, e0, u0 in zip(net.bridges[1].ema.parameters(), ema0, unit0):
        assert torch.allclose(e, 0.5 * e0 + 0.5 * u0, atol=1e-7)
    net.ema_update()  # before-step: the loop's later call must not move them again
    for e, e0, u0 in zip(net.bridges[1].ema.parameters(), ema0, unit0):
        assert torch.allclose(e, 0.5 * e0 + 0.5 * u0, atol=1e-7)


def _convs(module) -> List[torch.nn.Conv2d]:
    return [m for m in module.modules() if isinstance(m, torch.nn.Conv2d)]


def test_reference_init_redraws_ema_and_lb_independently():
    net = _preset_net(seed=3)
    for bridge, unit in zip(net.bridges, net.ema_sources()):
        for ce, cl, cu in zip(_convs(bridge.ema), _convs(bridge.lb), _convs(unit)):
            assert not torch.equal(ce.weight, cl.weight)  # EMA != LB != unit
            assert not torch.equal(ce.weight, cu.weight)
            assert not torch.equal(cl.weight, cu.weight)
    # the reference's draw: N(0, 2 / (k*k*out)); pooled over a wide unit for a tight estimate
    wide = LocalNet(CifarResNet(20), 4, "dgl+manpp", bridge_init="reference")
    last = wide.bridges[-1]  # copies of a 64-channel unit: 36,864 weights per conv
    for copy_ in (last.ema, last.lb):
        for conv in _convs(copy_):
            k = conv.kernel_size[0] * conv.kernel_size[1]  # 3x3, and the 1x1 shortcut
            want = math.sqrt(2.0 / (k * conv.out_channels))
            assert abs(conv.weight.std().item() / want - 1) < 0.05
        bns = [m for m in copy_.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        assert all(torch.all(b.weight == 1) and torch.all(b.bias == 0) for b in bns)
    copy_init = LocalNet(CifarResNet(20), 4, "dgl+manpp")  # the default: exact copies
    b, u = copy_init.bridges[0], copy_init.ema_sources()[0]
    assert all(torch.equal(p, q) for p, q in zip(b.ema.parameters(), u.parameters()))


def test_reference_head_init_matches_the_reference_draw():
    torch.manual_seed(0)
    ref = LocalNet(CifarResNet(20), 4, "dgl", head_init="reference")
    torch.manual_seed(0)
    default = LocalNet(CifarResNet(20), 4, "dgl")
    narrower = 0
    for conv_r, conv_d in zip(_convs(ref.heads[0]), _convs(default.heads[0])):
        want = math.sqrt(2.0 / (conv_r.kernel_size[0] * conv_r.kernel_size[1]
                                * conv_r.out_channels))
        assert abs(conv_r.weight.std().item() / want - 1) < 0.1
        narrower += conv_d.weight.std().item() < 0.6 * want
    assert narrower == 2  # PyTorch's default draw of the two 128 -> 128 convs: std 0.05


def test_supcon_mean_over_all_anchors_counts_lonely_anchors_as_zero():
    torch.manual_seed(0)
    z = F.normalize(torch.randn(3, 4), dim=1)
    y = torch.tensor([0, 0, 1])  # anchor 2 has no positive
    pos = supcon_loss(z, y, 0.5, "positives")
    everyone = supcon_loss(z, y, 0.5, "all")
    assert torch.allclose(everyone, pos * 2 / 3, atol=1e-6)


def test_infopro_preset_heads_follow_the_reference_code():
    opts, _ = preset_settings("manpp-cifar-infopro", "infopro+manpp")
    net = LocalNet(CifarResNet(32), 16, "infopro+manpp", head_opts=dict(opts["head_opts"]),
                   head_overrides=opts["head_overrides"])
    h0 = net.heads[0]
    assert (h0.ixx, h0.ixy) == (5.0, 0.5)
    assert h0.classifier.loss_mode == "supcon" and h0.classifier.supcon_mean == "all"
    assert h0.logits(torch.zeros(2, 16, 32, 32)) is None  # contrastive: no class scores
    convs0 = [m for m in h0.classifier.net if isinstance(m, torch.nn.Conv2d)]
    assert len(convs0) == 1  # 1c2f
    for j in range(1, 15):
        # the reference's ratio: stage number of the bridged unit over K - 2
        stage = 1 + (j + 1 - 1) // 5
        ratio = stage / 14
        assert math.isclose(net.heads[j].ixx, 5 * (1 - ratio), abs_tol=1e-12)
        assert math.isclose(net.heads[j].ixy, 0.5 * (1 - ratio), abs_tol=1e-12)
        convs = [m for m in net.heads[j].classifier.net if isinstance(m, torch.nn.Conv2d)]
        assert len(convs) == 2 and net.heads[j].classifier.loss_mode == "ce"  # 2c2f + CE


def test_reference_splits_and_schedule():
    assert reference_boundaries("resnet32", 16) == list(range(1, 16))
    assert reference_block_sizes("resnet32", 8) == [1, 1, 2, 2, 2, 2, 2, 2, 2]
    assert len(reference_boundaries("resnet110", 55)) == 54
    with pytest.raises(ConfigError, match=r"K in \[2, 3, 4, 8, 16\].*K=5"):
        reference_boundaries("resnet32", 5)
    with pytest.raises(ConfigError, match="resnet32, resnet110 only, not 'resnet20'"):
        reference_boundaries("resnet20", 4)
    cfg = TrainConfig(method="dgl", blocks=8, split="reference").validate()
    assert cfg.blocks == 9 and cfg.boundaries == [1, 2, 4, 6, 8, 10, 12, 14]
    # the reference's per-epoch values: 0.01 at epoch 1, a blend, then the plain cosine
    assert math.isclose(epoch_lr(0.8, 0, 400, 10, 0.01), 0.01)
    e = 5  # 1-based
    cos = 0.4 * (1 + math.cos(math.pi * e / 400))
    assert math.isclose(epoch_lr(0.8, e - 1, 400, 10, 0.01), cos * 0.4 + 0.01 * 0.6)
    assert math.isclose(epoch_lr(0.8, 20, 400, 10, 0.01), 0.4 * (1 + math.cos(math.pi * 21 / 400)))
    ep = TrainConfig(epochs=20, lr=0.8, warmup_epochs=2, lr_schedule="epoch")
    assert lr_at(ep, 0, 50) == lr_at(ep, 49, 50) != lr_at(ep, 50, 50)


def test_apply_preset_lets_given_options_win_and_skips_what_e2e_lacks():
    cfg = TrainConfig(lr=0.1, epochs=40, head_opts={"conv_width": 64})
    lines = apply_preset(cfg, "manpp-cifar-dgl", given={"lr", "epochs", "head_opts"})
    assert cfg.lr == 0.1 and cfg.batch_size == 1024 and cfg.method == "dgl+manpp"
    assert cfg.head_opts == {"pool_exact": True, "conv_width": 64}
    assert cfg.warmup_epochs == 1.0  # 10 of 400 epochs, kept as a share of 40
    assert cfg.preset == "manpp-cifar-dgl" and "lr=0.1 (preset: 0.8)" in "\n".join(lines)
    e2e = TrainConfig(method="e2e")
    lines = apply_preset(e2e, "manpp-cifar-dgl", given={"method"})
    assert e2e.blocks == 1 and e2e.bridge_init == "copy" and e2e.lr == 0.8
    assert "e2e has no local heads" in "\n".join(lines)
    e2e.validate()
    assert set(PRESETS.names()) >= {"manpp-cifar-dgl", "manpp-cifar-infopro"}


def test_cli_preset_prints_what_it_sets_and_given_flags_win(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--preset", "manpp-cifar-dgl", "--blocks", "8", "--lr", "0.8",
                 "--dataset", "synthetic:3x16x16:4", "--limit-train", "32", "--limit-test", "16",
                 "--epochs", "1", "--batch-size", "16", "--no-progress", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "ema_timing=before-step" in err and "is 9 blocks here" in err
    assert "lr=0.8 (preset: 0.8)" in err  # typed by hand, even if equal to the preset's
    saved = TrainConfig.load(out / "config.json")
    assert (saved.blocks, saved.batch_size, saved.preset) == (9, 16, "manpp-cifar-dgl")
    assert saved.head_init == "reference" and saved.lr_schedule == "epoch"


@pytest.mark.parametrize("args, message", [
    (["--preset", "manpp"], r"unknown preset 'manpp'.*manpp-cifar-dgl"),
    (["--method", "dgl", "--blocks", "4", "--head-opt", "5:conv_width=8"],
     r"head_overrides names head 5.*3 local head\(s\): 0..2"),
    (["--method", "dgl", "--blocks", "4", "--head-opt", "x:conv_width=8"],
     r"before ':' must be a head index"),
    (["--method", "dgl+manpp", "--blocks", "4", "--ema-timing", "early"],
     r"ema-timing 'early'.*after-step, before-step"),
    (["--method", "dgl", "--blocks", "5", "--split", "reference"],
     r"split 'reference' defines K in \[2, 3, 4, 8, 16\] for resnet32, got K=5"),
])
def test_cli_refuses_bad_fidelity_options(tmp_path, capsys, args, message):
    out = tmp_path / "run"
    code = main(["train", *args, "--dataset", "synthetic:3x16x16:4", "--limit-train", "32",
                 "--epochs", "1", "--no-progress", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    import re

    assert re.search(message, err), err
    assert "Traceback" not in err and not (out / "config.json").exists()


def test_man_preset_has_no_stem_block_and_divides_by_the_reference_k():
    cfg = TrainConfig()
    apply_preset(cfg, "man-cifar-infopro")
    cfg.validate()
    # MAN (ECCV): the stem joins the first module of its K=16 table: 15 blocks
    assert (cfg.method, cfg.blocks, cfg.boundaries[:2]) == ("infopro+man", 15, [2, 3])
    assert cfg.head_opts["interp_over"] == 14 and "supcon_mean" not in cfg.head_opts
    net = LocalNet(CifarResNet(32), cfg.blocks, cfg.method, boundaries=cfg.boundaries,
                   head_opts=dict(cfg.head_opts))
    for j, head in enumerate(net.heads):
        unit = net.ranges[j + 1][0]  # the bridged unit; its stage is what the code reads
        stage = 1 + (unit - 1) // 5
        assert math.isclose(head.ixx, 5 * (1 - stage / 14), abs_tol=1e-12), j
    # MAN++ at its K=8 is 9 blocks, but the code still divides by K - 2 = 6
    k8 = TrainConfig(blocks=8)
    apply_preset(k8, "manpp-cifar-infopro", given={"blocks"})
    assert k8.head_opts["interp_over"] == 6 and k8.validate().blocks == 9
