"""Semantic segmentation metrics over a whole dataset: mIoU, mean accuracy, pixel accuracy.

The three columns of MAN++ Table V. All three come from one confusion matrix
accumulated over every pixel of the dataset (torchmetrics'
``MulticlassJaccardIndex`` holds it and syncs it across DDP ranks), not from
per-batch or per-image averages.

Classes that never occur (union of target and prediction empty for IoU; no target
pixel for accuracy) are undefined, not 0 or 1: they are NaN in the per-class
values and left out of the means, as the DeepLab / MMSegmentation evaluators do
(``nanmean``). torchmetrics >= 1.0 drops classes with an empty union from its macro
IoU too (Lightning-AI/torchmetrics#1693, fixed by #1715); before that it counted
them as 0. The reduction is written out here so the result does not depend on
that version detail, and so mean accuracy follows the same rule (torchmetrics'
macro accuracy would count a class that is only predicted, never in the target,
as 0).
"""
from __future__ import annotations

from typing import Dict, Union

import torch

from ..errors import ConfigError

IGNORE_INDEX = 255  # VOC borders, Cityscapes void: the convention of every segmentation benchmark


def per_class_iou(confmat: torch.Tensor) -> torch.Tensor:
    """IoU of each class from a [C, C] confusion matrix (rows = target, cols = prediction);
    NaN where the class is in neither target nor prediction."""
    cm = confmat.double()
    tp = cm.diagonal()
    union = cm.sum(0) + cm.sum(1) - tp
    return torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))


def per_class_acc(confmat: torch.Tensor) -> torch.Tensor:
    """Recall of each class (correct pixels / target pixels); NaN where the class has no target pixel."""
    cm = confmat.double()
    support = cm.sum(1)
    return torch.where(support > 0, cm.diagonal() / support.clamp(min=1), torch.full_like(support, float("nan")))


class SegmentationMetrics:
    """Dataset-level mIoU, mean (per-class) accuracy and overall pixel accuracy.

    ``update`` takes logits ``[B, C, H, W]`` (argmax over C) or class ids ``[B, H, W]``
    with targets ``[B, H, W]``; target pixels equal to ``ignore_index`` count nowhere.
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX,
                 device: Union[str, torch.device] = "cpu") -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ConfigError(f"num_classes must be an integer >= 2, got {num_classes!r}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.device = torch.device(device)
        # average="macro" is what the metric would report by itself; compute() below reads
        # only its accumulated confusion matrix, so all three numbers share one bincount.
        from torchmetrics.classification import MulticlassJaccardIndex  # see det_metrics

        self._jaccard = MulticlassJaccardIndex(num_classes, average="macro", ignore_index=ignore_index).to(self.device)

    def reset(self) -> None:
        """Forget everything accumulated (call at the start of each evaluation)."""
        self._jaccard.reset()

    @torch.no_grad()
    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch: ``preds`` logits [B, C, H, W] or class ids [B, H, W]; ``target`` [B, H, W]."""
        if preds.dim() == target.dim() + 1 and preds.is_floating_point():
            if preds.shape[1] != self.num_classes:
                raise ValueError(f"logits have {preds.shape[1]} channels, expected num_classes={self.num_classes}")
            preds = preds.argmax(1)
        if preds.shape != target.shape:
            raise ValueError(f"prediction shape {tuple(preds.shape)} does not match target shape {tuple(target.shape)}")
        self._jaccard.update(preds.to(self.device), target.to(self.device))

    @property
    def confmat(self) -> torch.Tensor:
        """The [C, C] confusion matrix accumulated on this process (rows = target)."""
        return self._jaccard.confmat

    def _synced_confmat(self) -> torch.Tensor:
        # under torch.distributed every rank must call compute(): the states are summed
        # across ranks here, then restored to the local ones when the context exits (unless
        # the metric was made rank-local: sync_on_compute off, as a pipeline's last rank does)
        with self._jaccard.sync_context(should_sync=self._jaccard.sync_on_compute):
            return self._jaccard.confmat.clone()

    def per_class(self) -> Dict[str, torch.Tensor]:
        """Per-class ``iou`` and ``acc`` (float64, NaN for undefined classes), over all ranks."""
        cm = self._synced_confmat()
        iou, acc = per_class_iou(cm), per_class_acc(cm)
        if 0 <= self.ignore_index < self.num_classes:  # an ignored real class is left out, as torchmetrics does
            iou[self.ignore_index] = float("nan")
            acc[self.ignore_index] = float("nan")
        return {"iou": iou, "acc": acc, "confmat": cm}

    def compute(self) -> Dict[str, float]:
        """``{"miou", "mean_acc", "pixel_acc"}`` in [0, 1] over everything seen since the last
        reset; NaN when no labelled pixel was seen."""
        pc = self.per_class()
        cm = pc["confmat"].double()
        total = cm.sum()
        pixel_acc = (cm.diagonal().sum() / total).item() if total > 0 else float("nan")
        return {
            "miou": torch.nanmean(pc["iou"]).item(),
            "mean_acc": torch.nanmean(pc["acc"]).item(),
            "pixel_acc": pixel_acc,
        }
