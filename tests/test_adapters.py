"""torchvision / timm / nn.Sequential models as units, and locallearn.wrap."""
import copy

import pytest
import torch
import torch.nn.functional as F
import torchvision
from safetensors.torch import load_file
from torch import nn

from locallearn import ConfigError, LocalNet, create_model, list_models, wrap
from locallearn.export import export_backbone

ADAPTED = [m for m in list_models() if ":" in m]
SIZE = 32
FAMILY = {"tv:resnet18": "infopro+manpp", "tv:vgg11_bn": "dgl+man", "tv:vit_b_16": "manpp",
          "timm:vit_tiny_patch16_224": "manpp"}


def _x(n=2, c=3, size=SIZE):
    return torch.randn(n, c, size, size, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", ADAPTED)
def test_units_reproduce_the_original_model(name):
    torch.manual_seed(0)
    net = create_model(name, num_classes=7, in_chans=3, image_size=(SIZE, SIZE)).eval()
    src = net.source.eval()
    x = _x()
    with torch.no_grad():
        assert torch.equal(net(x), src(x))
    # the units share the original's parameters: nothing copied
    src_ptrs = {p.data_ptr() for p in src.parameters()}
    assert {p.data_ptr() for p in net.parameters()} == src_ptrs


@pytest.mark.parametrize("name,method", FAMILY.items())
def test_wrap_k1_is_plain_backprop(name, method):
    torch.manual_seed(0)
    src = create_model(name, num_classes=5, image_size=(SIZE, SIZE)).source
    ref = copy.deepcopy(src)
    net = wrap(src, blocks=1, method=method, image_size=SIZE)
    x, y = _x(4), torch.tensor([0, 1, 2, 3])
    torch.manual_seed(1)  # same dropout masks (VGG's classifier) in both runs
    net.train_step(x, y)
    torch.manual_seed(1)
    F.cross_entropy(ref(x), y).backward()
    for (n, p), q in zip(src.named_parameters(), ref.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-5, rtol=1e-4), n


@pytest.mark.parametrize("k", [2, 4])
@pytest.mark.parametrize("name,method", FAMILY.items())
def test_wrap_k_blocks_step_and_export(tmp_path, name, method, k):
    torch.manual_seed(0)
    src = create_model(name, num_classes=5, image_size=(SIZE, SIZE)).source
    net = wrap(src, blocks=k, method=method, image_size=SIZE)
    assert net.k == k and len(net.heads) == k - 1
    losses = net.train_step(_x(4), torch.tensor([0, 1, 2, 3]))
    assert losses.shape == (k,) and torch.isfinite(losses).all()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)
    path = export_backbone(net, tmp_path / "w.safetensors", {"model": name})
    fresh = copy.deepcopy(src)
    fresh.load_state_dict(load_file(str(path)), strict=True)
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), src.state_dict().values()))


def test_vit_bridge_copies_a_transformer_block():
    src = create_model("timm:vit_tiny_patch16_224", num_classes=5, image_size=(SIZE, SIZE)).source
    net = wrap(src, blocks=4, method="manpp", image_size=SIZE, lb="channel")
    assert net.head_contexts[0].info.layout == "tokens"
    assert type(net.bridges[0].ema).__name__ == "Block"
    assert net.bridges[0].lb.weight.shape == (1, 1, 192)
    assert type(net.heads[0]).__name__ == "VitHead"
    unit_lb = wrap(copy.deepcopy(src), blocks=4, method="manpp", image_size=SIZE)
    # the reference's ViT bridge: learnable copy of the next two blocks, EMA of the first
    assert len(unit_lb.bridges[0].lb) == 2 and type(unit_lb.bridges[0].lb[1]).__name__ == "Block"
    start = unit_lb.ranges[1][0]
    for a, b in zip(unit_lb.bridges[0].lb[1].parameters(), unit_lb.model.units[start + 1].parameters()):
        assert torch.equal(a, b)


def test_sequential_adapter():
    seq = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1),
                        nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3)))
    net = wrap(seq, blocks=3, method="greedy+manpp", image_size=8)
    assert [u.channels for u in net.model.unit_info] == [8, 8, 8, 3]
    assert net.model.unit_info[2].reduction == 2
    losses = net.train_step(torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 0]))
    assert torch.isfinite(losses).all()


def test_unsupported_model_and_bad_k():
    class Odd(nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(ConfigError, match="no adapter for .*Odd.*register_adapter"):
        wrap(Odd(), blocks=2)
    with pytest.raises(ConfigError, match="K=99"):
        wrap(torchvision.models.resnet18(num_classes=3), blocks=99, image_size=SIZE)
    vit = create_model("timm:vit_tiny_patch16_224", num_classes=5, image_size=(SIZE, SIZE)).source
    with pytest.raises(ConfigError, match="head 'dgl' reads maps.*tokens.*vit"):
        wrap(vit, blocks=2, method="dgl", image_size=SIZE)
