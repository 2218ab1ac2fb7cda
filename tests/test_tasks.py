"""The task layer (issue 14): segmentation through the same loop, the bank across blocks,
head families per task."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from locallearn import LocalNet
from locallearn.errors import ConfigError
from locallearn.nets.units import UnitInfo, UnitNet
from locallearn.tasks import get_task

C = 4  # segmentation classes


def _cbr(cin, cout, stride=1):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU())


class SkipHead(nn.Module):
    """Reads the stem's features from the bank (a DeepLabV3+-style skip)."""

    def __init__(self, cin, clow, classes):
        super().__init__()
        self.low = nn.Conv2d(clow, 8, 1)
        self.out = nn.Conv2d(cin + 8, classes, 3, padding=1)

    def forward(self, h, low):
        h = F.interpolate(h, size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.out(torch.cat([h, self.low(low)], 1))


def tiny_segmenter(in_chans=1, classes=C):
    units = [_cbr(in_chans, 8), _cbr(8, 16, 2), _cbr(16, 16), _cbr(16, 32, 2), _cbr(32, 32),
             SkipHead(32, 8, classes)]
    info = [UnitInfo("stem", 8, 1, writes="low"), UnitInfo("s1", 16, 2), UnitInfo("s2", 16, 2),
            UnitInfo("s3", 32, 4), UnitInfo("s4", 32, 4),
            UnitInfo("head", classes, 1, kind="head", reads=("low",))]
    return UnitNet(units, info, in_chans, classes, task="segmentation")


def _batch(b=2, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 1, size, size, generator=g)
    y = torch.randint(0, C, (b, size, size), generator=g)
    y[:, :2] = 255  # an ignored border
    return x, y


def test_k1_equals_backprop_through_a_bank_skip():
    torch.manual_seed(0)
    model = tiny_segmenter()
    ref = copy.deepcopy(model)
    x, y = _batch()
    net = LocalNet(model, 1, "e2e", image_size=(16, 16))
    (loss,) = net.train_step(x, y)
    # plain backprop: run the units by hand, the head reading the stem's (attached) output
    h = x
    for i, unit in enumerate(ref.units[:-1]):
        h = unit(h)
        if i == 0:
            low = h
    out = ref.units[-1](h, low)
    want = F.cross_entropy(out, y, ignore_index=255)
    want.backward()
    assert loss.item() == pytest.approx(want.item(), rel=1e-6)
    for (n, p), q in zip(model.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=n)
    # the skip carried gradient: the stem gets some through the head's direct read
    assert model.units[0][0].weight.grad.abs().sum() > 0


def test_a_bank_read_from_an_earlier_block_is_detached():
    torch.manual_seed(0)
    net = LocalNet(tiny_segmenter(), 2, "greedy", image_size=(16, 16), boundaries=[2])
    x, y = _batch()
    losses = list(net.block_losses(x, y))
    # generator order: block 0's loss, then block 1 (whose head unit reads "low" from block 0)
    last = losses[-1][1]
    last.backward()
    for p in net.block_units(0)[0].parameters():
        assert p.grad is None or p.grad.abs().sum() == 0
    assert net.model.units[-1].low.weight.grad.abs().sum() > 0  # the read itself is used


def test_loss_ignores_255_and_upsamples():
    task = get_task("segmentation")
    y = torch.tensor([[[0, 1], [255, 255]]])
    logits = torch.zeros(1, 2, 1, 1)
    logits[0, 1] = 5.0
    loss = task.loss(logits, y)
    lp = torch.log_softmax(torch.tensor([0.0, 5.0]), 0)
    assert loss.item() == pytest.approx(-(lp[0] + lp[1]).item() / 2, rel=1e-6)
    assert task.loss(logits, torch.full((1, 2, 2), 255)).item() == 0.0  # all ignored: 0, no NaN


FAMILIES = ["greedy", "infopro", "slm"]


@pytest.mark.parametrize("bridge", [None, "man", "manpp"])
@pytest.mark.parametrize("family", FAMILIES)
def test_every_fitting_family_trains_a_segmenter(family, bridge):
    torch.manual_seed(0)
    method = family if bridge is None else f"{family}+{bridge}"
    net = LocalNet(tiny_segmenter(), 3, method, image_size=(16, 16))
    x, y = _batch()
    losses = net.train_step(x, y)
    assert losses.shape == (3,) and torch.isfinite(losses).all()
    # MAN++'s scale: d/ds = LB(h) - EMA(h), exactly 0 while both copies are still equal
    missing = [n for n, p in net.named_parameters() if p.requires_grad
               and (p.grad is None or not p.grad.abs().sum() > 0)
               and not (n.endswith(".scale") and p.grad is not None)]
    assert not missing, missing
    preds = net.head_logits(x)
    assert all(p.shape == (2, C, *p.shape[2:]) for p in preds)


@pytest.mark.parametrize("family", ["dgl", "predsim"])
def test_classification_only_families_say_so(family):
    with pytest.raises(ConfigError, match=rf"head '{family}' serves classification only.*"
                                          r"segmentation use one of: greedy, infopro, slm"):
        LocalNet(tiny_segmenter(), 2, family, image_size=(16, 16))


@pytest.mark.parametrize("bad, match", [
    (lambda y: y.float(), "integer class ids"),
    (lambda y: y[:, :8], "masks are 8x16 but the images 16x16"),
    (lambda y: y[0], r"masks \[B, H, W\]"),
    (lambda y: torch.where(y == 1, 7, y), "class id 7, outside the model's classes 0..3"),
])
def test_bad_masks_are_one_clear_error(bad, match):
    net = LocalNet(tiny_segmenter(), 2, "greedy", image_size=(16, 16))
    x, y = _batch()
    with pytest.raises((ConfigError, TypeError), match=match):
        net.train_step(x, bad(y))


def test_slm_copies_one_unit_per_remaining_stage_with_fresh_weights():
    torch.manual_seed(0)
    net = LocalNet(tiny_segmenter(), 2, "slm", image_size=(16, 16), boundaries=[1])
    head = net.heads[0]
    # rest after the stem: s1, s2 (stage 16@2), s3, s4 (stage 32@4), the task unit
    assert [i.name for i in head.unit_info] == ["s1", "s3", "head"]
    assert head.unit_info[-1].reads == ("low",)
    assert not torch.equal(head.units[0][0].weight, net.model.units[1][0].weight)
    assert head.units[0][0].weight.data_ptr() != net.model.units[1][0].weight.data_ptr()


def test_predict_and_metrics_for_segmentation():
    from locallearn.evaluate import evaluate_heads, evaluate_metrics

    torch.manual_seed(0)
    net = LocalNet(tiny_segmenter(), 2, "slm", image_size=(16, 16))
    x, y = _batch()
    assert net.predict(x).shape == (2, 16, 16)
    scores = evaluate_metrics(net, [(x, y)], torch.device("cpu"))
    assert set(scores) == {"miou", "mean_acc", "pixel_acc"}
    assert all(0.0 <= v <= 1.0 for v in scores.values())
    heads = evaluate_heads(net, [(x, y)], torch.device("cpu"))
    assert len(heads) == 2 and heads[-1] == pytest.approx(scores["miou"])


@pytest.mark.parametrize("bridge", ["", "+manpp"])
def test_slm_under_a_bridge_that_stands_in_for_the_skip_writer(bridge):
    """Block 1 starts with the stem's successor... here the cut puts the unit that writes
    the skip first in block 1, so a bridge replaces it: the slm copy must still find it."""
    torch.manual_seed(0)
    info_writer = 1  # make unit s1 the writer instead of the stem
    model = tiny_segmenter()
    model.unit_info[0] = UnitInfo("stem", 8, 1)
    model.unit_info[info_writer] = UnitInfo("s1", 16, 2, writes="low")
    model.units[-1] = SkipHead(32, 16, C)
    net = LocalNet(model, 2, f"slm{bridge}", image_size=(16, 16), boundaries=[1])
    x, y = _batch()
    assert torch.isfinite(net.train_step(x, y)).all()
