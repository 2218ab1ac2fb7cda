"""Object detection: checking box targets, and COCO mAP / AP50 / AP75 over a dataset.

A target is torchvision's: one dict per image, ``{"boxes": float [N, 4] xyxy in pixels,
"labels": int64 [N]}``; N = 0 is an image without objects. Coordinates live in
``[0, W] x [0, H]`` (torchvision's convention: x2 = W is the right border). A coordinate
up to ``BORDER_TOLERANCE`` pixels outside is accepted and clamped onto the border, because
1-based VOC annotations and float rounding after a resize land there; more than that is a
wrong image size or swapped x/y, and raises.

The metric is torchmetrics' ``MeanAveragePrecision`` on the ``faster_coco_eval`` backend
(the COCO evaluator in C++; pycocotools gives the same numbers, slower).
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Sequence, Tuple

import torch

from ..errors import ConfigError, ConfigTypeError

BORDER_TOLERANCE = 1.0  # pixels a box may reach past the image border (then clamped)


def _bad_rows(boxes: torch.Tensor, labels: torch.Tensor, size: Tuple[int, int],
              num_classes: int) -> torch.Tensor:
    """[N] bool: which boxes break any value rule (one tensor, so a caller syncs once)."""
    h, w = size
    t = BORDER_TOLERANCE
    x1, y1, x2, y2 = boxes.unbind(1)
    return (~torch.isfinite(boxes).all(1) | (x2 <= x1) | (y2 <= y1)
            | (x1 < -t) | (y1 < -t) | (x2 > w + t) | (y2 > h + t)
            # a box inside the tolerance strip only would be empty once clamped
            | (x1 >= w) | (y1 >= h) | (x2 <= 0) | (y2 <= 0)
            | (labels < 0) | (labels >= num_classes))


def _structure(target: object, where: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """The boxes [N, 4] and labels [N] of ``target`` after the checks that read no values."""
    if not isinstance(target, Mapping):
        raise ConfigTypeError(f"{where}: a detection target must be a dict with 'boxes' and "
                              f"'labels', got {type(target).__name__}")
    missing = [k for k in ("boxes", "labels") if k not in target]
    if missing:
        raise ConfigError(f"{where}: the target has no {' or '.join(repr(k) for k in missing)} "
                          f"(keys found: {sorted(map(str, target))}); it needs 'boxes' [N, 4] "
                          f"xyxy and 'labels' [N]")
    boxes, labels = target["boxes"], target["labels"]
    for key, val in (("boxes", boxes), ("labels", labels)):
        if not isinstance(val, torch.Tensor):
            raise ConfigTypeError(f"{where}: target['{key}'] must be a torch.Tensor, "
                                  f"got {type(val).__name__}")
    if not boxes.is_floating_point():
        raise ConfigTypeError(f"{where}: target['boxes'] must be a float tensor of pixel "
                              f"coordinates, got {boxes.dtype}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ConfigTypeError(f"{where}: target['labels'] must hold integer class ids, "
                              f"got {labels.dtype}")
    if boxes.numel() == 0 and boxes.dim() == 1:  # torch.tensor([]) for an image without objects
        boxes = boxes.reshape(0, 4)
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ConfigError(f"{where}: target['boxes'] has shape {tuple(boxes.shape)}; it must be "
                          f"[N, 4] (x1, y1, x2, y2), [0, 4] for no objects")
    if labels.dim() != 1 or labels.shape[0] != boxes.shape[0]:
        raise ConfigError(f"{where}: target['labels'] has shape {tuple(labels.shape)} but there "
                          f"are {boxes.shape[0]} boxes; it must be [N], one id per box")
    if labels.device != boxes.device:
        raise ConfigError(f"{where}: boxes are on {boxes.device} but labels on {labels.device}")
    return boxes, labels


def _describe(boxes: torch.Tensor, labels: torch.Tensor, size: Tuple[int, int],
              num_classes: int, where: str) -> ConfigError:
    """The error for the first bad box (slow path: only runs when a check failed)."""
    h, w = size
    i = int(_bad_rows(boxes, labels, size, num_classes).nonzero()[0])
    box = [round(v, 3) for v in boxes[i].tolist()]
    label = int(labels[i])
    if not all(math.isfinite(v) for v in box):
        why = "has a non-finite coordinate (coordinates must be finite pixels)"
    elif box[2] <= box[0] or box[3] <= box[1]:
        why = "has x2 <= x1 or y2 <= y1 (boxes are xyxy with x1 < x2 and y1 < y2)"
    elif not 0 <= label < num_classes:
        why = f"has label {label}, outside the classes 0..{num_classes - 1}"
    else:
        why = (f"lies outside the {w}x{h} (WxH) image (allowed: x in [0, {w}], y in [0, {h}], "
               f"{BORDER_TOLERANCE:g} px tolerance)")
    return ConfigError(f"{where}: box {i} {box} {why}")


def _finish(target: Mapping[str, Any], boxes: torch.Tensor, labels: torch.Tensor,
            size: Tuple[int, int]) -> Dict[str, Any]:
    h, w = size
    boxes = boxes.float()
    # clamp what the tolerance let through, so the matcher and the loss see in-image boxes
    boxes = torch.stack([boxes[:, 0].clamp(0, w), boxes[:, 1].clamp(0, h),
                         boxes[:, 2].clamp(0, w), boxes[:, 3].clamp(0, h)], 1)
    return {**target, "boxes": boxes, "labels": labels.long()}


def _check_size(image_size: Sequence[int]) -> Tuple[int, int]:
    if len(image_size) != 2 or any(int(s) <= 0 for s in image_size):
        raise ConfigError(f"image_size must be (H, W) with both > 0, got {tuple(image_size)}")
    return int(image_size[0]), int(image_size[1])


def check_boxes(target: dict, image_size: Tuple[int, int], num_classes: int,
                where: str) -> dict:
    """Validate one image's target (``image_size`` is (H, W)); return it with float32 boxes
    (clamped onto the image) and int64 labels. Raises ConfigError naming ``where``.

    The value checks read the tensors once (one sync if they are on an accelerator); for a
    batch use ``check_targets``, which syncs once for all images."""
    size = _check_size(image_size)
    boxes, labels = _structure(target, where)
    if boxes.numel() and bool(_bad_rows(boxes, labels, size, num_classes).any()):
        raise _describe(boxes, labels, size, num_classes, where)
    return _finish(target, boxes, labels, size)


def check_targets(targets: Sequence[dict], image_size: Tuple[int, int], num_classes: int,
                  where: str = "target") -> List[dict]:
    """``check_boxes`` for a batch of images of one ``image_size`` (H, W): one device read for
    the whole batch; errors name ``f"{where} {i}"``."""
    size = _check_size(image_size)
    parts = [_structure(t, f"{where} {i}") for i, t in enumerate(targets)]
    if any(b.numel() for b, _ in parts):
        bad = [_bad_rows(b, l, size, num_classes).any() for b, l in parts]
        if bool(torch.stack(bad).any()):
            i = next(i for i, b in enumerate(bad) if bool(b))
            raise _describe(*parts[i], size, num_classes, f"{where} {i}")
    return [_finish(t, b, l, size) for t, (b, l) in zip(targets, parts)]


class DetectionMetric:
    """COCO box mAP over a dataset: ``map`` (IoU 0.50:0.95), ``map_50``, ``map_75``, and the
    size / recall columns torchmetrics reports, as Python floats.

    A value COCO cannot define (no ground-truth box seen at all, or no object of that size)
    is NaN, not torchmetrics' -1, so that it cannot be averaged or plotted as a score.
    ``kwargs`` go to ``MeanAveragePrecision`` (e.g. ``class_metrics``, ``process_group``).
    The states are kept on the CPU (see ``update``), so under DDP with NCCL ``compute`` needs a
    gloo ``process_group`` to gather them.
    """

    def __init__(self, **kwargs: Any) -> None:
        # imported here: torchmetrics costs about 2 s of every process's start-up
        from torchmetrics.detection import MeanAveragePrecision

        self._map = MeanAveragePrecision(box_format="xyxy", iou_type="bbox",
                                         backend="faster_coco_eval", **kwargs)
        # COCO scores each image's 100 best detections (maxDets 100); torchvision keeps up
        # to 300, so the warning that the rest are ignored would fire on every evaluation
        self._map.warn_on_many_detections = False

    def reset(self) -> None:
        """Forget everything accumulated (call at the start of each evaluation)."""
        self._map.reset()

    @torch.no_grad()
    def update(self, preds: List[Dict[str, torch.Tensor]],
               targets: List[Dict[str, torch.Tensor]]) -> None:
        """Add a batch: ``preds`` with boxes [M, 4], scores [M], labels [M]; ``targets`` with
        boxes [N, 4], labels [N]; one dict per image, in the same order."""
        if len(preds) != len(targets):
            raise ConfigError(f"{len(preds)} predictions for {len(targets)} targets; the metric "
                              f"needs one prediction dict per image")
        # The metric keeps every box of the dataset in list states and the COCO evaluator
        # runs on the CPU (numpy / C++) anyway, so holding them on an accelerator would only
        # grow its memory over the evaluation; one copy per batch is the cheap side.
        def cpu(d: Mapping[str, Any]) -> Dict[str, Any]:
            return {k: v.detach().cpu() if isinstance(v, torch.Tensor) else v for k, v in d.items()}

        self._map.update([cpu(p) for p in preds], [cpu(t) for t in targets])

    def compute(self) -> Dict[str, float]:
        """The scalar COCO metrics since the last reset (NaN where undefined, see the class)."""
        if self._map.update_count == 0:  # nothing seen: skip torchmetrics' warning, all undefined
            return {k: float("nan") for k in ("map", "map_50", "map_75")}
        out = {}
        for key, val in self._map.compute().items():
            # per-class values are vectors (a -1 placeholder when class_metrics is off): skip
            if "per_class" in key or not isinstance(val, torch.Tensor) or val.numel() != 1:
                continue
            if val.is_floating_point():
                out[key] = float("nan") if float(val) == -1.0 else float(val)
        return out
