import copy

import pytest
import torch
import torch.nn.functional as F

from locallearn import ConfigError, LocalNet, create_model, list_methods, list_models

IMG = (1, 12, 12)


def _batch(n=6, classes=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *IMG, generator=g), torch.randint(0, classes, (n,), generator=g)


def _net(model="resnet20", k=4, method="dgl+manpp", **kw):
    torch.manual_seed(0)
    m = create_model(model, num_classes=10, in_chans=IMG[0])
    return LocalNet(m, k, method, image_size=IMG[1:], mean=[0.5], std=[0.25], **kw)


def _grads(net):
    return {n: (p.grad.clone() if p.grad is not None else None) for n, p in net.named_parameters()}


@pytest.mark.parametrize("method", ["e2e", "dgl", "infopro+manpp"])
def test_k1_equals_plain_backprop(method):
    x, y = _batch()
    net = _net(k=1, method=method)
    plain = copy.deepcopy(net.model)
    assert len(net.heads) == 0 and len(net.bridges) == 0
    losses = net.train_step(x, y)
    F.cross_entropy(plain(x), y).backward()
    assert losses.shape == (1,)
    for (n, p), q in zip(net.model.named_parameters(), plain.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-6, rtol=1e-5), n


@pytest.mark.parametrize("method", ["dgl", "infopro+manpp", "predsim+man", "greedy+ema"])
def test_gradient_isolation(method):
    """The loss of block j reaches only block j, bridge j and head j."""
    x, y = _batch()
    net = _net(k=4, method=method)
    names = dict(net.named_parameters())
    owner = {}
    for j in range(net.k):
        for u in net.block_units(j):
            for p in u.parameters():
                owner[id(p)] = ("block", j)
    for j, (h, b) in enumerate(zip(net.heads, list(net.bridges) or [None] * len(net.heads))):
        for p in h.parameters():
            owner[id(p)] = ("aux", j)
        for p in (b.parameters() if b is not None else []):
            owner[id(p)] = ("aux", j)
    assert len(owner) == len(names)
    losses = list(net.block_losses(x, y))  # graphs stay alive while we hold the losses
    params = [p for p in names.values() if p.requires_grad]
    for j, loss in losses:
        grads = torch.autograd.grad(loss, params, allow_unused=True, retain_graph=True)
        touched = {owner[id(p)] for p, g in zip(params, grads) if g is not None and g.abs().sum() > 0}
        assert ("block", j) in touched
        assert touched <= {("block", j), ("aux", j)}, (j, touched)


def test_block_j_gets_gradient_through_frozen_ema_copy():
    x, y = _batch()
    net = _net(k=4, method="dgl+ema")  # EMA only: no learnable copy
    losses = list(net.block_losses(x, y))
    block0 = [p for u in net.block_units(0) for p in u.parameters()]
    grads = torch.autograd.grad(losses[0][1], block0, retain_graph=True)
    assert all(g.abs().sum() > 0 for g in grads)
    assert all(not p.requires_grad for p in net.bridges[0].ema.parameters())


METHODS = [m for m in list_methods() if not m.startswith("vit")]  # vit reads tokens


def _classifier(name):
    with torch.device("meta"):  # the task only: no weights
        return create_model(name).task == "classification"


# adapters: tests/test_adapters.py; segmenters: tests/test_deeplab.py, tests/test_tasks.py
NATIVE = [m for m in list_models() if ":" not in m and _classifier(m)]


@pytest.mark.parametrize("model", NATIVE)
@pytest.mark.parametrize("method", METHODS)
def test_every_model_and_method_steps(model, method):
    x, y = _batch(n=4)
    net = _net(model=model, k=1 if method == "e2e" else 3, method=method)
    losses = net.train_step(x, y)
    assert losses.shape == ((1,) if method == "e2e" else (3,))
    assert torch.isfinite(losses).all()
    missing = [n for n, p in net.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.1)
    opt.step()
    net.ema_update()
    out = net(x)
    assert out.shape == (4, 10) and torch.isfinite(out).all()


def test_heads_read_the_bridged_unit_metadata():
    net = _net(model="resnet20", k=10, method="infopro+manpp")
    # boundary 3 -> next block starts at unit 4 = layer2.0 (32 channels, reduction 2)
    assert net.ranges[4][0] == 4
    assert net.head_contexts[3].info.name == "layer2.0"
    assert net.head_contexts[3].info.channels == 32 and net.head_contexts[3].stage == 2
    plain = _net(model="resnet20", k=10, method="infopro")
    assert plain.head_contexts[3].info.name == "layer1.2"  # last unit of block 3
    # loss weights interpolate over the block index, identically with or without a bridge
    assert net.heads[3].ixx == plain.heads[3].ixx
    assert net.heads[0].ixx == 5.0 and abs(net.heads[8].ixx - 0.2) < 1e-9


def test_ema_update_tracks_next_unit_and_is_fused():
    net = _net(k=4, method="dgl+manpp", ema_momentum=0.5)
    src = net.ema_sources()
    with torch.no_grad():
        for p in src[1].parameters():
            p.add_(1.0)
    before = [p.clone() for p in net.bridges[1].ema.parameters()]
    net.ema_update()
    for b, e, s in zip(before, net.bridges[1].ema.parameters(), src[1].parameters()):
        assert torch.allclose(e, 0.5 * b + 0.5 * s)


def test_unknown_method_and_bad_momentum():
    with pytest.raises(ConfigError, match="dgl\\+mann.*infopro\\+manpp"):
        _net(method="dgl+mann")
    with pytest.raises(ConfigError, match="momentum"):
        _net(ema_momentum=1.5)
    with pytest.raises(ConfigError, match="K=11"):
        _net(k=11)


def test_block_parameters_partition_the_trainable_parameters():
    net = _net(k=4, method="infopro+manpp")
    seen = [id(p) for j in range(net.k) for p in net.block_parameters(j)]
    assert len(seen) == len(set(seen))
    assert set(seen) == {id(p) for p in net.parameters() if p.requires_grad}


def test_stepping_each_block_after_its_backward_equals_one_global_step():
    from locallearn import TrainConfig
    from locallearn.optim import BlockOptimizers

    x, y = _batch()
    a = _net(k=4, method="dgl+manpp")
    b = copy.deepcopy(a)
    cfg = TrainConfig(lr=0.1)
    per_block = BlockOptimizers(a, cfg)
    glob = torch.optim.SGD([p for p in b.parameters() if p.requires_grad], lr=0.1,
                           momentum=0.9, nesterov=True, weight_decay=1e-4)
    for _ in range(2):
        a.train_step(x, y, after_block=per_block.after_block)
        assert all(p.grad is None for p in a.parameters())  # gradients dropped per block
        a.ema_update()
        b.train_step(x, y)
        glob.step()
        glob.zero_grad(set_to_none=True)
        b.ema_update()
    for (n, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.allclose(p, q, atol=1e-6), n


def test_recompute_gives_identical_gradients_and_bn_stats():
    x, y = _batch()
    a = _net(k=4, method="infopro+manpp")
    b = _net(k=4, method="infopro+manpp", recompute=True)
    b.load_state_dict(a.state_dict())
    la, lb = a.train_step(x, y), b.train_step(x, y)
    assert torch.equal(la, lb)
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        if p.grad is not None:
            assert torch.allclose(p.grad, q.grad, atol=1e-6), n
    for (n, t), u in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(t, u), n  # running stats updated once, not twice


def test_head_logits_and_layerwise_accuracy():
    from locallearn.train import evaluate_heads

    x, y = _batch(n=8)
    net = _net(k=3, method="dgl+manpp").eval()
    with torch.no_grad():
        h0 = net.model.units[net.ranges[0][0]](x)
        for u in net.block_units(0)[1:]:
            h0 = u(h0)
        want0 = net.heads[0].logits(net.bridges[0](h0))
    got = net.head_logits(x)
    assert len(got) == 3 and torch.allclose(got[0], want0, atol=1e-6)
    assert torch.allclose(got[-1], net(x), atol=1e-6)
    # accuracy per block: a head made to answer the labels scores 1, one always wrong 0
    accs = evaluate_heads(net, [(x, y)], torch.device("cpu"))
    want = [(s.argmax(1) == y).float().mean().item() for s in got]
    assert accs == pytest.approx(want)
    assert net.bridge_scales() == [1.0, 1.0]
    assert net.ema_lags() == [0.0, 0.0]  # the copies start equal to their units
    with torch.no_grad():
        src = net.ema_sources()[1]
        for p in src.parameters():
            p.mul_(2.0)  # the unit moves away: its EMA copy now trails by 1/2 of its norm
    assert net.ema_lags()[0] == 0.0 and net.ema_lags()[1] == pytest.approx(0.5)
    net.heads[1].logits = lambda z: F.one_hot(y, 10).float()
    net.heads[0].logits = lambda z: F.one_hot((y + 1) % 10, 10).float()
    assert evaluate_heads(net, [(x, y)], torch.device("cpu"))[:2] == [0.0, 1.0]
    net.heads[0].logits = lambda z: None  # e.g. a SupCon head: no class scores
    assert evaluate_heads(net, [(x, y)], torch.device("cpu"))[0] is None


def test_head_report_has_a_row_per_block_with_or_without_bridges():
    from locallearn.train import head_report

    x, y = _batch(n=8)
    for method, scale in (("dgl", None), ("dgl+manpp", 1.0), ("dgl+man", None)):
        net = _net(k=3, method=method)
        rows = head_report(net, [(x, y)], torch.device("cpu"))
        assert [r["block"] for r in rows] == [0, 1, 2], method
        assert [r["units"] for r in rows] == [list(r) for r in net.ranges]
        assert [r["bridge_scale"] for r in rows] == [scale, scale, None], method
        bridged = method != "dgl"
        assert [r["ema_lag"] for r in rows] == ([0.0, 0.0, None] if bridged else [None] * 3)


def _layout(t):
    """'cl' / 'nchw' for a 4-D map where the two differ, else None."""
    if not isinstance(t, torch.Tensor) or t.dim() != 4 or t.shape[1] == 1 or t.shape[2] * t.shape[3] == 1:
        return None
    if t.is_contiguous(memory_format=torch.channels_last):
        return "cl"
    return "nchw" if t.is_contiguous() else "strided"


@pytest.mark.parametrize("method", ["e2e", "dgl", "infopro+manpp", "greedy"])
def test_channels_last_step_never_mixes_layouts(method):
    """An op given maps in two layouts runs a slow path or converts (a global average
    pool's gradient used to come back NCHW into a channels_last ReLU's backward)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    mixed = []

    class Watch(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            flat = [a for x in [*args, *(kwargs or {}).values()]
                    for a in (x if isinstance(x, (list, tuple)) else [x])]
            kinds = {_layout(a) for a in flat} - {None}
            if len(kinds) > 1:
                mixed.append((str(func), sorted(kinds)))
            return func(*args, **(kwargs or {}))

    net = _net(k=1 if method == "e2e" else 4, method=method).to(memory_format=torch.channels_last)
    x = torch.randn(4, *IMG).contiguous(memory_format=torch.channels_last)
    with Watch():
        net.train_step(x, torch.randint(0, 10, (4,)))
    assert mixed == []
