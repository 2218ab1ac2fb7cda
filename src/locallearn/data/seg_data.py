"""Segmentation datasets for ``load_dataset``: fmnist-scenes, voc-seg, cityscapes, as DenseData.

- ``fmnist-scenes``: generated canvases (``data.scenes``) of ``image_size`` px (default 128;
  32..512), 11 classes (0 = background, c + 1 = Fashion-MNIST class c). ``limit_train`` /
  ``limit_test`` set how many scenes are generated (default 10000 / 2000). The scenes come
  from a fixed data seed, 0, *not* the training seed, so runs with different ``--seed``
  train and test on identical data; ``fmnist-scenes:seed=N`` picks another scene set. Items
  are scaled by ``image_size / 128`` (0.75..2.5x at 128 px), so a smaller canvas is the same
  kind of scene at a lower resolution (same objects per scene and foreground share).
- ``voc-seg``: Pascal VOC segmentation, train = ``train`` list, test = ``val`` list, 21 classes.
  ``data_dir`` is the folder holding ``VOCdevkit`` (or ``VOCdevkit`` or ``VOCdevkit/VOC20xx``
  itself). Default ``image_size`` 256: square ``S x S``.
- ``cityscapes``: fine annotations as the 19 trainIds, train / val. ``image_size`` (default
  256) is the height; the width is twice it, Cityscapes' own 2:1 aspect.

VOC and Cityscapes are read once into memory at a fixed size by *letterboxing*: each image
is resized (bilinear, antialiased; the mask nearest) to fit inside the target with its aspect
kept, then padded right and bottom (image 0, mask 255 = ignore). Nothing is cropped away and
nothing is distorted, so evaluation sees every labelled pixel, and the padding counts in
neither the loss nor the mIoU. Nothing is downloaded: a missing folder is a ConfigError.
Scenes are generated, not cached: 10000 training scenes take about 9 s at 128 px and 4 s at
64 px on one CPU thread (measured with the CPU shared; a cache would not pay for itself).
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import torch
from torchvision.transforms.v2 import functional as TF

from ..errors import ConfigError
from .base import register_dense, reject_spec
from .dense import IGNORE_INDEX, DenseData
from .seg_sets import SegmentationFolder, cityscapes, voc_segmentation

SCENES_SIZE, SCENES_SIZES = 128, (32, 512)  # items are 28 px: below 32 they shrink to a few pixels
SCENES_N = (10_000, 2_000)  # (train, test) scenes when no limit is given
SCENES_SCALE = (0.75, 2.5)  # make_scenes' item scales at 128 px; scaled with the canvas
VOC_SIZE, CITYSCAPES_SIZE, MIN_SIZE = 256, 256, 16


def check_image_size(name: str, image_size: Optional[int], default: int, lo: int = MIN_SIZE,
                     hi: Optional[int] = None) -> int:
    """``image_size`` (``default`` when None) checked to be an integer in ``lo..hi``."""
    if image_size is None:
        return default
    allowed = f">= {lo}" if hi is None else f"in {lo}..{hi}"
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < lo \
            or (hi is not None and image_size > hi):
        raise ConfigError(f"--image-size {image_size!r} is not valid for {name}: it must be an integer "
                          f"{allowed} (default {default})")
    return image_size


def parse_options(name: str, spec: Optional[str], allowed: Dict[str, int]) -> Dict[str, int]:
    """'key=N[,key=N]' integer options after 'name:', over the defaults in ``allowed``."""
    out = dict(allowed)
    if spec is None:
        return out
    for part in spec.split(","):
        key, eq, value = part.partition("=")
        key = key.strip()
        if key not in allowed or not eq:
            raise ConfigError(f"dataset suffix {name}:{spec} is not valid: expected "
                              f"{', '.join(f'{k}=N' for k in allowed)} (e.g. {name}:seed=3)")
        try:
            out[key] = int(value.strip())
        except ValueError:
            raise ConfigError(f"dataset suffix {name}:{spec}: {key} must be an integer (got {value!r})") from None
    return out


def load_fmnist_scenes(spec: Optional[str], data_dir: Optional[str], download: bool, limit_train: Optional[int],
                       limit_test: Optional[int], image_size: Optional[int]) -> DenseData:
    """fmnist-scenes as DenseData (see the module docstring)."""
    from .scenes import FMNIST_CLASSES, fmnist_scenes

    opts = parse_options("fmnist-scenes", spec, {"seed": 0})
    size = check_image_size("fmnist-scenes", image_size, SCENES_SIZE, *SCENES_SIZES)
    k = size / SCENES_SIZE
    n_train = SCENES_N[0] if limit_train is None else limit_train
    n_test = SCENES_N[1] if limit_test is None else limit_test
    train, test = fmnist_scenes(data_dir, n_train, n_test, size=size, seed=opts["seed"], download=download,
                                scale=(SCENES_SCALE[0] * k, SCENES_SCALE[1] * k))
    source = train.config["source"]
    name = "fmnist-scenes" if spec is None else f"fmnist-scenes:{spec}"
    config = {"dataset": "fmnist-scenes", "data_seed": opts["seed"], "image_size": size,
              "n_train": n_train, "n_test": n_test, "scenes": {k_: v for k_, v in train.config.items()
                                                               if k_ not in ("n", "split", "seed")}}
    return DenseData(name, train.images, train.masks, test.images, test.masks, num_classes=train.num_seg_classes,
                     source=f"{source} (scenes seed {opts['seed']}, {size}x{size})",
                     class_names=("background",) + FMNIST_CLASSES, config=config)


def letterbox(image: torch.Tensor, mask: torch.Tensor, size: Tuple[int, int]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Fit (image [C, h, w], mask [h, w] as tv_tensors) inside ``size`` keeping the aspect, then pad
    right / bottom: image with 0, mask with 255. Returns plain uint8 tensors [C, H, W], [H, W]."""
    H, W = size
    h, w = image.shape[-2:]
    s = min(H / h, W / w)
    nh, nw = min(H, max(1, round(h * s))), min(W, max(1, round(w * s)))
    if (nh, nw) != (h, w):
        image = TF.resize(image, [nh, nw], antialias=True)  # bilinear for an Image
        mask = TF.resize(mask, [nh, nw])  # nearest for a Mask: ids are never blended
    if (nh, nw) != (H, W):
        pad = [0, 0, W - nw, H - nh]  # left, top, right, bottom
        image, mask = TF.pad(image, pad, fill=0), TF.pad(mask, pad, fill=IGNORE_INDEX)
    return image.as_subclass(torch.Tensor).to(torch.uint8), mask.as_subclass(torch.Tensor).to(torch.uint8)


def read_split(ds: SegmentationFolder, limit: Optional[int], size: Tuple[int, int]) -> Tuple[torch.Tensor, ...]:
    """The first ``limit`` samples (all when None) of ``ds``, letterboxed to ``size``, as uint8 tensors.

    Threads, not processes: decoding (PIL) and resizing (torch) release the GIL, and an error
    (a ConfigError naming the file) reaches the caller as itself, not as a worker traceback.
    """
    n = len(ds) if limit is None else min(limit, len(ds))

    def one(i: int) -> Tuple[torch.Tensor, torch.Tensor]:
        return letterbox(*ds[i], size)

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        pairs = list(pool.map(one, range(n)))
    return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])


def _folder_data(name: str, build: Callable[[str], SegmentationFolder], root: str, splits: Tuple[str, str],
                 limit_train: Optional[int], limit_test: Optional[int], size: Tuple[int, int],
                 config: Dict[str, Any]) -> DenseData:
    train_ds, test_ds = build(splits[0]), build(splits[1])  # both checked before any image is read
    train_x, train_y = read_split(train_ds, limit_train, size)
    test_x, test_y = read_split(test_ds, limit_test, size)
    config = {**config, "image_size": list(size), "fit": "letterbox", "splits": list(splits)}
    return DenseData(name, train_x, train_y, test_x, test_y, num_classes=train_ds.num_classes, source=root,
                     class_names=train_ds.class_names, config=config)


def voc_root(data_dir: Optional[str], name: str = "voc-seg") -> Tuple[str, str]:
    """(root holding VOCdevkit, year) from a --data-dir that is that root, VOCdevkit, or VOCdevkit/VOC20xx;
    ``name`` is the dataset named in errors."""
    if not data_dir:
        raise ConfigError(f"{name} needs --data-dir DIR: the folder holding VOCdevkit/VOC2012 (nothing is "
                          "downloaded)")
    p = Path(data_dir)
    if (p / "VOCdevkit").is_dir():
        return str(p), "2012"
    if p.name == "VOCdevkit":
        return str(p.parent), "2012"
    if p.parent.name == "VOCdevkit" and p.name.startswith("VOC") and p.name[3:].isdigit():
        return str(p.parent.parent), p.name[3:]
    raise ConfigError(f"{name}: --data-dir {data_dir} holds no VOCdevkit folder; point it at the folder "
                      "holding VOCdevkit (or at VOCdevkit/VOC2012 itself)")


def load_voc(spec: Optional[str], data_dir: Optional[str], download: bool, limit_train: Optional[int],
             limit_test: Optional[int], image_size: Optional[int]) -> DenseData:
    """Pascal VOC segmentation (train / val lists) letterboxed to image_size x image_size."""
    reject_spec("voc-seg", spec)
    size = check_image_size("voc-seg", image_size, VOC_SIZE)
    root, year = voc_root(data_dir)
    return _folder_data("voc-seg", lambda split: voc_segmentation(root, year, split), root, ("train", "val"),
                        limit_train, limit_test, (size, size), {"dataset": "voc-seg", "year": year})


def load_cityscapes(spec: Optional[str], data_dir: Optional[str], download: bool, limit_train: Optional[int],
                    limit_test: Optional[int], image_size: Optional[int]) -> DenseData:
    """Cityscapes fine trainIds (train / val) letterboxed to image_size x 2*image_size."""
    reject_spec("cityscapes", spec)
    size = check_image_size("cityscapes", image_size, CITYSCAPES_SIZE)
    if not data_dir:
        raise ConfigError("cityscapes needs --data-dir DIR: the folder holding leftImg8bit/ and gtFine/ "
                          "(nothing is downloaded)")
    return _folder_data("cityscapes", lambda split: cityscapes(str(data_dir), split), str(data_dir),
                        ("train", "val"), limit_train, limit_test, (size, 2 * size), {"dataset": "cityscapes"})


register_dense("fmnist-scenes", load_fmnist_scenes, can_download=True)  # Fashion-MNIST itself may be fetched
register_dense("voc-seg", load_voc, can_download=False)
register_dense("cityscapes", load_cityscapes, can_download=False)
