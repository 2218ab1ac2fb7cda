import pytest
import torch

from locallearn import ConfigError, create_model, list_models, split


@pytest.mark.parametrize("depth,units", [(20, 10), (32, 16), (56, 28), (110, 55)])
def test_cifar_resnet_units(depth, units):
    m = create_model(f"resnet{depth}", num_classes=7, in_chans=1)
    assert m.num_body_units == units
    assert [u.channels for u in m.unit_info[:-1]][:2] == [16, 16]
    assert m.unit_info[-1].kind == "head" and m.unit_info[-1].channels == 7
    assert m.unit_info[-2].channels == 64 and m.unit_info[-2].reduction == 4
    out = m(torch.randn(2, 1, 12, 12))
    assert out.shape == (2, 7)


def test_resnet32_param_count_matches_paper_scale():
    n = sum(p.numel() for p in create_model("resnet32").parameters())
    assert 0.45e6 < n < 0.48e6  # ResNet-32 is ~0.46M parameters


def test_registry_lists_and_rejects():
    assert {"resnet20", "resnet32", "resnet56", "resnet110"} <= set(list_models())
    with pytest.raises(ConfigError, match="resnet33.*resnet32"):
        create_model("resnet33")


def test_papers_splits():
    # ResNet-32: stem + 15 residual units; K=16 one unit each, K=8 two each
    assert split(16, 16) == [(i, i + 1) for i in range(16)]
    assert split(16, 8) == [(2 * i, 2 * i + 2) for i in range(8)]
    assert split(55, 55) == [(i, i + 1) for i in range(55)]
    assert split(16, 1) == [(0, 16)]


def test_uneven_split_gives_extra_units_to_late_blocks():
    assert split(16, 3) == [(0, 5), (5, 10), (10, 16)]
    sizes = [e - s for s, e in split(55, 32)]
    assert sum(sizes) == 55 and sizes == sorted(sizes) and max(sizes) - min(sizes) == 1


def test_explicit_boundaries():
    assert split(16, 3, boundaries=[1, 6]) == [(0, 1), (1, 6), (6, 16)]
    with pytest.raises(ConfigError, match="K-1=2"):
        split(16, 3, boundaries=[4])
    with pytest.raises(ConfigError, match="increase"):
        split(16, 3, boundaries=[6, 6])


@pytest.mark.parametrize("k", [0, -1, 17])
def test_bad_k(k):
    with pytest.raises(ConfigError, match=f"K={k}.*between 1 and 16"):
        split(16, k)


def test_balanced_split_minimises_the_largest_block():
    from locallearn.split import balanced_split

    assert balanced_split([5, 1, 1, 1, 1, 5], 3) == [(0, 1), (1, 5), (5, 6)]
    assert balanced_split([1] * 16, 8) == split(16, 8)
    costs = [9, 8, 7, 1, 1, 1, 1, 1, 1, 1]
    best = max(sum(costs[s:e]) for s, e in balanced_split(costs, 3))
    # brute force over all cut pairs
    brute = min(max(sum(costs[:a]), sum(costs[a:b]), sum(costs[b:]))
                for a in range(1, 9) for b in range(a + 1, 10))
    assert best == brute
    with pytest.raises(ConfigError, match="K=4"):
        balanced_split([1, 2, 3], 4)


def test_memory_split_balances_measured_activations():
    from locallearn import LocalNet
    from locallearn.measure.memory import unit_activation_costs

    model = create_model("resnet32", num_classes=10, in_chans=1)
    bn = model.units[0][1]
    before = bn.running_mean.clone()
    net = LocalNet(model, 4, "dgl", image_size=(28, 28), split_by="memory")
    assert torch.equal(bn.running_mean, before)  # the dry run leaves BN statistics alone
    costs = unit_activation_costs(list(model.units)[:-1], torch.zeros(2, 1, 28, 28))
    assert costs[0] > costs[-1]  # full-resolution units save more than 7x7 ones
    peak = lambda ranges: max(sum(costs[s:e]) for s, e in ranges)
    assert peak(net.ranges) < peak(split(16, 4))
    with pytest.raises(ConfigError, match="split 'flops'"):
        LocalNet(model, 4, "dgl", image_size=(28, 28), split_by="flops")


@pytest.mark.parametrize("fmt", [torch.channels_last, torch.contiguous_format])
def test_global_pool_equals_the_mean_and_keeps_the_gradient_layout(fmt):
    from locallearn.nets.pool import GlobalAvgPool, spatial_mean

    x = torch.randn(3, 5, 4, 6).contiguous(memory_format=fmt).requires_grad_(True)
    assert torch.allclose(spatial_mean(x), x.mean(dim=(2, 3)), atol=1e-6)
    pooled = GlobalAvgPool()(x)
    assert pooled.shape == (3, 5, 1, 1)
    assert torch.allclose(pooled, torch.nn.AdaptiveAvgPool2d(1)(x), atol=1e-6)
    (grad,) = torch.autograd.grad(pooled, x, torch.randn_like(pooled))
    assert grad.is_contiguous(memory_format=fmt)
