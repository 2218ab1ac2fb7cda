"""RetinaNet as units (nets/retinanet.py): same outputs as torchvision's own pipeline,
strict export, no gradient across a block cut (bank skips included), channels per depth."""
import pytest
import torch
from torchvision.models.detection.image_list import ImageList

from locallearn.bank import FeatureBank
from locallearn.errors import ConfigError
from locallearn.nets.retinanet import (RetinaNetOutput, retinanet_source,
                                       retinanet_units)
from locallearn.nets.units import run_unit

C = 3  # classes
HEAD_KEYS = ("cls_logits", "bbox_regression")


def _build(depth=18, chans=3, seed=0):
    torch.manual_seed(seed)
    model = retinanet_source(depth, C, chans)
    return model, retinanet_units(model, chans, C)


def _images(chans=3, size=(96, 96), seed=0):
    return torch.randn(2, chans, *size, generator=torch.Generator().manual_seed(seed))


def _run(net, x, units=None, bank=None):
    """Run ``units`` (indices, default all) of ``net`` in order with run_unit."""
    bank = bank if bank is not None else FeatureBank(x)
    h = x
    for i in units if units is not None else range(len(net.units)):
        h = run_unit(net.units[i], net.unit_info[i], h, bank)
    return h, bank


def _torchvision(model, x):
    """torchvision's own path on an already batched, normalised tensor."""
    feats = list(model.backbone(x).values())
    out = model.head(feats)
    images = ImageList(x, [tuple(x.shape[-2:])] * x.shape[0])
    return feats, out, model.anchor_generator(images, feats)


@pytest.mark.parametrize("size", [(96, 96), (72, 100)])  # 72x100: strides from // sizes
def test_units_equal_torchvision_pipeline(size):
    model, net = _build()
    model.eval()
    x = _images(size=size)
    with torch.no_grad():
        out, _ = _run(net, x)
        feats, ref, anchors = _torchvision(model, x)
        assert isinstance(out, RetinaNetOutput)
        for key in HEAD_KEYS:
            assert out[key].shape == ref[key].shape
            assert torch.allclose(out[key], ref[key], atol=1e-6), key
        assert out["cls_logits"].shape[-1] == C and out["bbox_regression"].shape[-1] == 4
        assert len(out["features"]) == 5
        for a, b in zip(out["features"], feats):
            assert torch.allclose(a, b, atol=1e-6)
        assert len(out["anchors"]) == 2 and out["image_size"] == size
        for a, b in zip(out["anchors"], anchors):
            assert torch.equal(a, b) and a.shape[0] == out["cls_logits"].shape[1]
        whole = net(x)  # UnitNet.forward makes its own bank
        assert torch.allclose(whole["cls_logits"], ref["cls_logits"], atol=1e-6)


def test_units_share_the_source_modules():
    model, net = _build()
    assert {id(p) for p in net.parameters()} == {id(p) for p in model.parameters()}
    assert all(p.requires_grad for p in model.parameters())  # nothing frozen
    assert not any("Frozen" in type(m).__name__ for m in model.modules())


@pytest.mark.parametrize("chans", [3, 1])
def test_export_loads_into_a_fresh_source_strictly(chans):
    model, net = _build(chans=chans)
    x = _images(chans)
    net.train()
    with torch.no_grad():
        net(x)  # moves the BN running stats away from a fresh model's
    torch.manual_seed(1)  # a fresh model with other weights
    fresh = retinanet_source(18, C, in_chans=chans)
    fresh.load_state_dict(net.export_state_dict(), strict=True)
    net.eval()
    fresh.eval()
    with torch.no_grad():
        out = net(x)
        _, ref, _ = _torchvision(fresh, x)
    for key in HEAD_KEYS:
        assert torch.allclose(out[key], ref[key], atol=1e-6), key


def _losses_and_grads(cut, isolate):
    """A loss on the final output after running units [0, cut) | [cut, end); with
    ``isolate`` h is detached and the bank sealed in between (LocalNet._walk)."""
    model, net = _build()
    x = _images()
    n = len(net.units)
    h, bank = _run(net, x, range(cut))
    written = {name: bank.read(name) for name in ("c3", "c4")}
    if isolate:
        h = h.detach()
        bank.seal()
    out, _ = _run(net, h, range(cut, n), bank)
    (out["cls_logits"].sigmoid().mean() + out["bbox_regression"].abs().mean()).backward()
    return net, written, bank, out


def _has_grad(module):
    return [p.grad is not None and bool(p.grad.abs().sum() > 0) for p in module.parameters()]


def test_block_cut_isolates_gradients_and_bank_skips():
    cut = 1 + [i.name for i in _build()[1].unit_info].index("layer3.1")  # writes c4
    assert cut == 7  # units 0-6 (stem .. layer3.1) | layer4.0, layer4.1, task unit
    net0, _, _, _ = _losses_and_grads(cut, isolate=False)  # one block: every unit learns
    assert all(all(_has_grad(u)) for u in net0.units)
    net, written, bank, out = _losses_and_grads(cut, isolate=True)
    assert all(t.requires_grad for t in written.values())  # attached in their own block
    assert not any(bank.read(name).requires_grad for name in ("c3", "c4"))  # sealed
    for i, unit in enumerate(net.units):
        got = _has_grad(unit)
        assert all(got) if i >= cut else not any(got), net.unit_info[i].name
    detached = out.detach()
    assert isinstance(detached, RetinaNetOutput) and detached["image_size"] == (96, 96)
    assert not detached["cls_logits"].requires_grad
    assert not any(f.requires_grad for f in detached["features"])


@pytest.mark.parametrize("depth,chans", [(18, (128, 256, 512)), (34, (128, 256, 512)),
                                         (50, (512, 1024, 2048))])
def test_depths_build_on_meta_with_c3_c5_channels(depth, chans):
    with torch.device("meta"):
        model = retinanet_source(depth, C)
        net = retinanet_units(model, 3, C)
    info = net.unit_info
    c3, c4 = (next(i for i in info if i.writes == n) for n in ("c3", "c4"))
    c5 = info[-2]
    assert [(i.name.split(".")[0], i.channels, i.reduction) for i in (c3, c4, c5)] == [
        ("layer2", chans[0], 8), ("layer3", chans[1], 16), ("layer4", chans[2], 32)]
    assert info[-1].kind == "head" and info[-1].reads == ("c3", "c4", "image")
    blocks = sum(len(getattr(model.backbone.body, f"layer{k}")) for k in range(1, 5))
    assert len(net.units) == blocks + 2  # stem + blocks + task unit
    fpn_in = [b[0].in_channels for b in model.backbone.fpn.inner_blocks]
    assert fpn_in == list(chans)
    assert model.backbone.fpn.extra_blocks.use_P5  # v1 layout: P6 from P5


@pytest.mark.parametrize("depth", [17, "50"])
def test_unknown_depth_names_the_choices(depth):
    with pytest.raises(ConfigError, match="101"):
        retinanet_source(depth, C)
