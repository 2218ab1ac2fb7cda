"""A YOLOv1-style detector (Redmon et al. 2016) on a torchvision ResNet trunk, as units.

The feature-bank paper's YOLO-R34 / YOLO-R101: the ResNet's C5 (stride 32) is the grid;
the head is two 3x3 conv-BN-LeakyReLU(0.1) and a 1x1 conv to ``B * 5 + C`` maps per cell
(B boxes of x, y, sqrt w, sqrt h, confidence; C class scores). Sigmoids bound x, y
(offsets in the cell), sqrt w, sqrt h (fractions of the image) and confidence; the class
scores go through a softmax. The loss is YOLOv1's sum of squared errors (the predictor of
a cell whose IoU with the object is highest is responsible: coordinates weighted 5, its
confidence pulled to that IoU; all other predictors' confidence to 0 weighted 0.5; the
class probabilities of cells holding an object to the one-hot class), summed over the
grid and averaged over the batch. Decoding: score = confidence x class probability,
then torchvision's thresholds and class-wise NMS (score 0.05, IoU 0.5, 300 per image).

Units: the ResNet stem and residual blocks (``resnet_parts.trunk_units``), then the head
as the task unit (it reads the network input from the bank for the image size only). The
units share the modules of ``yolo_source(...)``: ``export_state_dict()`` loads into it
strictly.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import torch
import torchvision
from torch import nn
from torchvision.ops import batched_nms, box_iou

from ..errors import ConfigError
from ..tasks.detection import (DETECTIONS_PER_IMG, NMS_THRESH, SCORE_THRESH, DetectorOutput,
                               Target)
from .registry import MODELS
from .resnet_parts import DEPTHS, out_channels, set_in_chans, trunk_units
from .units import UnitInfo, UnitNet

COORD, NOOBJ = 5.0, 0.5  # YOLOv1's loss weights


class YoloHead(nn.Module):
    """conv3x3-BN-LeakyReLU x 2, then a 1x1 conv to B*5 + C maps per grid cell."""

    def __init__(self, channels: int, num_classes: int, boxes: int = 2, width: int = 512) -> None:
        super().__init__()
        layers: List[nn.Module] = []
        for c in (channels, width):
            layers += [nn.Conv2d(c, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                       nn.LeakyReLU(0.1, inplace=True)]
        self.convs = nn.Sequential(*layers)
        self.pred = nn.Conv2d(width, boxes * 5 + num_classes, 1)
        self.boxes, self.num_classes = boxes, num_classes

    def forward(self, c5: torch.Tensor, image: torch.Tensor) -> "YoloOutput":
        raw = self.pred(self.convs(c5))  # [N, B*5 + C, S_h, S_w]
        n, _, sh, sw = raw.shape
        box = raw[:, :self.boxes * 5].reshape(n, self.boxes, 5, sh, sw).permute(0, 3, 4, 1, 2)
        return YoloOutput(boxes=box.sigmoid(),  # [N, S_h, S_w, B, 5]: x, y, sqrt w, sqrt h, conf
                          probs=raw[:, self.boxes * 5:].permute(0, 2, 3, 1).softmax(-1),
                          image_size=(int(image.shape[-2]), int(image.shape[-1])))


class YoloV1(nn.Module):
    """The whole detector as one module (what the units export to): ``forward(x)``
    returns the ``YoloOutput`` of a normalised image batch."""

    def __init__(self, body: nn.Module, head: YoloHead) -> None:
        super().__init__()
        self.body, self.head = body, head

    def forward(self, x: torch.Tensor) -> "YoloOutput":
        b = self.body
        h = b.maxpool(b.relu(b.bn1(b.conv1(x))))
        h = b.layer4(b.layer3(b.layer2(b.layer1(h))))
        return self.head(h, x)


def _grid_boxes(boxes: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """[N, S_h, S_w, B, 5] predictions -> [N, S_h, S_w, B, 4] xyxy pixel boxes."""
    sh, sw = boxes.shape[1:3]
    h, w = size
    gy, gx = torch.meshgrid(torch.arange(sh, device=boxes.device, dtype=boxes.dtype),
                            torch.arange(sw, device=boxes.device, dtype=boxes.dtype),
                            indexing="ij")
    cx = (gx[..., None] + boxes[..., 0]) * (w / sw)
    cy = (gy[..., None] + boxes[..., 1]) * (h / sh)
    bw, bh = boxes[..., 2] ** 2 * w, boxes[..., 3] ** 2 * h
    return torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], -1)


class YoloOutput(DetectorOutput):
    """``boxes`` [N, S_h, S_w, B, 5], ``probs`` [N, S_h, S_w, C], ``image_size``."""

    def loss(self, targets: List[Target]) -> torch.Tensor:
        boxes, probs = self["boxes"].float(), self["probs"].float()
        n, sh, sw, nb, _ = boxes.shape
        h, w = self["image_size"]
        pixel = _grid_boxes(boxes, (h, w))
        total = boxes.new_zeros(())
        for i, t in enumerate(targets):
            gt, labels = t["boxes"].float(), t["labels"]
            resp = torch.zeros(sh, sw, nb, dtype=torch.bool, device=boxes.device)
            if len(gt):
                # the cell holding each object's centre; v1 predicts one object per
                # cell, so of objects sharing a cell the last one listed is kept
                cx, cy = (gt[:, 0] + gt[:, 2]) / 2, (gt[:, 1] + gt[:, 3]) / 2
                gx = (cx * sw / w).long().clamp(0, sw - 1)
                gy = (cy * sh / h).long().clamp(0, sh - 1)
                order = torch.arange(len(gt), device=gt.device)
                last = torch.full((sh * sw,), -1, dtype=torch.long, device=gt.device)
                last = last.scatter_reduce(0, gy * sw + gx, order, "amax")
                one = order == last[gy * sw + gx]
                gt, labels, cx, cy, gx, gy = gt[one], labels[one], cx[one], cy[one], gx[one], gy[one]
                cell = pixel[i, gy, gx]  # [M, B, 4]
                with torch.no_grad():
                    ious = torch.stack([box_iou(gt[m:m + 1], cell[m])[0] for m in range(len(gt))])
                best = ious.argmax(1)  # the responsible predictor of each object
                pred = boxes[i, gy, gx, best]  # [M, 5]
                tx, ty = cx * sw / w - gx, cy * sh / h - gy
                tw = ((gt[:, 2] - gt[:, 0]) / w).clamp_min(0).sqrt()
                th = ((gt[:, 3] - gt[:, 1]) / h).clamp_min(0).sqrt()
                coord = ((pred[:, 0] - tx) ** 2 + (pred[:, 1] - ty) ** 2
                         + (pred[:, 2] - tw) ** 2 + (pred[:, 3] - th) ** 2)
                iou = ious.gather(1, best[:, None])[:, 0]
                cls_t = torch.zeros(sh, sw, probs.shape[-1], device=boxes.device)
                cls_t[gy, gx] = nn.functional.one_hot(labels, probs.shape[-1]).float()
                has = cls_t.sum(-1) > 0
                total = total + COORD * coord.sum() + ((pred[:, 4] - iou) ** 2).sum() \
                    + ((probs[i][has] - cls_t[has]) ** 2).sum()
                resp[gy, gx, best] = True
            total = total + NOOBJ * (boxes[i, ..., 4][~resp] ** 2).sum()
        return total / max(1, n)

    def detections(self, size: Tuple[int, int]) -> List[Target]:
        boxes, probs = self["boxes"].float(), self["probs"].float()
        pixel = _grid_boxes(boxes, self["image_size"])
        h, w = size
        out = []
        for i in range(boxes.shape[0]):
            scores = boxes[i, ..., 4, None] * probs[i, :, :, None, :]  # [S_h, S_w, B, C]
            keep = scores > SCORE_THRESH
            idx = keep.nonzero()
            s = scores[keep]
            b = pixel[i][idx[:, 0], idx[:, 1], idx[:, 2]]
            b = torch.stack([b[:, 0].clamp(0, w), b[:, 1].clamp(0, h), b[:, 2].clamp(0, w),
                             b[:, 3].clamp(0, h)], -1)
            labels = idx[:, 3]
            k = batched_nms(b, s, labels, NMS_THRESH)[:DETECTIONS_PER_IMG]
            out.append({"boxes": b[k], "scores": s[k], "labels": labels[k]})
        return out


#: registered name -> (ResNet depth, head width)
VARIANTS: Dict[str, Tuple[int, int]] = {"yolo_resnet18": (18, 512), "yolo_resnet34": (34, 512),
                                        "yolo_resnet50": (50, 512), "yolo_resnet101": (101, 512),
                                        "yolo_resnet18_w128": (18, 128)}


def yolo_source(depth: int, num_classes: int, in_chans: int = 3, width: int = 512,
                boxes: int = 2) -> YoloV1:
    """A fresh (random-init) YOLOv1-style detector on ResNet-``depth``."""
    if depth not in DEPTHS:
        raise ConfigError(f"unknown YOLO ResNet depth {depth} (choose from: "
                          f"{', '.join(map(str, DEPTHS))})")
    body = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    set_in_chans(body, in_chans)
    del body.fc, body.avgpool  # the detector has no classifier
    return YoloV1(body, YoloHead(out_channels(body.layer4[-1]), num_classes, boxes, width))


def yolo_units(model: YoloV1, in_chans: int, num_classes: int) -> UnitNet:
    """``model`` as units sharing its modules (sizes from the strides, no dry run)."""
    units, info, reduction = trunk_units(model.body, {})
    units.append(model.head)
    info.append(UnitInfo("yolo_head", num_classes, reduction, kind="head", reads=("image",)))
    # greedy heads (RetinaNet-style local detectors) no wider than the model's own head
    width = min(256, model.head.pred.in_channels)
    return UnitNet(units, info, in_chans, num_classes, source=model, default_head="slm",
                   task="detection", head_recipes={"greedy": {"width": width}})


def _register(name: str) -> None:
    depth, width = VARIANTS[name]

    def build(num_classes: int = 20, in_chans: int = 3) -> UnitNet:
        return yolo_units(yolo_source(depth, num_classes, in_chans, width), in_chans, num_classes)

    build.__doc__ = (f"YOLOv1-style detector on ResNet-{depth}, head width {width} (random "
                     f"init), as units; weights export to ``yolo_source({depth}, ...)``.")
    MODELS.add(name, build)


for _name in VARIANTS:
    _register(_name)
