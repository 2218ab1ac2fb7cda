"""Wrong types and values to the Python API raise a ValueError / TypeError subclass whose
message names the argument: never an AttributeError / IndexError from deep inside, never
NaN losses. Every one is a ConfigError too, which the CLI prints as one line."""
import numpy as np
import pytest
import torch
from torch import nn

from locallearn import (ConfigError, LocalNet, MethodSpec, create_model, export_backbone,
                        load_backbone, wrap)
from locallearn.errors import ConfigTypeError

X = torch.randn(4, 1, 8, 8)
Y = torch.tensor([0, 1, 2, 3])
Y9 = torch.tensor([0, 1, 2, 9])  # 9: outside 4 classes


def _model():
    return create_model("resnet20", num_classes=4, in_chans=1)


def _net(method="greedy", **kw):
    torch.manual_seed(0)
    kw.setdefault("image_size", (8, 8))
    return LocalNet(_model(), 3, method, **kw)


def _seq():
    """An nn.Sequential for wrap: conv body unit, pooled linear classifier over 3 classes."""
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(),
                         nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)))


def _seq5x5():
    """A 5x5 convolution first: a 2x2 image is too small for it."""
    return nn.Sequential(nn.Conv2d(1, 4, 5, padding=0), nn.ReLU(),
                         nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)))


def _tiny_vit_net():
    """A 2-layer torchvision ViT for 32x32 images, wrapped."""
    from torchvision.models import VisionTransformer
    vit = VisionTransformer(image_size=32, patch_size=16, num_layers=2, num_heads=2,
                            hidden_dim=16, mlp_dim=32, num_classes=3)
    return wrap(vit, 2, "vit", image_size=32)


def _step(x, y, method="greedy"):
    return _net(method).train_step(x, y)


def _checkpoint(tmp):
    """What a locallearn run writes as checkpoint.pt: a torch.save'd dict."""
    path = tmp / "run" / "checkpoint.pt"
    path.parent.mkdir()
    torch.save({"net": _net().state_dict(), "epoch": 1}, path)
    return path


def _truncated(tmp):
    path = export_backbone(_net(), tmp / "w.safetensors",
                           {"model": "resnet20", "num_classes": 4, "in_chans": 1})
    path.write_bytes(path.read_bytes()[:-100])  # the header whole, the last tensor cut
    return path


def _truncated_header(tmp):
    path = _truncated(tmp)
    path.write_bytes(path.read_bytes()[:200])
    return path


def _mislabelled(tmp):
    return export_backbone(_net(), tmp / "w.safetensors",
                           {"model": "resnet32", "num_classes": 4, "in_chans": 1})


def _garbage(tmp):
    path = tmp / "w.safetensors"
    path.write_bytes(b"not a tensor file at all")
    return path


T, V = ConfigTypeError, ConfigError  # wrong type / wrong value
# (id, call(tmp_path), expected exception, regex the message must match)
CASES = [
    # LocalNet
    ("LocalNet-method-None", lambda t: LocalNet(_model(), 3, None),
     T, r"method .*None.*dgl\+manpp"),
    ("LocalNet-method-int", lambda t: LocalNet(_model(), 3, 7), T, r"method .*got 7.*choose from"),
    ("LocalNet-method-unknown", lambda t: LocalNet(_model(), 3, "dgl+mann"),
     V, r"method 'dgl\+mann'"),
    ("LocalNet-model-None", lambda t: LocalNet(None, 3, "greedy"),
     T, r"model must be .*UnitNet.*None"),
    ("LocalNet-model-str", lambda t: LocalNet("resnet20", 3, "greedy"), T, r"model .*create_model"),
    ("LocalNet-model-plain-module", lambda t: LocalNet(_seq(), 2, "greedy"), T, r"model .*wrap"),
    ("LocalNet-image_size-int", lambda t: _net(image_size=8), T, r"image_size .*\(8, 8\)"),
    ("LocalNet-image_size-str", lambda t: _net(image_size="8x8"), T, r"image_size"),
    ("LocalNet-image_size-negative", lambda t: _net(image_size=(-8, 8)),
     V, r"image_size .*positive"),
    ("LocalNet-image_size-zero", lambda t: _net(image_size=(0, 0)), V, r"image_size .*positive"),
    ("LocalNet-image_size-3", lambda t: _net(image_size=(8, 8, 8)), V, r"image_size .*3 values"),
    ("LocalNet-image_size-None", lambda t: _net(image_size=None), T, r"image_size"),
    ("LocalNet-blocks-0", lambda t: LocalNet(_model(), 0, "greedy"),
     V, r"blocks K=0.*between 1 and 10"),
    ("LocalNet-blocks-negative", lambda t: LocalNet(_model(), -2, "greedy"), V, r"blocks K=-2"),
    ("LocalNet-blocks-too-many", lambda t: LocalNet(_model(), 11, "greedy"),
     V, r"blocks K=11.*10 units"),
    ("LocalNet-blocks-float", lambda t: LocalNet(_model(), 2.0, "greedy"),
     T, r"blocks must be an integer"),
    ("LocalNet-blocks-str", lambda t: LocalNet(_model(), "3", "greedy"),
     T, r"blocks must be an integer"),
    ("LocalNet-blocks-None", lambda t: LocalNet(_model(), None, "greedy"),
     T, r"blocks must be an integer"),
    ("LocalNet-lb-unknown", lambda t: _net("greedy+manpp", lb="affine"),
     V, r"lb 'affine'.*unit, channel"),
    ("LocalNet-lb-ignored-without-bridge", lambda t: _net("greedy", lb="affine"),
     V, r"lb 'affine'"),
    ("LocalNet-lb-None", lambda t: _net("greedy+manpp", lb=None), T, r"lb None.*unit, channel"),
    ("LocalNet-bridge_init", lambda t: _net("dgl+man", bridge_init="zeros"),
     V, r"bridge_init 'zeros'.*copy, random"),
    ("LocalNet-split_by", lambda t: _net(split_by="size"), V, r"split 'size'.*equal, memory"),
    ("LocalNet-ema_momentum-str", lambda t: _net("greedy+ema", ema_momentum="0.9"),
     T, r"ema_momentum must be a number"),
    ("LocalNet-ema_momentum-range", lambda t: _net("greedy+ema", ema_momentum=1.0),
     V, r"momentum .*\[0, 1\)"),
    ("LocalNet-mean-without-std", lambda t: _net("infopro", mean=[0.5]), V, r"mean and std"),
    ("LocalNet-mean-length", lambda t: _net("infopro", mean=[0.5] * 3, std=[0.2] * 3),
     V, r"mean .*in_chans=1"),
    ("LocalNet-std-zero", lambda t: _net("infopro", mean=[0.5], std=[0.0]),
     V, r"std must be positive"),
    ("LocalNet-head_opts-list", lambda t: _net("dgl", head_opts=["conv_width"]),
     T, r"head_opts must be a dict"),
    ("LocalNet-head-option-type", lambda t: _net("dgl", head_opts={"conv_width": "wide"}),
     T, r"dgl head option conv_width must be an integer"),
    ("LocalNet-head-option-nan", lambda t: _net("infopro", head_opts={"temperature": float("nan")}),
     V, r"infopro head option temperature must be a finite number"),
    ("LocalNet-head-option-unknown", lambda t: _net("dgl", head_opts={"width": 3}),
     V, r"dgl head option 'width'.*conv_width"),
    ("LocalNet-boundaries-str", lambda t: LocalNet(_model(), 3, "greedy", boundaries="2,5"),
     T, r"boundaries"),
    # create_model
    ("create_model-None", lambda t: create_model(None), T, r"model name .*None.*resnet20"),
    ("create_model-int", lambda t: create_model(20), T, r"model name .*resnet20"),
    ("create_model-unknown", lambda t: create_model("resnet21"), V, r"model 'resnet21'.*resnet20"),
    ("create_model-num_classes-0", lambda t: create_model("resnet20", num_classes=0),
     V, r"num_classes .*>= 1, got 0"),
    ("create_model-num_classes-negative", lambda t: create_model("resnet20", num_classes=-3),
     V, r"num_classes .*got -3"),
    ("create_model-num_classes-float", lambda t: create_model("resnet20", num_classes=2.5),
     T, r"num_classes must be an integer"),
    ("create_model-num_classes-str", lambda t: create_model("resnet20", num_classes="10"),
     T, r"num_classes must be an integer"),
    ("create_model-in_chans-0", lambda t: create_model("resnet20", in_chans=0),
     V, r"in_chans .*got 0"),
    ("create_model-image_size-int", lambda t: create_model("tv:resnet18", image_size=32),
     T, r"image_size"),
    ("create_model-image_size-zero", lambda t: create_model("tv:resnet18", image_size=(0, 32)),
     V, r"image_size"),
    ("create_model-tv-vit-patch", lambda t: create_model("tv:vit_b_16", image_size=(30, 30)),
     V, r"image_size \(30, 30\) for tv:vit_b_16 .*patch size 16"),
    # wrap
    ("wrap-model-None", lambda t: wrap(None, 2, "greedy", image_size=8),
     T, r"model must be a torch.nn.Module"),
    ("wrap-model-unsupported", lambda t: wrap(nn.Linear(3, 3), 2, "greedy", image_size=8),
     V, r"no adapter for .*Linear.*nn.Sequential"),
    ("wrap-method-None", lambda t: wrap(_seq(), 2, None, image_size=8), T, r"method .*None"),
    ("wrap-image_size-0", lambda t: wrap(_seq(), 2, "greedy", image_size=0),
     V, r"image_size .*got 0"),
    ("wrap-image_size-negative", lambda t: wrap(_seq(), 2, "greedy", image_size=-5),
     V, r"image_size .*got -5"),
    ("wrap-image_size-str", lambda t: wrap(_seq(), 2, "greedy", image_size="8"), T, r"image_size"),
    ("wrap-image_size-float", lambda t: wrap(_seq(), 2, "greedy", image_size=8.0),
     T, r"image_size"),
    ("wrap-image_size-1-tuple", lambda t: wrap(_seq(), 2, "greedy", image_size=(8,)),
     V, r"image_size .*1 values"),
    ("wrap-image_size-too-small", lambda t: wrap(_seq5x5(), 2, "greedy", image_size=2),
     V, r"image_size=.*unit '0'"),
    ("wrap-in_chans-0", lambda t: wrap(_seq(), 2, "greedy", image_size=8, in_chans=0),
     V, r"in_chans .*got 0"),
    ("wrap-in_chans-wrong", lambda t: wrap(_seq(), 2, "greedy", image_size=8, in_chans=3),
     V, r"3-channel .*in_chans="),
    ("wrap-num_classes-0", lambda t: wrap(_seq(), 2, "greedy", image_size=8, num_classes=0),
     V, r"num_classes .*got 0"),
    ("wrap-num_classes-mismatch", lambda t: wrap(_seq(), 2, "greedy", image_size=8, num_classes=5),
     V, r"num_classes=5 .*outputs 3"),
    ("wrap-blocks-too-many", lambda t: wrap(_seq(), 5, "greedy", image_size=8), V, r"blocks K=5"),
    ("wrap-blocks-float", lambda t: wrap(_seq(), 1.5, "greedy", image_size=8),
     T, r"blocks must be an integer"),
    # LocalNet.train_step
    ("train_step-empty-batch", lambda t: _step(X[:0], Y[:0]), V, r"x is an empty batch"),
    ("train_step-uint8", lambda t: _step((X.abs() * 50).to(torch.uint8), Y),
     T, r"x must be a floating-point .*uint8"),
    ("train_step-int64-images", lambda t: _step(X.long(), Y),
     T, r"x must be a floating-point .*int64"),
    ("train_step-float64-images", lambda t: _step(X.double(), Y),
     T, r"x is torch.float64 .*float32"),
    ("train_step-label-too-large", lambda t: _step(X, torch.tensor([0, 1, 2, 4])),
     V, r"y holds label 4.*num_classes=4"),
    ("train_step-label-negative", lambda t: _step(X, torch.tensor([0, -1, 2, 3])),
     V, r"y holds label -1"),
    ("train_step-label-range-infopro", lambda t: _step(X, Y9, "infopro+manpp"),
     V, r"y holds label 9"),
    ("train_step-label-range-predsim", lambda t: _step(X, Y9, "predsim"),
     V, r"y holds label 9"),
    ("train_step-label-float", lambda t: _step(X, Y.float()), T, r"y must hold integer .*float32"),
    ("train_step-label-bool", lambda t: _step(X, Y > 1), T, r"y must hold integer .*bool"),
    ("train_step-lengths-differ", lambda t: _step(X, Y[:3]), V, r"y must be .*4 samples .*\(3,\)"),
    ("train_step-labels-2d", lambda t: _step(X, Y[:, None]), V, r"y must be a 1-D tensor"),
    ("train_step-wrong-channels", lambda t: _step(torch.randn(4, 3, 8, 8), Y),
     V, r"x must be .*\[B, 1, H, W\].*\(4, 3, 8, 8\)"),
    ("train_step-3d-images", lambda t: _step(X[:, 0], Y),
     V, r"x must be .*in_chans=1.*\(4, 8, 8\)"),
    ("train_step-x-list", lambda t: _step(X.tolist(), Y), T, r"x must be a torch.Tensor"),
    ("train_step-x-numpy", lambda t: _step(X.numpy(), Y), T, r"x must be a torch.Tensor.*ndarray"),
    ("train_step-y-list", lambda t: _step(X, [0, 1, 2, 3]), T, r"y must be a torch.Tensor"),
    ("train_step-one-sample-batchnorm1d", lambda t: _step(X[:1], Y[:1], "dgl"),
     V, r"x holds 1 sample.*BatchNorm1d"),
    ("train_step-vit-image-size",
     lambda t: _tiny_vit_net().train_step(torch.randn(2, 3, 48, 48), Y[:2]),
     V, r"x holds 48x48 images .*image_size \(32, 32\)"),
    ("head_logits-uint8", lambda t: _net().head_logits(X.to(torch.uint8)),
     T, r"x must be a floating-point"),
    ("forward-uint8", lambda t: _net()((X.abs() * 50).to(torch.uint8)),
     T, r"x must be a floating-point"),
    # load_backbone
    ("load_backbone-checkpoint", lambda t: load_backbone(_checkpoint(t)),
     V, r"PyTorch checkpoint.*locallearn export --run .*run --out"),
    ("load_backbone-missing", lambda t: load_backbone(t / "nope.safetensors"),
     V, r"no exported weights at .*nope"),
    ("load_backbone-directory", lambda t: load_backbone(_checkpoint(t).parent),
     V, r"is a directory.*export --run"),
    ("load_backbone-garbage", lambda t: load_backbone(_garbage(t)),
     V, r"unknown format, not exported safetensors"),
    ("load_backbone-truncated", lambda t: load_backbone(_truncated(t)),
     V, r"not a readable safetensors file"),
    ("load_backbone-truncated-header", lambda t: load_backbone(_truncated_header(t)),
     V, r"not a readable safetensors file"),
    ("load_backbone-wrong-model", lambda t: load_backbone(_mislabelled(t)),
     V, r"weights do not fit model 'resnet32'"),
    ("load_backbone-None", lambda t: load_backbone(None), T, r"path must be a file path"),
    ("load_backbone-int", lambda t: load_backbone(3), T, r"path must be a file path"),
]


@pytest.mark.parametrize("call,expected,match", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_raises_a_clear_error(call, expected, match, tmp_path):
    with pytest.raises(expected, match=match) as info:
        call(tmp_path)
    err = info.value
    assert isinstance(err, (ValueError, TypeError)) and isinstance(err, ConfigError)
    assert not isinstance(err, (AttributeError, IndexError, KeyError))
    # wrong types are TypeErrors, wrong values plain ValueErrors (ConfigError)
    assert isinstance(err, TypeError) == (expected is ConfigTypeError)
    assert "\n" not in str(err)  # the CLI prints it as one line


def test_case_ids_are_unique():
    ids = [c[0] for c in CASES]
    assert len(ids) == len(set(ids))


def test_good_inputs_still_work(tmp_path):
    """What the checks must not refuse: integer-like values, int32 labels, a square int
    image size for wrap, a MethodSpec, images of another size than image_size."""
    torch.manual_seed(0)
    net = LocalNet(create_model("resnet20", num_classes=np.int64(4), in_chans=1), np.int64(3),
                   MethodSpec("infopro", "manpp"), image_size=torch.Size([8, 8]),
                   mean=np.array([0.5]), std=(0.25,), boundaries=[np.int64(3), 6])
    assert net.k == 3 and net.ranges[1][0] == 3
    losses = net.train_step(X, Y.int())
    assert torch.isfinite(losses).all()
    assert torch.isfinite(net.train_step(torch.randn(4, 1, 12, 12), Y.to(torch.uint8))).all()
    w = wrap(_seq(), 2, "greedy", image_size=8, in_chans=1, num_classes=3)
    assert torch.isfinite(w.train_step(X, Y % 3)).all()
    path = export_backbone(net, tmp_path / "w.safetensors",
                           {"model": "resnet20", "num_classes": 4, "in_chans": 1})
    back = load_backbone(str(path))
    assert torch.equal(back(X), net.eval()(X))


def test_config_type_error_is_both():
    assert issubclass(ConfigTypeError, ConfigError) and issubclass(ConfigTypeError, TypeError)
    assert issubclass(ConfigError, ValueError)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_batch_checks_never_sync_on_cuda():
    """On an accelerator the checks read metadata only: a step runs with every implicit
    device->host sync turned into an error, and still refuses a uint8 batch."""
    net = _net("dgl+manpp").cuda()
    x, y = X.cuda(), Y.cuda()
    net.train_step(x, y)  # warm-up: lazy CUDA initialisation may sync
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        losses = net.train_step(x, y)
        with pytest.raises(ConfigTypeError, match="x must be a floating-point"):
            net.train_step(x.to(torch.uint8), y)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert torch.isfinite(losses).all()
