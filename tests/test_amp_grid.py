"""Every bridge x learnable-copy kind x recompute takes a train_step under autocast.

The MAN/MAN++ mix used to meet two dtypes under autocast with ``lb="channel"`` (its
float32 affine promoted the bf16 EMA output) and crashed; a step must give finite
losses close to float32's, a finite gradient for every trainable parameter, and leave
the parameters float32 (autocast computes in low precision, it never stores in it).
"""
import itertools

import pytest
import torch

from locallearn import LocalNet, create_model

HAS_CUDA = torch.cuda.is_available()
# (device, autocast dtype or None); the CUDA rows run only where there is a GPU
AMPS = {"none": ("cpu", None), "bf16-cpu": ("cpu", torch.bfloat16),
        "fp16-cuda": ("cuda", torch.float16), "bf16-cuda": ("cuda", torch.bfloat16)}
GRID = list(itertools.product(AMPS, ("unit", "channel"), ("ema", "man", "manpp"),
                              (False, True)))


def _net(bridge, lb, recompute, device):
    torch.manual_seed(0)
    # the head family alternates so that greedy and dgl heads both meet every cell
    head = "dgl" if recompute else "greedy"
    opts = {"conv_width": 16, "mlp_width": 32} if head == "dgl" else None  # small: fast
    model = create_model("resnet20", num_classes=4, in_chans=1)
    net = LocalNet(model, 3, f"{head}+{bridge}", image_size=(8, 8), lb=lb, recompute=recompute,
                   head_opts=opts)
    with torch.no_grad():  # learnable copies unlike the EMA ones, so the mix is not trivial
        for b in net.bridges:
            for q in (b.lb.parameters() if b.lb is not None else ()):
                q.add_(0.1 * torch.randn_like(q))
            if b.scale is not None:
                b.scale.fill_(1.2)
    return net.to(device)


def _batch(device):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 1, 8, 8, generator=g)
    y = torch.randint(0, 4, (6,), generator=g)
    return x.to(device), y.to(device)


@pytest.mark.parametrize("amp,lb,bridge,recompute", GRID,
                         ids=["-".join(map(str, c)) for c in GRID])
def test_train_step_under_autocast(amp, lb, bridge, recompute):
    device, dtype = AMPS[amp]
    if device == "cuda" and not HAS_CUDA:
        pytest.skip("needs CUDA")
    x, y = _batch(device)
    net = _net(bridge, lb, recompute, device)
    # the float32 reference step (the same net, from the same seed)
    ref = _net(bridge, lb, recompute, device).train_step(x, y) if dtype is not None else None
    backward = None
    scaler = None
    if dtype == torch.float16:  # fp16 trains with a gradient scaler, as train.py does
        # a moderate scale: at the default 2**16 the first steps' fp16 gradients overflow
        # by design (the scaler then skips the step and lowers the scale)
        scaler = torch.amp.GradScaler("cuda", init_scale=2.0 ** 10)
        backward = lambda loss: scaler.scale(loss).backward()  # noqa: E731
    with torch.autocast(device, dtype=dtype, enabled=dtype is not None):
        losses = net.train_step(x, y, backward=backward)
    assert losses.shape == (3,) and torch.isfinite(losses).all(), losses
    if ref is not None:  # the same objective as in float32, to low-precision accuracy
        assert torch.allclose(losses.float(), ref, rtol=0.05, atol=0.05), (losses, ref)
    trainable = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    if bridge != "ema":
        assert any(n.startswith("bridges.0.lb") for n, _ in trainable)
    opt = torch.optim.SGD([p for _, p in trainable], lr=0.1)
    if scaler is not None:
        scaler.unscale_(opt)
    for n, p in trainable:
        assert p.grad is not None, f"{n} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{n} has a non-finite gradient"
        assert p.grad.dtype == torch.float32, (n, p.grad.dtype)
    if scaler is not None:
        scaler.step(opt)
        scaler.update()
        assert scaler.get_scale() == 2.0 ** 10  # no overflow: the step was taken
    else:
        opt.step()
    net.ema_update()
    for n, t in [*net.named_parameters(), *net.named_buffers()]:
        if t.is_floating_point():
            assert t.dtype == torch.float32, (n, t.dtype)
            assert torch.isfinite(t).all(), n
