"""In-memory detection data: the DetData container and its resumable, box-following batches.

Images are uint8 [N, C, H, W]; targets are torchvision's, one dict per image ``{"boxes":
float32 [k, 4] xyxy pixels, "labels": int64 [k]}`` (k = 0 is an image without objects; other
keys are not kept). Batches reuse ``DenseBatches`` (data/dense.py) and so share its contract:
every random draw of sample ``i`` comes from ``sample_seed(epoch_seed, i)``, so the batches are
the same for any number of workers, any shard and after a mid-epoch resume.

Training augmentation (``det_train_transform``), ``torchvision.transforms.v2`` on the image and
its ``BoundingBoxes`` together:

- random rescale of the shorter side to ``U{0.75 S .. 1.33 S}`` (``S`` the stored shorter side;
  milder than segmentation's 0.5..2, since objects must stay recognisable as whole boxes),
- random crop back to the stored ``H x W``, zero-padding where the rescaled image is smaller,
- random horizontal flip (p = 0.5),
- boxes clamped to the crop, and boxes narrower or lower than 1 px dropped with their labels
  (an object cut away by the crop is no longer in the image; an image may end with no boxes).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Sequence, Tuple

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from ..errors import ConfigError
from ..tasks.det_metrics import check_targets
from .dense import Augmented, DenseBatches, HeldDense, train_transform
from .folder import sample_seed

Target = Dict[str, torch.Tensor]
DET_SCALE_RANGE = (0.75, 1.33)  # random rescale of the shorter side


def det_train_transform(size: Tuple[int, int], scale: Tuple[float, float] = DET_SCALE_RANGE) -> Callable[..., Any]:
    """The training augmentation (module docstring) for stored images of ``size`` (H, W); called as
    ``transform(Image, {"boxes": BoundingBoxes, "labels": ...})``."""
    return v2.Compose([
        train_transform(size, scale),  # rescale, crop / pad, flip: the segmentation recipe's steps
        v2.ClampBoundingBoxes(),
        v2.SanitizeBoundingBoxes(min_size=1),  # drops the labels of dropped boxes too
    ])


def _check_images(x: object, where: str) -> None:
    if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8 or x.dim() != 4 or len(x) == 0:
        got = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ConfigError(f"{where}: images must be a non-empty uint8 tensor [N, C, H, W] (got {got})")


def _checked_targets(x: torch.Tensor, y: object, num_classes: int, where: str) -> List[Target]:
    """``y`` as a list of CPU targets {boxes float32 [k, 4], labels int64 [k]}, one per image of ``x``."""
    if not isinstance(y, (list, tuple)):
        raise ConfigError(f"{where}: targets must be a list of dicts, one per image (got {type(y).__name__})")
    if len(y) != len(x):
        raise ConfigError(f"{where}: {len(x)} images but {len(y)} targets; each image needs one target "
                          "(with empty boxes when it has no objects)")
    size = (int(x.shape[2]), int(x.shape[3]))
    checked = check_targets(list(y), size, num_classes, f"{where} image")
    return [{"boxes": t["boxes"].detach().cpu().float().contiguous(), "labels": t["labels"].detach().cpu()}
            for t in checked]


@dataclass
class DetData(HeldDense):
    """A detection dataset in memory; the trainer's interface of ``DenseData`` with box targets
    (``train_y`` / ``test_y``: one dict per image).

    Construction checks the images, every box (inside its image, 1 px tolerance, clamped;
    labels in ``0..num_classes-1``), and computes ``mean`` / ``std`` when they are not given.
    """

    task = "detection"

    def __post_init__(self) -> None:
        where = f"{self.name} in {self.source}"
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int) or self.num_classes < 1:
            raise ConfigError(f"{where}: num_classes must be an integer >= 1 (got {self.num_classes!r})")
        _check_images(self.train_x, f"{where} (training)")
        _check_images(self.test_x, f"{where} (test)")
        self._check_images_match(where)
        self.train_y = _checked_targets(self.train_x, self.train_y, self.num_classes, f"{where} (training)")
        self.test_y = _checked_targets(self.test_x, self.test_y, self.num_classes, f"{where} (test)")
        self._complete(where)

    @property
    def num_boxes(self) -> Tuple[int, int]:
        """(training, test) object counts, for logs."""
        return sum(len(t["labels"]) for t in self.train_y), sum(len(t["labels"]) for t in self.test_y)

    def _batches(self) -> type:
        return DetBatches

    def _augmentation(self) -> Callable[..., Any]:
        return det_train_transform(self.image_size)


class DetAugmented(Augmented):
    """Sample i of an epoch: ``transform(Image, {"boxes": BoundingBoxes, "labels"})`` with the CPU RNG
    seeded by ``sample_seed(epoch_seed, i)``; returns (uint8 [C, H, W], plain target dict)."""

    def __getitem__(self, i: int) -> Tuple[torch.Tensor, Target]:  # type: ignore[override]
        h, w = self.x.shape[-2:]
        t = self.y[i]
        boxes = tv_tensors.BoundingBoxes(t["boxes"], format="XYXY", canvas_size=(int(h), int(w)))
        # v2 draws from the global CPU RNG: fork it so the caller's stream is untouched
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(sample_seed(self.epoch_seed, i))
            img, out = self.transform(tv_tensors.Image(self.x[i]), {"boxes": boxes, "labels": t["labels"]})
        return img.as_subclass(torch.Tensor), {"boxes": out["boxes"].as_subclass(torch.Tensor).float(),
                                               "labels": out["labels"].to(torch.int64)}


def det_collate(samples: Sequence[Tuple[torch.Tensor, Target]]) -> Tuple[torch.Tensor, List[Target]]:
    """Stack the images; keep the targets a list (their box counts differ)."""
    return torch.stack([s[0] for s in samples]), [s[1] for s in samples]


class DetBatches(DenseBatches):
    """Iterates (x, targets): x float (x/255 - mean)/std [B, C, H, W] and a list of B target dicts
    {boxes float32 [k, 4], labels int64 [k]}, all on ``device``. Order, seeding, resume and
    sharding are DenseBatches'."""

    dataset_class = DetAugmented
    collate = staticmethod(det_collate)

    def _take(self, idx: List[int]) -> Tuple[torch.Tensor, List[Target]]:
        return self.x[idx], [self.y[i] for i in idx]

    def _move_target(self, yb: List[Target]) -> List[Target]:
        return [{k: v.to(self.device, non_blocking=True) for k, v in t.items()} for t in yb]
