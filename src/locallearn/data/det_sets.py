"""Detection datasets for ``load_dataset``: fmnist-scenes-det, voc-det, coco, as DetData.

- ``fmnist-scenes-det[:seed=N]``: the very scenes of ``fmnist-scenes`` (same sizes, limits,
  data seed; data/seg_data.py) with their tight boxes; labels are the Fashion-MNIST classes 0..9.
- ``voc-det``: Pascal VOC detection, train = ``ImageSets/Main/train.txt``, test = ``val.txt``,
  the 20 object classes. ``data_dir`` as for voc-seg (the folder holding ``VOCdevkit``, or
  ``VOCdevkit`` or ``VOCdevkit/VOC20xx``). VOC boxes are 1-based inclusive pixels: a box
  ``xmin..xmax`` becomes ``[xmin - 1, xmax]`` in edge coordinates. Every object is kept,
  ``difficult`` ones included.
- ``coco``: ``data_dir`` in the standard COCO 2017 layout (``annotations/instances_train2017.json``,
  ``annotations/instances_val2017.json``, ``train2017/``, ``val2017/``). Category ids become
  0..C-1 in sorted id order; ``iscrowd`` annotations are dropped, and so are boxes with zero
  width or height (as torchvision's detection reference does).

VOC and COCO are read once into memory by letterboxing to ``image_size`` square (default 256):
the image is resized (aspect kept) to fit and padded right / bottom with 0; each box axis is
scaled by the resized / original size of that axis, so padding never moves a box. Images are
decoded in threads (PIL and torch release the GIL); an error names the file. Nothing is downloaded.
"""
from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as TF

from ..errors import ConfigError
from ..tasks.det_metrics import check_boxes
from .base import register_dense, reject_spec
from .det_data import DetData, Target
from .seg_data import SCENES_N, SCENES_SCALE, SCENES_SIZE, SCENES_SIZES, VOC_SIZE, check_image_size, \
    parse_options, voc_root
from .seg_sets import VOC_CLASSES, _need_dir, _need_files, voc_base_dir

VOC_DET_CLASSES: Tuple[str, ...] = VOC_CLASSES[1:]  # the 20 object classes, standard order
COCO_SIZE = VOC_SIZE


def _empty_target() -> Target:
    return {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}


class DetFolder(Dataset):
    """Images on disk with box targets: ``ds[i]`` = (uint8 [3, h, w], checked target at that size)."""

    def __init__(self, images: Sequence[str], class_names: Sequence[str]) -> None:
        self.images = list(images)
        self.class_names = tuple(class_names)
        self.num_classes = len(self.class_names)

    def __len__(self) -> int:
        return len(self.images)

    def target(self, i: int, size: Tuple[int, int]) -> Tuple[Target, str]:
        """Target of image ``i`` (of ``size`` (h, w)) and the file to name in its errors."""
        raise NotImplementedError

    def __getitem__(self, i: int) -> Tuple[torch.Tensor, Target]:
        path = self.images[i]
        try:
            with Image.open(path) as im:
                image = TF.pil_to_tensor(im.convert("RGB"))  # greyscale / CMYK photos too
        except (OSError, SyntaxError, ValueError) as e:  # PIL: UnidentifiedImageError is an OSError
            raise ConfigError(f"cannot read image {path} ({' '.join(str(e).split())})") from None
        size = (int(image.shape[1]), int(image.shape[2]))
        target, where = self.target(i, size)
        return image, check_boxes(target, size, self.num_classes, where)


class VOCBoxes(DetFolder):
    """VOC detection: images and their XML annotations (parsed when the sample is read)."""

    def __init__(self, images: Sequence[str], annotations: Sequence[str]) -> None:
        super().__init__(images, VOC_DET_CLASSES)
        self.annotations = list(annotations)
        self.index = {name: c for c, name in enumerate(VOC_DET_CLASSES)}

    def target(self, i: int, size: Tuple[int, int]) -> Tuple[Target, str]:
        path = self.annotations[i]
        try:
            root = ET.parse(path).getroot()
        except (ET.ParseError, OSError) as e:
            raise ConfigError(f"cannot parse VOC annotation {path} ({e})") from None
        boxes, labels = [], []
        for j, obj in enumerate(root.findall("object")):  # direct children: <part>s are not objects
            name = (obj.findtext("name") or "").strip()
            if name not in self.index:
                raise ConfigError(f"VOC annotation {path}: object {j} has class {name!r}, not one of the "
                                  f"20 VOC classes ({', '.join(VOC_DET_CLASSES)})")
            bb = obj.find("bndbox")
            try:
                x1, y1, x2, y2 = (float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))  # type: ignore
            except (AttributeError, TypeError, ValueError):
                raise ConfigError(f"VOC annotation {path}: object {j} ({name}) has no numeric bndbox "
                                  "xmin, ymin, xmax, ymax") from None
            boxes.append([x1 - 1, y1 - 1, x2, y2])  # 1-based inclusive pixels -> pixel edges
            labels.append(self.index[name])
        if not boxes:
            return _empty_target(), f"VOC annotation {path}"
        return {"boxes": torch.tensor(boxes), "labels": torch.tensor(labels)}, f"VOC annotation {path}"


def voc_detection(root: str, year: str = "2012", image_set: str = "train") -> VOCBoxes:
    """Pascal VOC detection from ``root`` (the folder holding ``VOCdevkit``); all files checked up front."""
    from torchvision.datasets import VOCDetection
    base_dir = voc_base_dir(root, year, image_set, "Annotations", "Main")
    base = VOCDetection(str(root), year=str(year), image_set=image_set)  # only its file lists are used
    _need_files(base.images, "VOC image")
    _need_files(base.annotations, "VOC annotation")
    return VOCBoxes(base.images, base.annotations)


class CocoBoxes(DetFolder):
    """COCO detection: the boxes are taken from the json when the set is built."""

    def __init__(self, images: Sequence[str], class_names: Sequence[str], targets: List[Target],
                 sizes: List[Optional[Tuple[int, int]]], ann_file: str) -> None:
        super().__init__(images, class_names)
        self.targets, self.sizes, self.ann_file = targets, sizes, ann_file

    def target(self, i: int, size: Tuple[int, int]) -> Tuple[Target, str]:
        where = f"COCO annotations {self.ann_file}, image {self.images[i]}"
        listed = self.sizes[i]
        if listed is not None and listed != size:  # the boxes would be for another image
            raise ConfigError(f"{where}: the json gives {listed[1]}x{listed[0]} (WxH) but the file is "
                              f"{size[1]}x{size[0]}")
        return self.targets[i], where


def _read_json(ann_file: str) -> dict:
    try:
        with open(ann_file, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ConfigError(f"cannot read COCO annotations {ann_file} ({' '.join(str(e).split())})") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k, []), list) for k in ("images", "categories",
                                                                                          "annotations")) \
            or "images" not in data or "categories" not in data:
        raise ConfigError(f"COCO annotations {ann_file}: expected a json object with 'images', 'categories' "
                          "and 'annotations' lists")
    return data


def coco_split(image_root: str, ann_file: str) -> CocoBoxes:
    """A COCO-format json (``ann_file``) with its images under ``image_root`` (``file_name``s are
    relative to it), in image-id order. Everything but the pixels is checked here, up front."""
    data = _read_json(ann_file)
    part = "images"
    try:
        files: Dict[int, str] = {}
        sizes: Dict[int, Optional[Tuple[int, int]]] = {}
        for im in data["images"]:
            iid = int(im["id"])
            if iid in files:
                raise ConfigError(f"COCO annotations {ann_file}: image id {iid} is listed twice")
            files[iid] = str(im["file_name"])
            sizes[iid] = (int(im["height"]), int(im["width"])) if "height" in im and "width" in im else None
        part = "categories"
        cats = sorted((int(c["id"]), str(c["name"])) for c in data["categories"])
        index = {cid: k for k, (cid, _) in enumerate(cats)}
        part = "annotations"
        boxes: Dict[int, List[List[float]]] = {i: [] for i in files}
        labels: Dict[int, List[int]] = {i: [] for i in files}
        for j, a in enumerate(data.get("annotations", [])):
            iid, cid = int(a["image_id"]), int(a["category_id"])
            if iid not in files:
                raise ConfigError(f"COCO annotations {ann_file}: annotation {j} (id {a.get('id')}) has image_id "
                                  f"{iid}, which no image has")
            if cid not in index:
                raise ConfigError(f"COCO annotations {ann_file}: annotation {j} (id {a.get('id')}) has "
                                  f"category_id {cid}, which no category has")
            x, y, w, h = (float(v) for v in a["bbox"])
            if a.get("iscrowd", 0) or w <= 0 or h <= 0:  # crowds are not single objects
                continue
            boxes[iid].append([x, y, x + w, y + h])
            labels[iid].append(index[cid])
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"COCO annotations {ann_file}: a malformed {part} entry "
                          f"({type(e).__name__}: {e})") from None
    if not cats:
        raise ConfigError(f"COCO annotations {ann_file} lists no categories")
    ids = sorted(files)  # torchvision's CocoDetection order
    paths = [os.path.join(str(image_root), files[i]) for i in ids]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise ConfigError(f"COCO annotations {ann_file}: {len(missing)} of {len(paths)} listed images are "
                          f"missing under {image_root}; the first: {missing[0]}")
    targets = [{"boxes": torch.tensor(boxes[i]).reshape(-1, 4), "labels": torch.tensor(labels[i], dtype=torch.int64)}
               for i in ids]
    return CocoBoxes(paths, [name for _, name in cats], targets, [sizes[i] for i in ids], ann_file)


def letterbox_boxes(image: torch.Tensor, target: Target, size: Tuple[int, int]) -> Tuple[torch.Tensor, Target]:
    """Fit uint8 ``image`` [C, h, w] inside ``size`` (H, W) keeping the aspect, pad right / bottom
    with 0, and scale ``target``'s boxes with it (seg_data.letterbox's geometry)."""
    H, W = size
    h, w = image.shape[-2:]
    s = min(H / h, W / w)
    nh, nw = min(H, max(1, round(h * s))), min(W, max(1, round(w * s)))
    if (nh, nw) != (h, w):
        image = TF.resize(image, [nh, nw], antialias=True)
    if (nh, nw) != (H, W):
        image = TF.pad(image, [0, 0, W - nw, H - nh], fill=0)
    scale = torch.tensor([nw / w, nh / h, nw / w, nh / h], dtype=torch.float32)
    return image.to(torch.uint8), {"boxes": target["boxes"].float() * scale, "labels": target["labels"]}


def read_det_split(ds: DetFolder, limit: Optional[int], size: Tuple[int, int]) -> Tuple[torch.Tensor, List[Target]]:
    """The first ``limit`` samples (all when None) of ``ds`` letterboxed to ``size``; threads, so an
    error reaches the caller as itself (a ConfigError naming the file)."""
    n = len(ds) if limit is None else min(limit, len(ds))
    if n == 0:
        raise ConfigError(f"no images in this split ({type(ds).__name__})")

    def one(i: int) -> Tuple[torch.Tensor, Target]:
        return letterbox_boxes(*ds[i], size)

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        pairs = list(pool.map(one, range(n)))
    return torch.stack([p[0] for p in pairs]), [p[1] for p in pairs]


def _folder_det(name: str, train_ds: DetFolder, test_ds: DetFolder, root: str, limits: Tuple[Optional[int], ...],
                size: int, config: dict) -> DetData:
    train_x, train_y = read_det_split(train_ds, limits[0], (size, size))
    test_x, test_y = read_det_split(test_ds, limits[1], (size, size))
    config = {**config, "image_size": [size, size], "fit": "letterbox"}
    return DetData(name, train_x, train_y, test_x, test_y, num_classes=train_ds.num_classes, source=root,
                   class_names=train_ds.class_names, config=config)


def load_fmnist_scenes_det(spec: Optional[str], data_dir: Optional[str], download: bool, limit_train: Optional[int],
                           limit_test: Optional[int], image_size: Optional[int]) -> DetData:
    """fmnist-scenes-det: fmnist-scenes' scenes and their boxes (see the module docstring)."""
    from .scenes import FMNIST_CLASSES, fmnist_scenes

    opts = parse_options("fmnist-scenes-det", spec, {"seed": 0})
    size = check_image_size("fmnist-scenes-det", image_size, SCENES_SIZE, *SCENES_SIZES)
    k = size / SCENES_SIZE  # items scale with the canvas, exactly as fmnist-scenes
    n_train = SCENES_N[0] if limit_train is None else limit_train
    n_test = SCENES_N[1] if limit_test is None else limit_test
    train, test = fmnist_scenes(data_dir, n_train, n_test, size=size, seed=opts["seed"], download=download,
                                scale=(SCENES_SCALE[0] * k, SCENES_SCALE[1] * k))
    name = "fmnist-scenes-det" if spec is None else f"fmnist-scenes-det:{spec}"
    config = {"dataset": "fmnist-scenes-det", "data_seed": opts["seed"], "image_size": size,
              "n_train": n_train, "n_test": n_test, "scenes": {k_: v for k_, v in train.config.items()
                                                               if k_ not in ("n", "split", "seed")}}

    def targets(sc: object) -> List[Target]:
        return [{"boxes": b, "labels": lab} for b, lab in zip(sc.boxes, sc.labels)]  # type: ignore[attr-defined]

    return DetData(name, train.images, targets(train), test.images, targets(test), num_classes=train.num_classes,
                   source=f"{train.config['source']} (scenes seed {opts['seed']}, {size}x{size})",
                   class_names=FMNIST_CLASSES, config=config)


def load_voc_det(spec: Optional[str], data_dir: Optional[str], download: bool, limit_train: Optional[int],
                 limit_test: Optional[int], image_size: Optional[int]) -> DetData:
    """Pascal VOC detection (train / val lists) letterboxed to image_size x image_size."""
    reject_spec("voc-det", spec)
    size = check_image_size("voc-det", image_size, VOC_SIZE)
    root, year = voc_root(data_dir, "voc-det")
    train_ds, test_ds = voc_detection(root, year, "train"), voc_detection(root, year, "val")  # checked first
    return _folder_det("voc-det", train_ds, test_ds, root, (limit_train, limit_test), size,
                       {"dataset": "voc-det", "year": year, "splits": ["train", "val"]})


def load_coco(spec: Optional[str], data_dir: Optional[str], download: bool, limit_train: Optional[int],
              limit_test: Optional[int], image_size: Optional[int]) -> DetData:
    """COCO 2017 detection (train2017 / val2017) letterboxed to image_size x image_size."""
    reject_spec("coco", spec)
    size = check_image_size("coco", image_size, COCO_SIZE)
    if not data_dir:
        raise ConfigError("coco needs --data-dir DIR: the folder holding annotations/instances_train2017.json, "
                          "annotations/instances_val2017.json, train2017/ and val2017/ (nothing is downloaded)")
    splits = []
    for split in ("train2017", "val2017"):
        ann = os.path.join(str(data_dir), "annotations", f"instances_{split}.json")
        if not os.path.isfile(ann):
            raise ConfigError(f"coco: annotation file not found: {ann}")
        _need_dir(os.path.join(str(data_dir), split), "COCO image folder")
        splits.append(coco_split(os.path.join(str(data_dir), split), ann))
    if splits[0].class_names != splits[1].class_names:
        raise ConfigError(f"coco in {data_dir}: instances_train2017.json and instances_val2017.json list "
                          "different categories")
    return _folder_det("coco", splits[0], splits[1], str(data_dir), (limit_train, limit_test), size,
                       {"dataset": "coco", "splits": ["train2017", "val2017"]})


register_dense("fmnist-scenes-det", load_fmnist_scenes_det, can_download=True, task="detection")
register_dense("voc-det", load_voc_det, can_download=False, task="detection")
register_dense("coco", load_coco, can_download=False, task="detection")
