"""Object detection: box targets, RetinaNet's focal + box loss, post-processing + NMS, COCO mAP.

The network's output (and every detection predictor's) is a ``RetinaNetOutput``-style dict:
``cls_logits`` [B, sum(HWA), C], ``bbox_regression`` [B, sum(HWA), 4], ``features`` (the
pyramid levels, for the per-level split), ``anchors`` (B tensors [sum(HWA), 4], xyxy
pixels) and ``image_size``. The loss is torchvision's RetinaNet loss exactly: anchors matched
by ``Matcher(0.5, 0.4, allow_low_quality_matches=True)``, then
``RetinaNetHead.compute_loss`` (sigmoid focal loss, alpha 0.25, gamma 2, over the anchors
not between the thresholds, per image divided by its foreground anchors; L1 box loss on the
``BoxCoder(1, 1, 1, 1)`` deltas of the foreground anchors). The MAN++ COCO code uses
smooth-L1 for the boxes; we keep torchvision's L1 so that a trained model is torchvision's
own RetinaNet with its own criterion.
"""
from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Dict, List, Sequence, Tuple

import torch
from torch import nn
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.retinanet import RetinaNet, RetinaNetHead
from torchvision.ops import box_iou

from ..errors import ConfigError, ConfigTypeError
from .base import TASKS, Task
from .det_metrics import DetectionMetric, check_targets

#: torchvision's RetinaNet post-processing defaults
SCORE_THRESH, NMS_THRESH, DETECTIONS_PER_IMG, TOPK_CANDIDATES = 0.05, 0.5, 300, 1000

Target = Dict[str, torch.Tensor]


def anchor_sizes(stride: int) -> Tuple[int, int, int]:
    """torchvision's RetinaNet anchors for a level of ``stride``: 4 x stride at 3 octave
    scales (32, 40, 50 at P3 ... 512, 645, 812 at P7)."""
    x = 4 * stride
    return (x, int(x * 2 ** (1.0 / 3)), int(x * 2 ** (2.0 / 3)))


def _detach(value: object) -> object:
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, (list, tuple)):
        return type(value)(_detach(v) for v in value)
    return value


class DetectorOutput(dict):
    """What a detector's task unit (and a detection predictor) returns: its raw outputs
    plus what its loss and post-processing need. Each detector family's output knows its
    own criterion and decoding, so the task serves every family through ``loss(output,
    y)`` and ``predict(output, size)``. A dict, with ``detach()`` because
    ``LocalNet._walk`` detaches every block's output, the last one too."""

    def detach(self) -> "DetectorOutput":
        return type(self)({k: _detach(v) for k, v in self.items()})

    def loss(self, targets: List["Target"]) -> torch.Tensor:
        raise NotImplementedError

    def detections(self, size: Tuple[int, int]) -> List["Target"]:
        raise NotImplementedError


class RetinaNetOutput(DetectorOutput):
    """RetinaNet's: torchvision's ``head_outputs`` plus features, anchors and image size
    (keys in the module docstring); torchvision's loss and post-processing."""

    def loss(self, targets: List["Target"]) -> torch.Tensor:
        return _RETINANET_LOSS(self, targets)

    def detections(self, size: Tuple[int, int]) -> List["Target"]:
        return postprocess(self, size)


class _LossHead:
    """The criterion half of ``RetinaNetHead`` (its ``compute_loss`` reads only its box
    coder and loss type, never its weights), with RetinaNet's matcher."""

    def __init__(self) -> None:
        self.head = RetinaNetHead(1, 1, 1)
        self.matcher = det_utils.Matcher(0.5, 0.4, allow_low_quality_matches=True)

    def __call__(self, output: Dict[str, object], targets: List[Target]) -> torch.Tensor:
        anchors: List[torch.Tensor] = output["anchors"]  # type: ignore[assignment]
        matched = []
        for a, t in zip(anchors, targets):
            if t["boxes"].numel() == 0:  # an image without objects: every anchor background
                matched.append(torch.full((a.size(0),), -1, dtype=torch.int64, device=a.device))
            else:
                matched.append(self.matcher(box_iou(t["boxes"], a)))
        outs = {"cls_logits": output["cls_logits"].float(),  # type: ignore[union-attr]
                "bbox_regression": output["bbox_regression"].float()}  # type: ignore[union-attr]
        parts = self.head.compute_loss(targets, outs, anchors, matched)
        return parts["classification"] + parts["bbox_regression"]


def split_levels(output: Dict[str, object]) -> Tuple[Dict[str, List[torch.Tensor]],
                                                     List[List[torch.Tensor]]]:
    """Head outputs and anchors split per pyramid level (what post-processing takes)."""
    features: Sequence[torch.Tensor] = output["features"]  # type: ignore[assignment]
    hw = [int(f.shape[-2] * f.shape[-1]) for f in features]
    a = output["cls_logits"].shape[1] // sum(hw)  # type: ignore[union-attr]
    per_level = [n * a for n in hw]
    heads = {k: list(output[k].split(per_level, dim=1))  # type: ignore[union-attr]
             for k in ("cls_logits", "bbox_regression")}
    anchors = [list(x.split(per_level)) for x in output["anchors"]]  # type: ignore[union-attr]
    return heads, anchors


_RETINANET_LOSS = _LossHead()

# RetinaNet.postprocess_detections reads only these attributes of the model
_POST = SimpleNamespace(box_coder=det_utils.BoxCoder(weights=(1.0, 1.0, 1.0, 1.0)),
                        score_thresh=SCORE_THRESH, nms_thresh=NMS_THRESH,
                        detections_per_img=DETECTIONS_PER_IMG, topk_candidates=TOPK_CANDIDATES)


def postprocess(output: Dict[str, object], size: Tuple[int, int]) -> List[Target]:
    """torchvision's RetinaNet post-processing (score > 0.05, top 1000 per level, decode,
    clip to the image, class-wise NMS 0.5, 300 per image): one dict of ``boxes``,
    ``scores``, ``labels`` per image."""
    heads, anchors = split_levels(output)
    heads = {k: [v.float() for v in vs] for k, vs in heads.items()}
    return RetinaNet.postprocess_detections(_POST, heads, anchors, [tuple(size)] * len(anchors))


def retinanet_head(width: int, anchors: int, num_classes: int, convs: int = 4) -> RetinaNetHead:
    """torchvision's ``RetinaNetHead`` (its init, class prior included) with ``convs``
    convs in each of its class / box subnets (torchvision: 4; the reference's aux heads: 2)."""
    head = RetinaNetHead(width, anchors, num_classes)
    for sub in (head.classification_head, head.regression_head):
        sub.conv = sub.conv[:convs]
    return head


class DetectionPredictor(nn.Module):
    """The MAN++ reference's auxiliary detector: a small RetinaNet head on local levels.

    A 1x1 conv to ``width`` channels + ReLU; stride-2 3x3 convs (+ ReLU) down to the first
    level of stride >= 8 (P3); from stride 32 on (the deepest head of the reference's K=4,
    which reads layer4) also P6 and P7 by two more stride-2 convs. So a head on layer2
    features predicts on P3 (anchors 32-50), on layer3 on P4, on layer4 on P5-P7, as the
    reference's heads 0, 1, 2. Each head has its own anchors (torchvision's sizes for the
    level) and a RetinaNet head whose class / box subnets have ``convs`` convs (the
    reference: 2; torchvision's main head: 4), initialised as torchvision's.
    """

    def __init__(self, channels: int, num_classes: int, reduction: int, width: int = 256,
                 convs: int = 2) -> None:
        super().__init__()
        stride = max(1, int(reduction))
        layers: List[nn.Module] = [nn.Conv2d(channels, width, 1), nn.ReLU(inplace=True)]
        while stride < 8:
            layers += [nn.Conv2d(width, width, 3, stride=2, padding=1), nn.ReLU(inplace=True)]
            stride *= 2
        self.reduce = nn.Sequential(*layers)
        self.strides = [stride] + ([stride * 2, stride * 4] if stride >= 32 else [])
        self.extra = nn.ModuleList(nn.Conv2d(width, width, 3, stride=2, padding=1)
                                   for _ in self.strides[1:])
        self.anchor_generator = AnchorGenerator(tuple(anchor_sizes(s) for s in self.strides),
                                                ((0.5, 1.0, 2.0),) * len(self.strides))
        self.head = retinanet_head(width, 9, num_classes, convs)

    def forward(self, features: torch.Tensor) -> Dict[str, object]:
        levels = [self.reduce(features)]
        for conv in self.extra:  # P6 from P5, P7 from relu(P6): LastLevelP6P7's order
            levels.append(conv(levels[-1] if len(levels) == 1 else torch.relu(levels[-1])))
        out = RetinaNetOutput(self.head(levels))
        # an image of grid x stride: the generator's strides (image // grid) are exact
        gh, gw = levels[0].shape[-2:]
        size = (int(gh) * self.strides[0], int(gw) * self.strides[0])
        images = ImageList(features.new_empty(features.shape[0], 1, *size), [size] * len(features))
        out.update(features=levels, anchors=self.anchor_generator(images, levels),
                   image_size=size)
        return out


class Detection(Task):
    name = "detection"
    columns = ("map", "map_50", "map_75")
    primary = "map"
    target = "a list of one dict per image: {'boxes': float [N, 4] xyxy pixels, 'labels': int64 [N]}"

    def check_target(self, y: object, x: torch.Tensor, num_classes: int) -> List[Target]:
        """``y`` as one checked dict per image of ``x`` (boxes float32 clamped onto the
        image, labels int64; an image without boxes is valid)."""
        if isinstance(y, dict):
            y = [y]
        if not isinstance(y, (list, tuple)):
            raise ConfigTypeError(f"y must be {self.target}, got {type(y).__name__}")
        if len(y) != x.shape[0]:
            raise ConfigError(f"y must hold one target dict per image: x has {x.shape[0]} "
                              f"images but y has {len(y)} targets")
        out = check_targets(list(y), tuple(x.shape[-2:]), num_classes, where="target")
        for t in out:
            if t["boxes"].device != x.device or t["labels"].device != x.device:
                raise ConfigError(f"x is on {x.device} but a target on {t['boxes'].device}; "
                                  "move both to one device")
        return out

    def loss(self, output: Dict[str, object], target: List[Target]) -> torch.Tensor:
        return output.loss(target)  # type: ignore[attr-defined]

    def predictor(self, channels: int, num_classes: int, reduction: int = 8,
                  width: int = 0) -> nn.Module:
        if width < 0:
            raise ConfigError(f"the detection predictor's width must be >= 0 (0: 256), got {width}")
        return DetectionPredictor(channels, num_classes, reduction, width or 256)

    def predict(self, output: Dict[str, object], size: Tuple[int, int]) -> List[Target]:
        return output.detections(size)  # type: ignore[attr-defined]

    def to_device(self, y: List[Target], device: torch.device) -> List[Target]:
        return [{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in t.items()}
                for t in y]

    def metric(self, num_classes: int, device: torch.device) -> "DetMetric":
        return DetMetric()

    def example_target(self, batch: int, size: Tuple[int, int], num_classes: int,
                       generator: torch.Generator) -> List[Target]:
        h, w = size
        out = []
        for _ in range(batch):
            n = int(torch.randint(0, 4, (1,), generator=generator))
            xy = torch.rand(n, 2, generator=generator) * torch.tensor([w * 0.7, h * 0.7])
            wh = (torch.rand(n, 2, generator=generator) * 0.25 + 0.05) * torch.tensor([w, h])
            out.append({"boxes": torch.cat([xy, xy + wh], 1),
                        "labels": torch.randint(0, num_classes, (n,), generator=generator)})
        return out


class DetMetric(DetectionMetric):
    """COCO mAP fed the network's raw output (post-processed here); the task's columns."""

    def update(self, output: Dict[str, object], target: List[Target]) -> None:  # type: ignore[override]
        preds = output.detections(output["image_size"])  # type: ignore[attr-defined]
        super().update(preds, list(target))

    def compute(self) -> Dict[str, float]:
        out = super().compute()
        return {k: out.get(k, math.nan) for k in Detection.columns}


TASKS.add(Detection.name, Detection())
