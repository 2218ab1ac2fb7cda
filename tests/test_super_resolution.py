"""Super-resolution (issue 18): EDSR as units, its global skip through the bank, the local
heads, L1, PSNR / SSIM as the EDSR code measures them."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F

from locallearn import LocalNet
from locallearn.errors import ConfigError
from locallearn.nets import create_model
from locallearn.tasks import get_task
from locallearn.tasks.sr_metrics import SRMetric, psnr_ssim
from locallearn.tasks.sr_rules import to_y


def _model(scale=2, name="edsr_tiny"):
    torch.manual_seed(0)
    return create_model(f"{name}_x{scale}", num_classes=3, in_chans=3)


def _batch(b=2, size=8, scale=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, size, size, generator=g), torch.rand(b, 3, size * scale, size * scale,
                                                                generator=g)


@pytest.mark.parametrize("name,blocks,features,scale", [("edsr", 32, 256, 3),
                                                        ("edsr_baseline", 16, 64, 4),
                                                        ("edsr_tiny", 8, 32, 2)])
def test_edsr_sizes_and_output(name, blocks, features, scale):
    with torch.device("meta"):
        model = create_model(f"{name}_x{scale}", num_classes=3)
    assert model.scale == scale and model.num_body_units == 1 + blocks
    assert model.unit_info[0].writes == "shallow" and model.unit_info[-1].reads == ("shallow",)
    assert model.units[1].body[0].out_channels == features
    if name == "edsr":
        assert model.units[1].res_scale == 0.1
    if name == "edsr_tiny":
        x = torch.rand(1, 3, 5, 7)
        assert _model(scale).eval()(x).shape == (1, 3, 5 * scale, 7 * scale)


def test_k1_equals_backprop_with_the_global_skip_through_the_bank():
    model = _model()
    ref = copy.deepcopy(model)
    x, y = _batch()
    net = LocalNet(model, 1, "e2e", image_size=(8, 8))
    (loss,) = net.train_step(x, y)
    # EDSR by hand: head, body, then the tail adding the head's (attached) output back
    shallow = ref.units[0](x)
    h = shallow
    for unit in ref.units[1:-1]:
        h = unit(h)
    tail = ref.units[-1]
    want = F.l1_loss(tail.predictor(tail.conv(h) + shallow), y)
    want.backward()
    assert loss.item() == pytest.approx(want.item(), rel=1e-6)
    for (n, p), q in zip(model.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=n)
    # the skip carried gradient into the head conv straight from the loss
    assert model.units[0][1].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("method", ["slm", "slm+manpp", "greedy"])
def test_gradient_isolation_with_the_bank_image_read_by_every_head(method):
    net = LocalNet(_model(), 3, method, image_size=(8, 8))
    x, y = _batch()
    blocks = [[p for u in net.block_units(j) for p in u.parameters()] for j in range(net.k)]
    reads = []
    for j, loss in net.block_losses(x, y):
        own = blocks[j] + (list(net.heads[j].parameters()) + list(net.bridges[j].parameters())
                           if j < net.k - 1 and net.bridges else
                           list(net.heads[j].parameters()) if j < net.k - 1 else [])
        own = [p for p in own if p.requires_grad]  # a bridge's EMA copy is frozen
        others = [p for i, ps in enumerate(blocks) if i != j for p in ps]
        grads = torch.autograd.grad(loss, own + others, allow_unused=True, retain_graph=True)
        assert all(g is None or g.abs().sum() == 0 for g in grads[len(own):]), j
        assert sum(float(g.abs().sum()) for g in grads[:len(own)] if g is not None) > 0, j
        if j < net.k - 1:
            reads.append(net.heads[j])
    if method.startswith("slm"):
        # every slm head fuses the bank's low-resolution features: change them, its output moves
        from locallearn.bank import FeatureBank

        for j, head in enumerate(reads):
            feats = torch.rand(2, 32, 8, 8)
            bank = FeatureBank(x)
            bank.put("shallow", torch.zeros(2, 32, 8, 8))
            a = head.logits(feats, bank)
            bank.put("shallow", torch.ones(2, 32, 8, 8))
            assert not torch.allclose(a, head.logits(feats, bank)), j
    else:  # greedy: the task predictor alone, no bank read (what the paper shows collapse)
        assert not getattr(net.heads[0], "needs_bank", False)


FAMILIES = ["greedy", "infopro", "slm"]


@pytest.mark.parametrize("bridge", [None, "man", "manpp"])
@pytest.mark.parametrize("family", FAMILIES)
def test_every_fitting_family_and_bridge_takes_a_step(family, bridge):
    method = family if bridge is None else f"{family}+{bridge}"
    net = LocalNet(_model(), 3, method, image_size=(8, 8))
    before = [p.detach().clone() for p in net.parameters()]
    x, y = _batch()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    losses = net.train_step(x, y)
    opt.step()
    assert losses.shape == (3,) and torch.isfinite(losses).all()
    moved = sum(not torch.equal(a, p) for a, p in zip(before, net.parameters()))
    assert moved > len(before) // 2
    assert all(o.shape == (2, 3, 16, 16) for o in net.head_logits(x))


@pytest.mark.parametrize("family", ["dgl", "predsim"])
def test_classification_only_families_refuse_super_resolution(family):
    with pytest.raises(ConfigError, match=rf"head '{family}' serves classification only.*"
                                          r"super_resolution use one of: greedy, infopro, slm"):
        LocalNet(_model(), 2, family, image_size=(8, 8))


def test_targets_of_the_wrong_scale_are_one_clear_error():
    net = LocalNet(_model(scale=3), 2, "slm", image_size=(8, 8))
    x, _ = _batch()
    with pytest.raises(ConfigError, match=r"x3 model.*3x the low-resolution"):
        net.train_step(x, torch.rand(2, 3, 16, 16))
    with pytest.raises(TypeError, match="float images"):
        net.train_step(x, torch.zeros(2, 3, 24, 24, dtype=torch.uint8))

    class Data:
        name, scale, eval_rule = "sr-photos:scale=2", 2, "y"

    with pytest.raises(ConfigError, match=r"upscales x3 but dataset 'sr-photos:scale=2' is x2"):
        net.task.for_data(Data())


def test_l1_loss_and_unbound_task():
    task = get_task("super_resolution").for_model(_model())
    out, y = torch.zeros(1, 3, 4, 4), torch.full((1, 3, 4, 4), 0.25)
    assert task.loss(out, y).item() == pytest.approx(0.25)
    with pytest.raises(ConfigError, match="not bound"):
        get_task("super_resolution").metric(3, torch.device("cpu"))


def _flat(value, size=32):
    return torch.full((1, 3, size, size), value / 255.0)


def test_psnr_ssim_identical_images_and_a_constant_offset():
    hr = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    psnr, ssim = psnr_ssim(hr, hr, scale=2, rule="y")
    assert torch.isinf(psnr).all() and torch.allclose(ssim, torch.ones(2))
    # an offset of 10 grey levels on every channel: RGB error 10/255, luma error 10*219/255/255
    a, b = _flat(100), _flat(110)
    rgb, _ = psnr_ssim(b, a, scale=2, rule="rgb")
    y, ssim_y = psnr_ssim(b, a, scale=2, rule="y")
    assert rgb.item() == pytest.approx(20 * math.log10(255 / 10), abs=1e-4)
    assert y.item() == pytest.approx(20 * math.log10(255 / (10 * 219 / 255)), abs=1e-4)
    # flat images: SSIM is its luminance term (2 mu_a mu_b + C1) / (mu_a^2 + mu_b^2 + C1)
    ya, yb = (16 + 100 * 219 / 255) / 255, (16 + 110 * 219 / 255) / 255
    c1 = 0.01 ** 2
    assert ssim_y.item() == pytest.approx((2 * ya * yb + c1) / (ya ** 2 + yb ** 2 + c1), abs=1e-5)


def test_the_border_and_y_channel_rules():
    white, black = torch.ones(1, 3, 2, 2), torch.zeros(1, 3, 2, 2)
    assert to_y(white).flatten().tolist() == pytest.approx([235 / 255] * 4)
    assert to_y(black).flatten().tolist() == pytest.approx([16 / 255] * 4)
    hr = _flat(100, 40)
    for rule, shave in (("y", 3), ("rgb", 9)):  # x3: a 3-pixel border (y), 3 + 6 (rgb)
        inside = hr.clone()
        inside[..., shave - 1, 20] = 0.0  # in the border: shaved, so a perfect score
        assert torch.isinf(psnr_ssim(inside, hr, scale=3, rule=rule)[0]).all(), rule
        inside[..., shave, 20] = 0.0  # the first measured row
        assert torch.isfinite(psnr_ssim(inside, hr, scale=3, rule=rule)[0]).all(), rule
    # the output is measured as an 8-bit image: below half a grey level is no error
    assert torch.isinf(psnr_ssim(hr + 0.4 / 255, hr, scale=2)[0]).all()
    with pytest.raises(ConfigError, match="nothing left after shaving"):
        psnr_ssim(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8), scale=4)


def test_metric_averages_per_image_psnr():
    m = SRMetric(scale=2, rule="rgb")
    a = _flat(100)
    m.update(torch.cat([_flat(110), _flat(101)]), torch.cat([a, a]))
    want = (20 * math.log10(255 / 10) + 20 * math.log10(255)) / 2  # the mean of the dBs
    assert m.compute()["psnr"] == pytest.approx(want, abs=1e-4)
    task = get_task("super_resolution")
    assert task.show("psnr", 31.234) == "31.23 dB" and task.show("ssim", 0.9) == "0.9000"
