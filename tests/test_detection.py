"""The detection task on LocalNet (tasks/detection.py, nets/retinanet.py): K=1 is
torchvision's RetinaNet training loss and gradients, the local predictor's loss is
torchvision's ``compute_loss``, stage split = the MAN++ COCO K=4, isolation, every
fitting head family x bridge steps, post-processing."""
import math

import pytest
import torch
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from locallearn.errors import ConfigError
from locallearn.local_net import LocalNet
from locallearn.nets import create_model
from locallearn.nets.retinanet import retinanet_source, retinanet_units
from locallearn.tasks import get_task
from locallearn.tasks.detection import DetectionPredictor, RetinaNetOutput, postprocess

C, SIZE = 3, (64, 64)
TASK = get_task("detection")


def _targets(n=2, seed=0):
    t = TASK.example_target(n, SIZE, C, torch.Generator().manual_seed(seed))
    t[0] = {"boxes": torch.tensor([[4.0, 6.0, 30.0, 40.0], [30.0, 20.0, 60.0, 50.0]]),
            "labels": torch.tensor([1, 2])}
    if n > 1:  # an image without objects is valid input
        t[1] = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}
    return t


def _images(n=2, chans=3, seed=0):
    return torch.rand(n, chans, *SIZE, generator=torch.Generator().manual_seed(seed))


def _grads(params):
    return [None if p.grad is None else p.grad.clone() for p in params]


def test_k1_is_torchvision_retinanet_training_loss_and_gradients():
    torch.manual_seed(0)
    model = retinanet_source(18, C, 3)
    # an identity transform: no resize (min = max = the image size), no normalisation
    model.transform = GeneralizedRCNNTransform(SIZE[0], SIZE[1], [0.0] * 3, [1.0] * 3)
    net = LocalNet(retinanet_units(model, 3, C), 1, "e2e", image_size=SIZE)
    x, y = _images(), _targets()
    params = list(model.parameters())
    model.train()
    ref = model(list(x), [dict(t) for t in y])
    ref_loss = ref["classification"] + ref["bbox_regression"]
    ref_loss.backward()
    ref_grads = _grads(params)
    model.zero_grad(set_to_none=True)
    losses = net.train_step(x, y)
    assert losses.shape == (1,)
    assert torch.allclose(losses[0], ref_loss.detach(), rtol=1e-5, atol=1e-6)
    for p, g in zip(params, ref_grads):
        assert (p.grad is None) == (g is None)
        if g is not None:
            assert torch.allclose(p.grad, g, rtol=1e-4, atol=1e-6)


def test_local_predictor_loss_is_torchvision_compute_loss():
    torch.manual_seed(0)
    pred = DetectionPredictor(32, C, reduction=8)
    out = pred(torch.randn(2, 32, 8, 8))
    assert isinstance(out, RetinaNetOutput) and pred.strides == [8]
    assert out["cls_logits"].shape == (2, 8 * 8 * 9, C)
    y = _targets()
    model = retinanet_source(18, C, 3)  # torchvision's own matcher + head criterion
    head_out = {k: out[k] for k in ("cls_logits", "bbox_regression")}
    ref = model.compute_loss(y, head_out, out["anchors"])
    assert torch.allclose(TASK.loss(out, y), ref["classification"] + ref["bbox_regression"])
    # the class prior of torchvision's head: every score starts at 0.01
    assert torch.allclose(out["cls_logits"].sigmoid().mean(), torch.tensor(0.01), atol=2e-3)


@pytest.mark.parametrize("reduction, strides", [(4, [8]), (8, [8]), (16, [16]),
                                                (32, [32, 64, 128])])
def test_predictor_levels_follow_the_reference_heads(reduction, strides):
    pred = DetectionPredictor(16, C, reduction=reduction, width=16)
    grid = 64 // reduction
    out = pred(torch.randn(1, 16, grid, grid))
    assert pred.strides == strides
    assert [f.shape[-1] for f in out["features"]] == [math.ceil(64 / s) for s in strides]
    first = out["anchors"][0][:9]  # the top-left cell's anchors: 4 x stride, 3 scales
    side = (first[:, 2] - first[:, 0]) * (first[:, 3] - first[:, 1])
    assert abs(math.sqrt(float(side.max())) - 4 * strides[0] * 2 ** (2 / 3)) < 2


def test_stage_split_is_the_reference_k4():
    model = create_model("retinanet_resnet18_w64", num_classes=C, in_chans=3)
    net = LocalNet(model, 4, "greedy+manpp", image_size=SIZE, split_by="stages")
    names = [i.name for i in model.unit_info]
    firsts = [names[r[0]] for r in net.ranges]
    assert firsts == ["stem", "layer2.0", "layer3.0", "layer4.0"]
    # the bridges' EMA sources: layer2[0], layer3[0], layer4[0] (the MAN++ COCO code)
    body = model.source.backbone.body
    assert [id(m) for m in net.ema_sources()] == [id(body.layer2[0]), id(body.layer3[0]),
                                                  id(body.layer4[0])]
    with pytest.raises(ConfigError, match="K must be 4"):
        LocalNet(model, 3, "greedy", image_size=SIZE, split_by="stages")


def test_k4_isolation_last_loss_trains_layer4_fpn_head_only():
    model = create_model("retinanet_resnet18_w64", num_classes=C, in_chans=3)
    net = LocalNet(model, 4, "greedy", image_size=SIZE, split_by="stages")
    x, y = _images(), _targets()
    for j, loss in net.block_losses(x, y):
        if j == net.k - 1:
            loss.backward()
    fpn_head = model.source.backbone.fpn, model.source.head
    for j in range(net.k):
        grads = [p.grad is not None and bool(p.grad.abs().sum() > 0)
                 for u in net.block_units(j) for p in u.parameters()]
        assert all(grads) if j == net.k - 1 else not any(grads), j
    assert all(p.grad is not None for m in fpn_head for p in m.parameters())
    assert all(p.grad is None for h in net.heads for p in h.parameters())


@pytest.mark.parametrize("method", ["greedy", "greedy+manpp", "greedy+man", "slm",
                                    "slm+manpp", "infopro+manpp"])
def test_every_fitting_head_and_bridge_takes_a_step(method):
    torch.manual_seed(0)
    model = create_model("retinanet_resnet18_w64", num_classes=C, in_chans=3)
    net = LocalNet(model, 4, method, image_size=SIZE, split_by="stages",
                   mean=[0.5] * 3, std=[0.25] * 3)
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    x, y = _images(), _targets()
    before = [p.detach().clone() for p in net.parameters()]
    losses = net.train_step(x, y)
    opt.step()
    assert losses.shape == (4,) and torch.isfinite(losses).all()
    moved = sum(not torch.equal(a, p) for a, p in zip(before, net.parameters()))
    assert moved > len(before) // 2
    net.eval()
    outs = net.head_logits(x)
    assert len(outs) == 4 and all(isinstance(o, dict) for o in outs)
    metric = TASK.metric(C, torch.device("cpu"))
    metric.update(outs[0], y)
    assert set(metric.compute()) == {"map", "map_50", "map_75"}


def test_slm_copy_keeps_torchvision_head_init():
    model = create_model("retinanet_resnet18_w64", num_classes=C, in_chans=3)
    net = LocalNet(model, 4, "slm", image_size=SIZE, split_by="stages")
    copy = net.heads[0].units[-1]
    assert copy.head is not model.source.head
    bias = copy.head.classification_head.cls_logits.bias
    assert torch.allclose(bias, torch.full_like(bias, -math.log(99)))


@pytest.mark.parametrize("family", ["dgl", "predsim"])
def test_classification_only_heads_say_so(family):
    model = create_model("retinanet_resnet18_w64", num_classes=C, in_chans=3)
    with pytest.raises(ConfigError, match="classification only.*greedy"):
        LocalNet(model, 4, family, image_size=SIZE, split_by="stages")


def test_bad_targets_name_the_value():
    model = create_model("retinanet_resnet18_w64", num_classes=C, in_chans=3)
    net = LocalNet(model, 2, "greedy", image_size=SIZE)
    x = _images()
    bad = _targets()
    bad[0] = {"boxes": torch.tensor([[10.0, 10.0, 5.0, 20.0]]), "labels": torch.tensor([0])}
    with pytest.raises(ConfigError, match="target 0"):
        net.train_step(x, bad)
    bad[0] = {"boxes": torch.tensor([[1.0, 1.0, 5.0, 20.0]]), "labels": torch.tensor([C])}
    with pytest.raises(ConfigError, match="target 0"):
        net.train_step(x, bad)
    with pytest.raises(ConfigError, match="2 images but y has 1"):
        net.train_step(x, _targets(1))


def test_postprocess_finds_a_confident_anchor():
    pred = DetectionPredictor(8, C, reduction=8, width=8)
    with torch.no_grad():
        out = pred(torch.zeros(1, 8, 8, 8))
        out["cls_logits"].fill_(-10.0)
        out["bbox_regression"].zero_()
        out["cls_logits"][0, 9 * 10 + 4, 2] = 5.0  # cell (1, 2), anchor 4 (ratio 1, 32 px)
    dets = postprocess(out, SIZE)[0]
    assert dets["labels"].tolist() == [2]
    anchor = out["anchors"][0][9 * 10 + 4].clamp(0, 64)
    assert torch.allclose(dets["boxes"][0], anchor)
    assert abs(float(dets["scores"][0]) - torch.sigmoid(torch.tensor(5.0)).item()) < 1e-6


def _yolo_output(sh=2, sw=2, nb=2, classes=C, size=SIZE):
    from locallearn.nets.yolo import YoloOutput

    boxes = torch.full((1, sh, sw, nb, 5), 0.5)
    boxes[..., 4] = 0.0
    probs = torch.full((1, sh, sw, classes), 1.0 / classes)
    return YoloOutput(boxes=boxes, probs=probs, image_size=size)


def test_yolo_loss_by_hand():
    """One object centred in cell (0, 1) of a 2x2 grid on 64x64: the loss is v1's sum."""
    out = _yolo_output()
    # predictor 1 of cell (0, 1) sits exactly on the object: responsible, coord loss 0
    gt = torch.tensor([[36.0, 4.0, 60.0, 28.0]])  # centre (48, 16), 24 x 24
    out["boxes"][0, 0, 1, 1, :4] = torch.tensor([0.5, 0.5, (24 / 64) ** 0.5, (24 / 64) ** 0.5])
    out["boxes"][0, 0, 1, 1, 4] = 0.8
    out["boxes"][0, 1, 0, 0, 4] = 0.4  # a confident predictor elsewhere: no-object loss
    y = [{"boxes": gt, "labels": torch.tensor([2])}]
    expected = (0.8 - 1.0) ** 2 + 0.5 * 0.4 ** 2 + (2 * (1 / 3) ** 2 + (2 / 3) ** 2)
    assert abs(float(out.loss(y)) - expected) < 1e-5
    dets = out.detections(SIZE)[0]
    assert dets["labels"][0] == 0 or float(dets["scores"].max()) <= 0.8 / 3 + 1e-6
    top = dets["scores"].argmax()
    assert torch.allclose(dets["boxes"][top], gt[0], atol=1e-4)


def test_yolo_units_export_and_k1():
    from locallearn.nets.yolo import yolo_source, yolo_units

    torch.manual_seed(0)
    model = yolo_source(18, C, 3, width=32)
    net = LocalNet(yolo_units(model, 3, C), 1, "e2e", image_size=SIZE)
    x, y = _images(), _targets()
    model.train()
    ref = model(x).loss(y)
    ref.backward()
    ref_grads = _grads(list(model.parameters()))
    model.zero_grad(set_to_none=True)
    losses = net.train_step(x, y)
    assert torch.allclose(losses[0], ref.detach(), rtol=1e-5)
    for p, g in zip(model.parameters(), ref_grads):
        assert torch.allclose(p.grad, g, rtol=1e-4, atol=1e-7)
    fresh = yolo_source(18, C, 3, width=32)
    fresh.load_state_dict(net.model.export_state_dict(), strict=True)


@pytest.mark.parametrize("method", ["slm", "slm+manpp", "greedy+manpp"])
def test_yolo_local_methods_step(method):
    torch.manual_seed(0)
    model = create_model("yolo_resnet18_w128", num_classes=C, in_chans=3)
    net = LocalNet(model, 4, method, image_size=SIZE, split_by="stages")
    losses = net.train_step(_images(), _targets())
    assert losses.shape == (4,) and torch.isfinite(losses).all()


def test_coco_preset_builds_the_reference_k4():
    from locallearn.config import TrainConfig
    from locallearn.presets import apply_preset
    from locallearn.train import build_net

    cfg = TrainConfig(dataset="fmnist-scenes-det")
    lines = apply_preset(cfg, "manpp-coco-retinanet")
    assert "split=stages" in lines[1] and cfg.clip_grad_norm == 1.0 and cfg.optimizer == "sgd"
    cfg.model = "retinanet_resnet18_w64"

    class Data:  # what build_net reads of a dataset
        num_classes, in_chans, image_size, mean, std, task = C, 1, SIZE, (0.5,), (0.25,), \
            "detection"

    net = build_net(cfg.validate(), Data())
    names = [i.name for i in net.model.unit_info]
    assert [names[r[0]] for r in net.ranges] == ["stem", "layer2.0", "layer3.0", "layer4.0"]
    assert len(net.bridges) == 3 and net.spec.head == "greedy"
