"""Auxiliary heads: shapes from HeadContext, loss values against hand computations."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from locallearn.bank import FeatureBank
from locallearn.errors import ConfigError
from locallearn.heads import HEADS, AuxHead, HeadContext, build_head, head_options
from locallearn.heads.losses import label_similarity, supcon_loss
from locallearn.heads.predsim import pool_side
from locallearn.nets.units import UnitInfo

FAMILIES = ["greedy", "dgl", "infopro", "predsim"]


def make_ctx(channels: int, reduction: int, image=(28, 28), image_channels: int = 1,
             index: int = 0, num_heads: int = 3, num_classes: int = 4,
             stage: int = 1) -> HeadContext:
    return HeadContext(info=UnitInfo(f"u{channels}", channels, reduction), index=index,
                       num_heads=num_heads, num_classes=num_classes, image_size=image,
                       image_channels=image_channels, stage=stage, num_stages=3)


CTXS = [
    make_ctx(16, 1, index=0),                                  # 28x28, gray
    make_ctx(32, 2, index=1),                                  # 14x14
    make_ctx(64, 4, image=(32, 32), image_channels=3, index=2),  # 8x8, RGB
    make_ctx(24, 4, image=(28, 20), image_channels=3, index=1),  # 7x5, non-square
]


def batch(ctx: HeadContext, n: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    h, w = ctx.feature_size
    feats = torch.randn(n, ctx.info.channels, h, w, generator=g, requires_grad=True)
    target = torch.arange(n) % ctx.num_classes
    image = torch.rand(n, ctx.image_channels, *ctx.image_size, generator=g)
    return feats, target, FeatureBank(image)


def test_registry_names():
    assert set(FAMILIES) <= set(HEADS.names())


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("ctx", CTXS, ids=lambda c: f"c{c.info.channels}r{c.info.reduction}")
def test_builds_finite_loss_with_grad(name, ctx):
    torch.manual_seed(0)
    head = build_head(name, ctx)
    assert isinstance(head, AuxHead)
    feats, target, bank = batch(ctx)
    loss = head(feats, target, bank)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert feats.grad is not None and torch.isfinite(feats.grad).all()
    assert feats.grad.abs().sum() > 0


def test_head_options_defaults():
    assert head_options("greedy") == {"width": 0}
    assert head_options("dgl") == {"conv_width": 128, "mlp_width": 512,
                                   "conv_layers": 3, "mlp_layers": 3, "pool_exact": False}
    opts = head_options("infopro")
    assert opts["ixx"] == (5.0, 0.2) and opts["ixy"] == (0.05, 0.5)
    assert (opts["interp"], opts["loss"], opts["classifier"]) == ("block", "supcon", "1c2f")
    assert opts["supcon_mean"] == "positives"
    assert opts["widen"] == 1.0 and opts["temperature"] == 0.07
    assert head_options("predsim") == {"beta": 0.99, "max_features": 2048}


# ---------------------------------------------------------------- errors


def test_unknown_head_name():
    with pytest.raises(ConfigError, match="nohead") as e:
        build_head("nohead", CTXS[0])
    assert "infopro" in str(e.value)


def test_unknown_option():
    with pytest.raises(ConfigError, match="bogus") as e:
        build_head("dgl", CTXS[0], bogus=1)
    assert "conv_width" in str(e.value)
    with pytest.raises(ConfigError, match="beta"):
        build_head("greedy", CTXS[0], beta=0.5)


@pytest.mark.parametrize("opt,bad,allowed", [("loss", "mse", "supcon"),
                                             ("classifier", "3c3f", "2c2f"),
                                             ("interp", "layer", "stage")])
def test_infopro_bad_choice(opt, bad, allowed):
    with pytest.raises(ConfigError, match=bad) as e:
        build_head("infopro", CTXS[0], **{opt: bad})
    assert allowed in str(e.value)


def test_infopro_bad_pair():
    with pytest.raises(ConfigError, match="ixx"):
        build_head("infopro", CTXS[0], ixx=(1.0, 2.0, 3.0))


# ---------------------------------------------------------------- dgl


def test_dgl_sizes_follow_options():
    ctx = make_ctx(16, 1)  # 28x28 -> pooled to 8x8
    head = build_head("dgl", ctx, conv_width=24, mlp_width=40, conv_layers=2, mlp_layers=3)
    convs = [m for m in head.modules() if isinstance(m, nn.Conv2d)]
    fcs = [m for m in head.modules() if isinstance(m, nn.Linear)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == \
        [(16, 24, (1, 1)), (24, 24, (1, 1))]
    assert [(f.in_features, f.out_features) for f in fcs] == \
        [(24, 40), (40, 40), (40, 40), (40, 4)]
    assert head.pool.output_size == (8, 8)
    default = build_head("dgl", make_ctx(64, 4, image=(28, 20)))  # 7x5 kept as is
    assert default.pool.output_size == (7, 5)
    assert [f.out_features for f in default.modules() if isinstance(f, nn.Linear)] == \
        [512, 512, 512, 4]
    assert {c.out_channels for c in default.modules() if isinstance(c, nn.Conv2d)} == {128}


# ---------------------------------------------------------------- infopro


def test_infopro_interpolation_block():
    first = build_head("infopro", make_ctx(16, 1, index=0, num_heads=15))
    mid = build_head("infopro", make_ctx(16, 1, index=7, num_heads=15))
    last = build_head("infopro", make_ctx(64, 4, index=14, num_heads=15))
    assert (first.ixx, first.ixy) == pytest.approx((5.0, 0.05))
    assert (mid.ixx, mid.ixy) == pytest.approx((2.6, 0.275))
    assert (last.ixx, last.ixy) == pytest.approx((0.2, 0.5))


def test_infopro_interpolation_stage():
    # MAN code: w = w1 * (1 - stage/(K-2)) + w2 * stage/(K-2), K-1 = 15 heads.
    head = build_head("infopro", make_ctx(32, 2, index=9, num_heads=15, stage=2),
                      interp="stage", ixx=(5.0, 0.0), ixy=(0.5, 0.0))
    assert head.ixx == pytest.approx(5.0 * 12 / 14)
    assert head.ixy == pytest.approx(0.5 * 12 / 14)


@pytest.mark.parametrize("channels,reduction,stride,out", [
    (16, 1, 2, 32), (32, 2, 2, 64), (64, 4, 1, 64),  # CIFAR 32x32: 32, 16, 8
])
@pytest.mark.parametrize("config", ["1c2f", "2c2f"])
def test_infopro_classifier_stride_rule(channels, reduction, stride, out, config):
    ctx = make_ctx(channels, reduction, image=(32, 32), image_channels=3, num_classes=10)
    head = build_head("infopro", ctx, classifier=config, loss="ce")
    convs = [m for m in head.classifier.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == (1 if config == "1c2f" else 2)
    assert (convs[0].in_channels, convs[0].out_channels, convs[0].stride) == \
        (channels, out, (stride, stride))
    if config == "2c2f":
        assert (convs[1].in_channels, convs[1].out_channels, convs[1].stride) == (out, out, (1, 1))
    fcs = [m for m in head.classifier.modules() if isinstance(m, nn.Linear)]
    assert [(f.in_features, f.out_features) for f in fcs] == [(out, 128), (128, 10)]
    supcon = build_head("infopro", ctx, classifier=config)
    assert [m for m in supcon.classifier.modules() if isinstance(m, nn.Linear)][-1].out_features == 128


def test_infopro_decoder_shapes():
    ctx = make_ctx(64, 4, image=(32, 32), image_channels=3)
    head = build_head("infopro", ctx, widen=2.0)
    convs = [m for m in head.decoder.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(64, 24), (24, 3)]
    feats, _, _ = batch(ctx)
    assert head.decoder(feats).shape == (8, 3, 32, 32)


def _supcon_by_hand(z, labels, t):
    n = len(z)
    dot = [[sum(a * b for a, b in zip(z[i], z[j])) / t for j in range(n)] for i in range(n)]
    losses = []
    for i in range(n):
        pos = [j for j in range(n) if j != i and labels[j] == labels[i]]
        if not pos:
            continue
        log_den = math.log(sum(math.exp(dot[i][a]) for a in range(n) if a != i))
        losses.append(-sum(dot[i][p] - log_den for p in pos) / len(pos))
    return sum(losses) / len(losses)


def test_supcon_matches_hand_computation():
    z = [(1.0, 0.0), (0.6, 0.8), (0.0, 1.0), (-0.8, 0.6)]
    labels = [0, 0, 1, 1]
    got = supcon_loss(torch.tensor(z), torch.tensor(labels), temperature=0.5)
    assert got.item() == pytest.approx(_supcon_by_hand(z, labels, 0.5), rel=1e-6)
    # Pinned by pencil: dots/T are s01=1.2 s02=0 s03=-1.6 s12=1.6 s13=0 s23=1.2, so
    # anchors 0,3 give ln(e^1.2+1+e^-1.6)-1.2 and anchors 1,2 give ln(e^1.2+e^1.6+1)-1.2.
    assert got.item() == pytest.approx(0.66807, abs=1e-4)
    # Label 2 has no positive: that anchor is skipped, the mean is over the others.
    z3, l3 = z[:3], [0, 0, 2]
    got3 = supcon_loss(torch.tensor(z3), torch.tensor(l3), temperature=0.07)
    assert got3.item() == pytest.approx(_supcon_by_hand(z3, l3, 0.07), rel=1e-6)
    none = supcon_loss(torch.tensor(z3, requires_grad=True), torch.tensor([0, 1, 2]))
    assert none.item() == 0.0 and none.requires_grad


def test_supcon_has_no_data_dependent_branch_or_shape():
    """Traced on fake tensors (values unknown), as a GPU step would run it without a host
    sync: a ``bool(tensor)`` branch or boolean-mask indexing would raise here."""
    from torch.fx.experimental.proxy_tensor import make_fx

    graph = make_fx(lambda z, y: supcon_loss(z, y, 0.07), tracing_mode="fake")(
        torch.randn(8, 4), torch.randint(0, 3, (8,)))
    ops = {str(n.target) for n in graph.graph.nodes if n.op == "call_function"}
    assert not any("nonzero" in op or "index.Tensor" in op for op in ops)


@pytest.mark.parametrize("loss", ["ce", "supcon"])
def test_infopro_loss_is_weighted_sum(loss):
    ctx = make_ctx(32, 2, index=1, num_heads=4)
    torch.manual_seed(0)
    head = build_head("infopro", ctx, loss=loss)
    feats, target, bank = batch(ctx)
    got = head(feats, target, bank)
    with torch.no_grad():
        recon = torch.sigmoid(head.decoder(feats))
        bce = F.binary_cross_entropy(recon, bank.image01)
        out = head.classifier(feats)
        if loss == "ce":
            cls = F.cross_entropy(out, target)
        else:
            cls = supcon_loss(F.normalize(out, dim=1), target, 0.07)
    assert head.ixx == pytest.approx(5.0 + (0.2 - 5.0) / 3)
    assert got.item() == pytest.approx((head.ixx * bce + head.ixy * cls).item(), rel=1e-5)


# ---------------------------------------------------------------- predsim


def test_predsim_pool_rule():
    assert pool_side(16, (28, 28), 2048) == (11, 11)  # 16*121 = 1936 <= 2048 < 16*144
    assert pool_side(32, (14, 14), 2048) == (8, 8)
    assert pool_side(64, (7, 5), 2048) == (5, 5)
    assert pool_side(16, (4, 4), 2048) == (4, 4)      # never larger than the map
    assert pool_side(4096, (7, 7), 2048) == (1, 1)    # at least 1
    head = build_head("predsim", make_ctx(16, 1))
    assert head.fc.in_features == 16 * 11 * 11


def test_predsim_label_similarity_reference():
    # Reference centres the one-hot rows: 1 for same class, -1/(n-1) otherwise.
    s = label_similarity(torch.tensor([0, 0, 1, 3]), 4)
    expect = torch.tensor([[1, 1, -1 / 3, -1 / 3], [1, 1, -1 / 3, -1 / 3],
                           [-1 / 3, -1 / 3, 1, -1 / 3], [-1 / 3, -1 / 3, -1 / 3, 1]])
    assert torch.allclose(s, expect, atol=1e-6)


def test_predsim_zero_init_and_hand_loss():
    ctx = make_ctx(32, 2, num_classes=5)
    torch.manual_seed(0)
    head = build_head("predsim", ctx, beta=0.7)
    feats, target, bank = batch(ctx, n=10)
    assert torch.count_nonzero(head.logits(feats)) == 0
    ce_only = build_head("predsim", ctx, beta=0.0)(feats, target, bank)
    assert ce_only.item() == pytest.approx(math.log(5), rel=1e-6)
    got = head(feats, target, bank)
    with torch.no_grad():
        z = head.sim_conv(feats).flatten(2).std(dim=2)
        z = z - z.mean(dim=1, keepdim=True)
        z = z / z.norm(dim=1, keepdim=True)
        same = (target[:, None] == target[None, :]).float()
        t = same - (1 - same) / 4
        mse = ((z @ z.t() - t) ** 2).mean()
    assert got.item() == pytest.approx(0.3 * math.log(5) + 0.7 * mse.item(), rel=1e-5)


def test_infopro_decoder_orders_share_layers_and_differ_only_in_order():
    ctx = make_ctx(64, 4, image=(32, 32), image_channels=3)
    a = build_head("infopro", ctx, decoder="resize_first", loss="ce")
    b = build_head("infopro", ctx, decoder="conv_first", loss="ce")
    b.load_state_dict(a.state_dict())  # same parameters, same names
    feats = torch.randn(2, 64, 8, 8)
    out_a, out_b = a.decoder(feats), b.decoder(feats)
    assert out_a.shape == out_b.shape == (2, 3, 32, 32)
    # conv_first = last(resize(first(x))): check against a hand composition
    first = b.decoder.first(feats)
    hand = b.decoder.last(F.interpolate(first, size=(32, 32), mode="bilinear", align_corners=True))
    assert torch.allclose(out_b, hand, atol=1e-6)
    assert not torch.allclose(out_a, out_b)
    with pytest.raises(ConfigError, match="decoder 'upsample'.*conv_first"):
        build_head("infopro", ctx, decoder="upsample")


def test_infopro_classifier_width_cap():
    ctx = make_ctx(1024, 16, image=(224, 224), image_channels=3)
    capped = build_head("infopro", ctx, loss="ce", max_width=256)
    conv = capped.classifier.net[0]
    assert conv.out_channels == 256 and conv.stride == (2, 2)
    assert build_head("infopro", ctx, loss="ce").classifier.net[0].out_channels == 2048
