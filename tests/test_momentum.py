import pytest
import torch
from torch import nn

from locallearn import MomentumBridge
from locallearn.momentum import ema_update


def _unit():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())


def test_ema_copy_starts_equal_and_frozen():
    unit = _unit()
    b = MomentumBridge(unit, 4, "manpp")
    for pe, pl, pu in zip(b.ema.parameters(), b.lb.parameters(), unit.parameters()):
        assert torch.equal(pe, pu) and torch.equal(pl, pu)
        assert not pe.requires_grad and pl.requires_grad
        assert pe.data_ptr() != pu.data_ptr()
    assert b.scale.item() == 1.0


def test_manpp_output_and_scale_gradient_by_hand():
    unit = _unit()
    b = MomentumBridge(unit, 4, "manpp")
    with torch.no_grad():  # make LB differ from EMA so the gradient of s is non-zero
        b.lb[0].weight.add_(0.1)
        b.scale.fill_(1.3)
    h = torch.randn(2, 3, 5, 5, requires_grad=True)
    y = b(h)
    lb_out, ema_out = b.lb(h), b.ema(h)
    assert torch.allclose(y, 1.3 * lb_out + 0.7 * ema_out, atol=1e-6)
    g = torch.randn_like(y)
    y.backward(g)
    # d/ds [s*LB + (2-s)*EMA] = LB - EMA
    expected = (g * (lb_out - ema_out)).sum()
    assert torch.allclose(b.scale.grad, expected.detach(), atol=1e-5)
    # the input gets gradient through both copies, the frozen EMA copy gets none
    assert h.grad is not None and h.grad.abs().sum() > 0
    assert all(p.grad is None for p in b.ema.parameters())


@pytest.mark.parametrize("layouts", [("cl", "cl", "cl"), ("std", "std", "std"),
                                     ("cl", "std", "cl"), ("std", "std", "cl")])
def test_scaled_mix_matches_the_plain_expression(layouts):
    from locallearn.momentum import ScaledMix

    def make(layout, seed):
        t = torch.randn(3, 5, 4, 6, generator=torch.Generator().manual_seed(seed))
        return t.contiguous(memory_format=torch.channels_last) if layout == "cl" else t

    b0, e0, g = make(layouts[0], 0), make(layouts[1], 1), make(layouts[2], 2)
    outs = []
    for fused in (False, True):
        b, e = b0.clone().requires_grad_(True), e0.clone().requires_grad_(True)
        s = torch.tensor(1.3, requires_grad=True)
        y = ScaledMix.apply(b, e, s) if fused else s * b + (2.0 - s) * e
        y.backward(g)
        outs.append((y.detach(), b.grad, e.grad, s.grad))
    for plain, fused in zip(*outs):
        assert torch.allclose(plain, fused, rtol=1e-5, atol=1e-5)
    # and in double precision against finite differences
    args = (b0.double().requires_grad_(True), e0.double().requires_grad_(True),
            torch.tensor(0.7, dtype=torch.float64, requires_grad=True))
    assert torch.autograd.gradcheck(ScaledMix.apply, args)


def test_man_and_ema_only_formulas():
    unit = _unit()
    h = torch.randn(2, 3, 5, 5)
    man = MomentumBridge(unit, 4, "man")
    assert man.scale is None
    assert torch.allclose(man(h), man.lb(h) + man.ema(h))
    ema = MomentumBridge(unit, 4, "ema")
    assert ema.lb is None and torch.allclose(ema(h), unit(h))


def test_channel_lb():
    unit = _unit()
    b = MomentumBridge(unit, 4, "manpp", lb="channel")
    with torch.no_grad():
        b.lb.weight.fill_(2.0)
        b.lb.bias.fill_(0.5)
        b.scale.fill_(0.5)
    h = torch.randn(2, 3, 5, 5)
    e = unit(h)
    assert torch.allclose(b(h), 0.5 * (2 * e + 0.5) + 1.5 * e, atol=1e-6)
    assert sum(p.numel() for p in b.lb.parameters()) == 8


def test_ema_after_n_steps_is_closed_form_average():
    m, n = 0.9, 5
    unit = _unit()
    b1, b2 = MomentumBridge(unit, 4, "man"), MomentumBridge(unit, 4, "manpp")
    w0 = unit[0].weight.detach().clone()
    thetas = []
    for i in range(n):
        with torch.no_grad():
            unit[0].weight.copy_(torch.full_like(w0, float(i + 1)))
        thetas.append(unit[0].weight.detach().clone())
        ema_update([b1, b2], [unit, unit], m)
    # ema_n = m^n * ema_0 + (1-m) * sum_i m^(n-1-i) * theta_i
    expected = m ** n * w0 + sum((1 - m) * m ** (n - 1 - i) * t for i, t in enumerate(thetas))
    assert torch.allclose(b1.ema[0].weight, expected, atol=1e-6)
    assert torch.allclose(b2.ema[0].weight, expected, atol=1e-6)
    # the learnable copy is untouched by the EMA rule
    assert torch.equal(b1.lb[0].weight, w0)


def test_bad_bridge_kind():
    with pytest.raises(ValueError, match="bridge 'mann'.*manpp"):
        MomentumBridge(_unit(), 4, "mann")
    with pytest.raises(ValueError, match="lb 'bias'.*channel"):
        MomentumBridge(_unit(), 4, "man", lb="bias")


def test_random_init_copies_differ_from_the_unit_but_not_from_each_other():
    unit = _unit()
    before = [p.clone() for p in unit.parameters()]
    b = MomentumBridge(unit, 4, "manpp", init="random")
    for pe, pl, pu, p0 in zip(b.ema.parameters(), b.lb.parameters(), unit.parameters(), before):
        assert torch.equal(pe, pl) and torch.equal(pu, p0)  # the live unit is untouched
    assert not torch.equal(b.ema[0].weight, unit[0].weight)
    assert not b.ema[0].weight.requires_grad and b.lb[0].weight.requires_grad
    with pytest.raises(ValueError, match="bridge init 'zeros'.*random"):
        MomentumBridge(_unit(), 4, "manpp", init="zeros")
