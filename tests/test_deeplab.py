"""DeepLabV3 / V3+ as units (nets/deeplab.py): shapes, a local step, K=1 == backprop
through the source model, isolation across the bank skip, strict export."""
import pytest
import torch
import torchvision

import locallearn.tasks
from locallearn import LocalNet, create_model
from locallearn.nets.deeplab import VARIANTS, DeepLabV3Plus, source_model
from locallearn.tasks.segmentation import upsample

C = 3  # classes
SEGMENTERS = sorted(VARIANTS)
TASK = locallearn.tasks.get_task("segmentation")


def _batch(chans=1, size=32, n=2, seed=0):
    """Images and int64 masks with some ignored (255) pixels."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, chans, size, size, generator=g)
    y = torch.randint(0, C, (n, size, size), generator=g)
    y[:, :3] = 255
    return x, y


def _model(name, chans=1):
    torch.manual_seed(0)
    return create_model(name, num_classes=C, in_chans=chans)


def _local(model, k=2, method="infopro+manpp", size=32, **kw):
    chans = model.in_chans
    return LocalNet(model, k, method, image_size=(size, size), mean=[0.5] * chans,
                    std=[0.25] * chans, **kw)


@pytest.mark.parametrize("name", SEGMENTERS)
def test_builds_steps_and_every_parameter_learns(name):
    model = _model(name)
    assert model.task == "segmentation" and model.default_head == "infopro"
    assert model.default_head_opts["decoder"] == "conv_first"
    x, y = _batch()
    out = model(x)
    stride = model.unit_info[-1].reduction
    assert out.shape == (2, C, 32 // stride, 32 // stride) and torch.isfinite(out).all()
    net = _local(model)
    losses = net.train_step(x, y)  # no after_block: gradients accumulate in .grad
    assert losses.shape == (2,) and torch.isfinite(losses).all()
    missing = [n for n, p in net.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing


@pytest.mark.parametrize("name", ["deeplabv3_resnet18", "deeplabv3plus_resnet18"])
@pytest.mark.parametrize("chans,size", [(1, 32), (1, 64), (3, 64)])
def test_small_inputs_and_channels(name, chans, size):
    model = _model(name, chans)
    stride = 8 if "plus" not in name else 4  # V3: output stride 8; V3+: the stride-4 skip
    x, y = _batch(chans, size)
    assert model(x).shape == (2, C, size // stride, size // stride)
    losses = _local(model, size=size).train_step(x, y)
    assert torch.isfinite(losses).all()


@pytest.mark.parametrize("name", SEGMENTERS)
def test_unit_info_matches_a_dry_run(name):
    """Channels and reductions are computed from the strides; check them against shapes."""
    model = _model(name).eval()
    x = torch.zeros(1, 1, 64, 64)
    h, low = x, None
    with torch.no_grad():
        for unit, info in zip(model.units, model.unit_info):
            h = unit(h, low) if info.reads else unit(h)
            if info.writes == "low":
                low = h
            assert (h.shape[1], 64 // h.shape[2]) == (info.channels, info.reduction), info.name
    plus = VARIANTS[name][1]
    assert [i.name for i in model.unit_info if i.writes] == (["layer1.1" if "18" in name
                                                             else "layer1.2"] if plus else [])
    assert model.unit_info[-1].reads == (("low",) if plus else ())


def _tv_reference(name):
    """The user-facing model a ``name`` exports to (torchvision's own for R50/R101)."""
    depth, plus = VARIANTS[name]
    if not plus and depth != 18:
        return getattr(torchvision.models.segmentation, f"deeplabv3_resnet{depth}")(
            weights=None, weights_backbone=None, num_classes=C, aux_loss=False)
    return source_model(name, num_classes=C, in_chans=3)


@pytest.mark.parametrize("name", ["deeplabv3_resnet18", "deeplabv3_resnet50",
                                  "deeplabv3plus_resnet18"])
def test_k1_equals_backprop_through_the_source_model(name):
    model = _model(name, chans=3)
    ref = _tv_reference(name)
    ref.load_state_dict(model.export_state_dict(), strict=True)
    x, y = _batch(3, 32)
    net = _local(model, k=1, method="e2e")
    torch.manual_seed(1)  # the ASPP's Dropout(0.5) draws the same mask in both
    loss = net.train_step(x, y)[0]
    torch.manual_seed(1)
    out = ref(x)["out"]  # torchvision upsamples to the input size itself
    assert out.shape == (2, C, 32, 32)
    ref_loss = TASK.loss(out, y)
    ref_loss.backward()
    assert torch.allclose(loss, ref_loss.detach(), atol=1e-5)
    ours = dict(model.source.named_parameters())
    for n, q in ref.named_parameters():
        assert torch.allclose(ours[n].grad, q.grad, atol=1e-5, rtol=1e-4), n


def test_bank_skip_across_blocks_sends_no_gradient_back():
    """V3+ with 'low' written in block 0 and read in block 1: the last loss alone leaves
    every block-0 parameter (units, head 0, bridge 0) without gradient."""
    model = _model("deeplabv3plus_resnet18")
    net = _local(model, boundaries=[4])  # units 0-3 (stem, layer1.0-1, layer2.0) | rest
    low = [i for i, info in enumerate(model.unit_info) if info.writes == "low"]
    assert low == [2] and net.ranges[0] == (0, 4)
    x, y = _batch()
    losses = [loss for _, loss in net.block_losses(x, y)]
    losses[-1].backward()
    for j, should_learn in ((0, False), (1, True)):
        grads = [p.grad for p in net.block_parameters(j)]
        got = [g is not None and bool(g.abs().sum() > 0) for g in grads]
        assert all(got) if should_learn else not any(got), j


@pytest.mark.parametrize("name", ["deeplabv3_resnet50", "deeplabv3_resnet101"])
def test_export_loads_into_torchvision_strictly(name):
    model = _model(name, chans=3).eval()
    ref = _tv_reference(name).eval()
    ref.load_state_dict(model.export_state_dict(), strict=True)
    x, _ = _batch(3, 32)
    with torch.no_grad():
        assert torch.allclose(upsample(model(x), (32, 32)), ref(x)["out"], atol=1e-5)


@pytest.mark.parametrize("name", ["deeplabv3plus_resnet18", "deeplabv3plus_resnet50"])
@pytest.mark.parametrize("chans", [1, 3])
def test_v3plus_export_loads_into_a_fresh_source(name, chans):
    model = _model(name, chans).eval()
    fresh = source_model(name, num_classes=C, in_chans=chans).eval()
    assert isinstance(fresh, DeepLabV3Plus)
    fresh.load_state_dict(model.export_state_dict(), strict=True)
    x, _ = _batch(chans, 32)
    with torch.no_grad():
        out = fresh(x)["out"]
        assert out.shape == (2, C, 32, 32)
        assert torch.allclose(upsample(model(x), (32, 32)), out, atol=1e-5)


def test_unknown_source_model_names_the_choices():
    with pytest.raises(ValueError, match="deeplabv3plus_resnet50"):
        source_model("deeplabv4_resnet50")


@pytest.mark.parametrize("method", ["e2e", "infopro+manpp", "slm+manpp"])
def test_small_deeplab_trains_and_exports(method, tmp_path):
    """deeplabv3_resnet20 (the CPU benchmark's model): a step of every kind, and its own
    state dict as the export format."""
    torch.manual_seed(0)
    model = create_model("deeplabv3_resnet20", num_classes=3, in_chans=1)
    net = LocalNet(model, 1 if method == "e2e" else 4, method, image_size=(32, 32))
    x = torch.randn(2, 1, 32, 32)
    y = torch.randint(0, 3, (2, 32, 32))
    losses = net.train_step(x, y)
    assert torch.isfinite(losses).all()
    assert model(x).shape == (2, 3, 8, 8)  # output stride 4
    fresh = create_model("deeplabv3_resnet20", num_classes=3, in_chans=1)
    fresh.load_state_dict(model.export_state_dict(), strict=True)
