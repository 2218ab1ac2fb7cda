"""VOC and Cityscapes semantic segmentation read from their on-disk layouts via torchvision.

Samples are ``(tv_tensors.Image uint8 [3, H, W], tv_tensors.Mask int64 [H, W])`` with
class ids ``0..num_classes-1`` and 255 for pixels to ignore, so that
``torchvision.transforms.v2`` moves the mask together with the image. Nothing is
downloaded or extracted: a missing folder is a ``ConfigError`` naming it.
"""
from __future__ import annotations

import os
from typing import Any, Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors

from ..errors import ConfigError

IGNORE_INDEX = 255
Sample = Tuple[tv_tensors.Image, tv_tensors.Mask]

VOC_CLASSES: Tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)

# Cityscapes: the labelId of each of the 19 evaluated classes, in trainId order (cityscapesScripts
# helpers/labels.py: every other labelId 0..33 has trainId 255, i.e. is not evaluated).
CITYSCAPES_CLASSES: Tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)
CITYSCAPES_TRAIN_LABEL_IDS: Tuple[int, ...] = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)
CITYSCAPES_NUM_LABEL_IDS = 34  # labelIds 0..33 are defined; license plate (-1) is never written to the PNGs


def cityscapes_lut() -> torch.Tensor:
    """A 256-entry table labelId -> trainId: the 19 classes, 255 for the other defined labelIds and
    for 255 itself, -1 for values no Cityscapes label has (rejected when a mask is read)."""
    lut = torch.full((256,), -1, dtype=torch.int64)
    lut[:CITYSCAPES_NUM_LABEL_IDS] = IGNORE_INDEX
    lut[IGNORE_INDEX] = IGNORE_INDEX
    lut[list(CITYSCAPES_TRAIN_LABEL_IDS)] = torch.arange(len(CITYSCAPES_TRAIN_LABEL_IDS))
    return lut


class SegmentationFolder(Dataset):
    """A torchvision segmentation dataset with checked, converted samples.

    ``base`` is the torchvision dataset (its ``__getitem__`` opens the PIL image and
    mask); ``images`` / ``masks`` are the paths, for messages. ``lut`` maps raw mask
    values to class ids (-1 = invalid); without it a raw value must be a class id or 255.
    """

    def __init__(self, base: Any, images: Sequence[str], masks: Sequence[str], class_names: Sequence[str],
                 lut: Optional[torch.Tensor] = None, transforms: Optional[Callable[..., Any]] = None) -> None:
        self.base = base
        self.images = list(images)
        self.masks = list(masks)
        self.class_names = tuple(class_names)
        self.num_classes = len(self.class_names)
        self.ignore_index = IGNORE_INDEX
        self.lut = lut
        self.transforms = transforms

    def __len__(self) -> int:
        return len(self.images)

    def _raw(self, index: int) -> Tuple[Image.Image, Image.Image]:
        try:
            img, mask = self.base[index]
            img.load(), mask.load()  # decode now, so a corrupt file is reported here with its name
        except (OSError, SyntaxError, ValueError) as e:  # PIL: UnidentifiedImageError is an OSError
            raise ConfigError(f"cannot read sample {index}: image {self.images[index]} / mask "
                              f"{self.masks[index]} ({' '.join(str(e).split())})") from None
        return img, mask

    def _mask_ids(self, mask: Image.Image, path: str) -> torch.Tensor:
        if mask.mode not in ("P", "L", "I", "I;16"):  # palette or grey ids; a colour rendering is not a mask
            raise ConfigError(f"mask {path} is a {mask.mode} image, expected a palette or grayscale PNG of class ids")
        raw = torch.from_numpy(np.asarray(mask, dtype=np.int64).copy())
        if self.lut is not None:
            bad = (raw < 0) | (raw >= len(self.lut))
            ids = self.lut[raw.clamp(0, len(self.lut) - 1)]
            bad |= ids < 0
        else:
            ids = raw
            bad = ((raw < 0) | (raw >= self.num_classes)) & (raw != IGNORE_INDEX)
        if bool(bad.any()):
            values = sorted({int(v) for v in raw[bad].unique()[:8]})
            raise ConfigError(f"mask {path} has class ids {values} outside the {self.num_classes} classes "
                              f"(ids 0..{self.num_classes - 1}, {IGNORE_INDEX} = ignore)")
        return ids

    def __getitem__(self, index: int) -> Sample:
        img, mask = self._raw(index)
        if img.size != mask.size:
            raise ConfigError(f"image {self.images[index]} is {img.size[0]}x{img.size[1]} but its mask "
                              f"{self.masks[index]} is {mask.size[0]}x{mask.size[1]} (width x height)")
        ids = self._mask_ids(mask, self.masks[index])
        sample = (tv_tensors.Image(img.convert("RGB")), tv_tensors.Mask(ids))
        if self.transforms is not None:
            sample = self.transforms(*sample)
        return sample


def _need_dir(path: str, what: str) -> None:
    if not os.path.isdir(path):
        raise ConfigError(f"{what} not found: {path}")


def _need_files(paths: Sequence[str], what: str) -> None:
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ConfigError(f"{what} missing: {missing[0]}{more}")


def voc_base_dir(root: str, year: str, image_set: str, subdir: str, lists: str) -> str:
    """Check a VOC layout for ``image_set`` (JPEGImages, ``subdir``, ImageSets/``lists``)
    before torchvision's class reads it; return VOCdevkit/VOC``year``. One-line errors."""
    from torchvision.datasets.voc import DATASET_YEAR_DICT

    if str(year) not in DATASET_YEAR_DICT or str(year) == "2007-test":
        raise ConfigError(f"unknown VOC year {year!r} (choose from: 2007, 2008, 2009, 2010, 2011, 2012)")
    if image_set not in ("train", "val", "trainval"):
        raise ConfigError(f"unknown VOC image_set {image_set!r} (choose from: train, val, trainval)")
    _need_dir(str(root), "VOC root")
    base_dir = os.path.join(str(root), DATASET_YEAR_DICT[str(year)]["base_dir"])
    _need_dir(base_dir, f"VOC {year} folder")
    for sub in ("JPEGImages", subdir):
        _need_dir(os.path.join(base_dir, sub), f"VOC {sub} folder")
    split_file = os.path.join(base_dir, "ImageSets", lists, f"{image_set}.txt")
    if not os.path.isfile(split_file):
        raise ConfigError(f"VOC split list not found: {split_file}")
    return base_dir


def voc_segmentation(root: str, year: str = "2012", image_set: str = "train",
                     transforms: Optional[Callable[..., Any]] = None) -> SegmentationFolder:
    """Pascal VOC segmentation from ``root`` (the folder holding ``VOCdevkit``): 21 classes, 255 = border."""
    from torchvision.datasets import VOCSegmentation

    voc_base_dir(root, year, image_set, "SegmentationClass", "Segmentation")  # checks only
    base = VOCSegmentation(str(root), year=str(year), image_set=image_set)
    _need_files(base.images, "VOC image")
    _need_files(base.masks, "VOC mask")
    return SegmentationFolder(base, base.images, base.masks, VOC_CLASSES, transforms=transforms)


def cityscapes(root: str, split: str = "train", transforms: Optional[Callable[..., Any]] = None) -> SegmentationFolder:
    """Cityscapes fine annotations from ``root`` (holding ``leftImg8bit`` and ``gtFine``), labelIds
    mapped to the 19 trainIds, 255 = not evaluated."""
    from torchvision.datasets import Cityscapes

    if split not in ("train", "val"):  # the test split's public gtFine masks are blank
        raise ConfigError(f"unknown Cityscapes split {split!r} (choose from: train, val)")
    _need_dir(str(root), "Cityscapes root")
    images_dir = os.path.join(str(root), "leftImg8bit", split)
    masks_dir = os.path.join(str(root), "gtFine", split)
    # checked before torchvision sees them: given the release zips it would extract them into root
    _need_dir(images_dir, "Cityscapes image folder")
    _need_dir(masks_dir, "Cityscapes gtFine folder")
    for city in os.listdir(images_dir):
        if not os.path.isdir(os.path.join(images_dir, city)):
            raise ConfigError(f"Cityscapes {images_dir} should hold one folder per city, found a file: {city}")
    base = Cityscapes(str(root), split=split, mode="fine", target_type="semantic")
    # torchvision keeps os.listdir order and every file; keep the camera images, sorted, for
    # a deterministic order on every filesystem
    keep = sorted((img, tgt[0]) for img, tgt in zip(base.images, base.targets) if img.endswith("_leftImg8bit.png"))
    if not keep:
        raise ConfigError(f"no *_leftImg8bit.png images under {images_dir}")
    base.images, base.targets = [k[0] for k in keep], [[k[1]] for k in keep]
    images: List[str] = base.images
    masks: List[str] = [t[0] for t in base.targets]
    _need_files(masks, "Cityscapes gtFine labelIds mask")
    return SegmentationFolder(base, images, masks, CITYSCAPES_CLASSES, lut=cityscapes_lut(), transforms=transforms)
