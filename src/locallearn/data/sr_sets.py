"""Super-resolution datasets for ``load_dataset``: sr-photos, div2k, sr-folder, as SRData.

Every set takes ``name:scale=S,patches=N`` (scale 2, 3 or 4, default 2; N training patches
per epoch, default 1600) and ``image_size`` = the LR patch side (default 48, the EDSR paper's;
8..512). When no ``image_size`` is given and a training image is smaller than 48 px at LR, the
default patch shrinks to that image's shorter LR side (sr-photos at x4: 43, from text.png) and the
run's config records it; an explicit ``image_size`` that does not fit raises, naming the image.
HR images are mod-cropped (right / bottom) to a multiple of the scale; LR images are made by
PIL bicubic downscaling (antialiased, like MATLAB's imresize) unless the set ships its own.
``limit_train`` / ``limit_test`` keep the first N images of a split.

- ``sr-photos``: an offline benchmark of real photographs bundled in installed wheels:
  scikit-image's ``skimage/data`` and scikit-learn's ``sklearn/datasets/images`` (found from
  the installed packages; nothing is downloaded). Test (Set5-style, 5 images): astronaut,
  chelsea, coffee, rocket, camera. Train (14): china, flower (scikit-learn), hubble_deep_field,
  ihc, motorcycle_left, retina, brick, grass, gravel, moon, cell, coins, page, text. Left out:
  motorcycle_right (the stereo twin of motorcycle_left) and the synthetic images (chessboard,
  color, logo, phantom, horse). Greyscale images become RGB with 3 equal channels, RGBA drops
  its alpha. Evaluated by the Y rule. Nothing is cached: the whole set (19 images, decoded
  and downscaled) loads in about 0.3 s (measured: 0.31 s with 2 reader threads on 2 busy cores).
- ``div2k``: ``data_dir`` holds ``DIV2K_train_HR/*.png`` (train) and ``DIV2K_valid_HR/*.png``
  (test) and optionally DIV2K's own LR images ``DIV2K_{train,valid}_LR_bicubic/X{S}/NNNNx{S}.png``
  (used where that folder exists; each must be exactly its mod-cropped HR image / S). Evaluated
  by the RGB rule. Held in memory: all 800 training images take about 7 GB as HR plus
  1.7 GB as LR at x2, so ``limit_train`` is the way to a smaller run.
- ``sr-folder``: ``data_dir`` holds ``train/`` and ``test/`` folders of HR images (Set5 / Set14
  style; any extension of torchvision's IMG_EXTENSIONS). Evaluated by the Y rule.
"""
from __future__ import annotations

import importlib.util
import os
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from PIL import Image
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.transforms.v2 import functional as TF

from ..errors import ConfigError
from .base import register_dense
from .seg_data import check_image_size, parse_options
from .sr_data import SRData, downscale, mod_crop

SCALES = (2, 3, 4)
PATCH, PATCH_SIZES = 48, (8, 512)  # LR patch side: EDSR's default, and the allowed range
PATCHES = 1600  # training patches per epoch
PHOTOS_TEST: Tuple[str, ...] = ("astronaut", "chelsea", "coffee", "rocket", "camera")
PHOTOS_TRAIN: Tuple[str, ...] = ("china", "flower", "hubble_deep_field", "ihc", "motorcycle_left", "retina",
                                 "brick", "grass", "gravel", "moon", "cell", "coins", "page", "text")
SKLEARN_PHOTOS = ("china", "flower")  # in sklearn/datasets/images; the rest are in skimage/data

Pair = Tuple[str, Optional[str]]  # (HR file, its LR file or None: downscale the HR image)


def _options(name: str, spec: Optional[str]) -> Tuple[int, int]:
    """(scale, patches) from the text after 'name:'."""
    try:
        opts = parse_options(name, spec, {"scale": 2, "patches": PATCHES})
    except ConfigError as e:  # parse_options' example names a seed option these sets do not have
        raise ConfigError(str(e).replace(f"{name}:seed=3", f"{name}:scale=4")) from None
    if opts["scale"] not in SCALES:
        raise ConfigError(f"{name}: scale {opts['scale']} is not supported; choose from "
                          f"{', '.join(map(str, SCALES))} (e.g. {name}:scale=4)")
    if opts["patches"] < 1:
        raise ConfigError(f"{name}: patches={opts['patches']} must be >= 1 (training patches per epoch)")
    return opts["scale"], opts["patches"]


def read_rgb(path: str) -> torch.Tensor:
    """An image file as uint8 [3, H, W] (greyscale repeated, alpha dropped); a ConfigError names a bad file."""
    try:
        with Image.open(path) as im:
            return TF.pil_to_tensor(im.convert("RGB"))
    except (OSError, SyntaxError, ValueError) as e:  # PIL: UnidentifiedImageError is an OSError
        raise ConfigError(f"cannot read image {path} ({' '.join(str(e).split())})") from None


def _read_pair(pair: Pair, scale: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """(mod-cropped HR, LR) of one image: the LR file checked against the HR size, or a downscale."""
    hr_path, lr_path = pair
    hr = mod_crop(read_rgb(hr_path), scale)
    if lr_path is None:
        return hr, downscale(hr, scale)
    lr = read_rgb(lr_path)
    (H, W), (h, w) = hr.shape[-2:], lr.shape[-2:]
    if (h * scale, w * scale) != (H, W):
        raise ConfigError(f"{lr_path} is {h}x{w} but its HR image {hr_path} is {H}x{W} (mod-cropped); at "
                          f"scale {scale} the LR image must be exactly {H // scale}x{W // scale}")
    return hr, lr


def read_pairs(pairs: Sequence[Pair], scale: int) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
    """(HR images, LR images) of ``pairs``, in order.

    Threads, not processes: decoding and resizing (PIL) release the GIL, and an error (a
    ConfigError naming the file) reaches the caller as itself.
    """
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        out = list(pool.map(lambda p: _read_pair(p, scale), pairs))
    return [o[0] for o in out], [o[1] for o in out]


def _patch(name: str, image_size: Optional[int], train_lr: Sequence[torch.Tensor]) -> int:
    """The LR patch side: ``image_size`` checked, or the default 48 shrunk to the smallest training
    image (not below the minimum; SRData then names the image that is too small)."""
    if image_size is not None:
        return check_image_size(name, image_size, PATCH, *PATCH_SIZES)
    smallest = min(min(int(s) for s in lr.shape[-2:]) for lr in train_lr)
    return smallest if PATCH_SIZES[0] <= smallest < PATCH else PATCH


def _build(name: str, spec: Optional[str], scale: int, patches: int, image_size: Optional[int],
           train: Sequence[Pair], test: Sequence[Pair], names: Tuple[List[str], List[str]], source: str,
           eval_rule: str, config: Dict[str, Any]) -> SRData:
    if image_size is not None:  # a bad --image-size fails before any image is read
        check_image_size(name, image_size, PATCH, *PATCH_SIZES)
    train_hr, train_lr = read_pairs(train, scale)
    test_hr, test_lr = read_pairs(test, scale)
    patch = _patch(name, image_size, train_lr)
    config = {"dataset": name, **config, "scale": scale, "patch": patch, "patches": patches,
              "eval_rule": eval_rule, "n_train": len(train), "n_test": len(test)}
    return SRData(name if spec is None else f"{name}:{spec}", train_hr, train_lr, test_hr, test_lr,
                  scale=scale, patch=patch, patches=patches, source=source, eval_rule=eval_rule,
                  train_names=names[0], test_names=names[1], config=config)


def _first(items: Sequence[Any], limit: Optional[int]) -> List[Any]:
    return list(items if limit is None else items[:limit])


def _package_dir(module: str) -> str:
    spec = importlib.util.find_spec(module)  # locates the package without importing it (skimage is slow to)
    if spec is None or not spec.origin:
        raise ConfigError("sr-photos needs the sample photos of scikit-image and scikit-learn: pip install "
                          "scikit-image scikit-learn (the project's setup installs both)")
    return os.path.dirname(spec.origin)


def photo_paths() -> Dict[str, str]:
    """sr-photos' image name -> file, from the installed scikit-image and scikit-learn."""
    skimage, sklearn = _package_dir("skimage"), _package_dir("sklearn")
    out = {}
    for name in PHOTOS_TRAIN + PHOTOS_TEST:
        if name in SKLEARN_PHOTOS:
            folder, exts = os.path.join(sklearn, "datasets", "images"), (".jpg",)
        else:
            folder, exts = os.path.join(skimage, "data"), (".png", ".jpg")
        found = [os.path.join(folder, name + e) for e in exts if os.path.isfile(os.path.join(folder, name + e))]
        if not found:
            raise ConfigError(f"sr-photos: the sample image {os.path.join(folder, name + exts[0])} is missing "
                              f"from the installed package; reinstall it (pip install --force-reinstall "
                              "scikit-image scikit-learn)")
        out[name] = found[0]
    return out


def load_sr_photos(spec: Optional[str], data_dir: Optional[str], download: bool, limit_train: Optional[int],
                   limit_test: Optional[int], image_size: Optional[int]) -> SRData:
    """sr-photos as SRData (see the module docstring); ``data_dir`` is not used."""
    scale, patches = _options("sr-photos", spec)
    paths = photo_paths()
    train, test = _first(PHOTOS_TRAIN, limit_train), _first(PHOTOS_TEST, limit_test)
    versions = []
    for dist in ("scikit-image", "scikit-learn"):
        try:
            versions.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:  # a source checkout on the path: no version to name
            versions.append(dist)
    return _build("sr-photos", spec, scale, patches, image_size, [(paths[n], None) for n in train],
                  [(paths[n], None) for n in test], (train, test), f"sample images of {' and '.join(versions)}",
                  "y", {"lr": "bicubic (PIL)", "train": train, "test": test})


def _need_dir(name: str, path: str, what: str) -> None:
    if not os.path.isdir(path):
        raise ConfigError(f"{name}: expected the folder {path} ({what}); point --data-dir at the folder holding it")


def _images_in(name: str, folder: str, exts: Tuple[str, ...] = IMG_EXTENSIONS) -> List[str]:
    files = sorted(f for f in os.listdir(folder) if f.lower().endswith(exts)
                   and os.path.isfile(os.path.join(folder, f)))
    if not files:
        raise ConfigError(f"{name}: {folder} holds no images ({', '.join(exts)})")
    return files


def _need_data_dir(name: str, data_dir: Optional[str], layout: str) -> str:
    if not data_dir:
        raise ConfigError(f"{name} needs --data-dir DIR holding {layout} (nothing is downloaded)")
    return str(data_dir)


def load_div2k(spec: Optional[str], data_dir: Optional[str], download: bool, limit_train: Optional[int],
               limit_test: Optional[int], image_size: Optional[int]) -> SRData:
    """DIV2K (train 0001-0800 / valid 0801-0900) as SRData (see the module docstring)."""
    scale, patches = _options("div2k", spec)
    root = _need_data_dir("div2k", data_dir, "DIV2K_train_HR/ and DIV2K_valid_HR/")
    splits, names, lr_from = [], [], {}
    for split, limit in (("train", limit_train), ("valid", limit_test)):
        hr_dir = os.path.join(root, f"DIV2K_{split}_HR")
        _need_dir("div2k", hr_dir, f"the {split} HR .png images")
        files = _first(_images_in("div2k", hr_dir, (".png",)), limit)
        lr_dir = os.path.join(root, f"DIV2K_{split}_LR_bicubic", f"X{scale}")
        pairs: List[Pair] = []
        for f in files:
            lr = None
            if os.path.isdir(lr_dir):
                lr = os.path.join(lr_dir, f"{os.path.splitext(f)[0]}x{scale}.png")
                if not os.path.isfile(lr):  # checked for all before any image is read
                    raise ConfigError(f"div2k: {lr} is missing, the x{scale} LR image of "
                                      f"{os.path.join(hr_dir, f)} (or remove {lr_dir} to make LR by bicubic)")
            pairs.append((os.path.join(hr_dir, f), lr))
        lr_from[split] = "files" if os.path.isdir(lr_dir) else "bicubic (PIL)"
        splits.append(pairs)
        names.append([os.path.splitext(f)[0] for f in files])
    return _build("div2k", spec, scale, patches, image_size, splits[0], splits[1], (names[0], names[1]), root,
                  "rgb", {"lr": lr_from})


def load_sr_folder(spec: Optional[str], data_dir: Optional[str], download: bool, limit_train: Optional[int],
                   limit_test: Optional[int], image_size: Optional[int]) -> SRData:
    """train/ and test/ folders of HR images as SRData, LR by bicubic (see the module docstring)."""
    scale, patches = _options("sr-folder", spec)
    root = _need_data_dir("sr-folder", data_dir, "train/ and test/ folders of HR images")
    splits, names = [], []
    for split, limit in (("train", limit_train), ("test", limit_test)):
        folder = os.path.join(root, split)
        _need_dir("sr-folder", folder, f"the {split} HR images")
        files = _first(_images_in("sr-folder", folder), limit)
        splits.append([(os.path.join(folder, f), None) for f in files])
        names.append(files)
    return _build("sr-folder", spec, scale, patches, image_size, splits[0], splits[1], (names[0], names[1]), root,
                  "y", {"lr": "bicubic (PIL)"})


register_dense("sr-photos", load_sr_photos, can_download=False, task="super_resolution")
register_dense("div2k", load_div2k, can_download=False, task="super_resolution")
register_dense("sr-folder", load_sr_folder, can_download=False, task="super_resolution")
