"""CIFAR-10, SVHN and STL-10 through torchvision, converted to in-memory uint8 [N, C, H, W]."""
from __future__ import annotations

from typing import Any, Callable, Optional, Tuple

import numpy as np
import torch

from ..errors import ConfigError
from .base import DATASETS, RawData, cache_dir, check_labels, reject_spec

# (root, train, download) -> a torchvision dataset with .data and labels
Factory = Callable[[str, bool, bool], Any]
NUM_CLASSES = 10  # CIFAR-10, SVHN, STL-10
_LOAD_ERRORS = (RuntimeError, OSError)  # torchvision: RuntimeError for missing/corrupt; URLError is an OSError


def _cifar10(root: str, train: bool, download: bool) -> Any:
    from torchvision.datasets import CIFAR10

    return CIFAR10(root, train=train, download=download)


def _svhn(root: str, train: bool, download: bool) -> Any:
    from torchvision.datasets import SVHN

    return SVHN(root, split="train" if train else "test", download=download)


def _stl10(root: str, train: bool, download: bool) -> Any:
    from torchvision.datasets import STL10

    return STL10(root, split="train" if train else "test", download=download)


def _to_tensors(ds: Any, nhwc: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    x = torch.from_numpy(np.ascontiguousarray(ds.data, dtype=np.uint8))
    if nhwc:
        x = x.permute(0, 3, 1, 2)
    labels = ds.targets if hasattr(ds, "targets") else ds.labels
    return x.contiguous(), torch.as_tensor(np.asarray(labels), dtype=torch.int64)


def _open_both(factory: Factory, root: str, download: bool) -> Tuple[Any, Any]:
    try:
        return factory(root, True, download), factory(root, False, download)
    except ImportError as e:  # SVHN reads .mat files with scipy, an optional torchvision dependency
        raise ConfigError(f"this dataset needs an extra package: {e}; install it (e.g. `pip install scipy`)") from None


def _one_line(e: BaseException) -> str:
    # torchvision's advice is for Python callers; the flag is --download here
    text = str(e).replace(" You can use download=True to download it", "")
    return " ".join(text.split())


def load_torchvision(name: str, factory: Factory, nhwc: bool, data_dir: Optional[str], download: bool) -> RawData:
    """Open train and test splits from ``data_dir`` (default: the cache dir); download only
    when ``download`` is True, else a missing dataset is a ConfigError saying where we looked."""
    root = data_dir if data_dir is not None else cache_dir()
    try:
        train, test = _open_both(factory, root, download)
    except _LOAD_ERRORS as e:
        if download:
            raise ConfigError(f"{name}: download into {root} failed ({_one_line(e)}); check the network, "
                              f"or point --data-dir at a folder holding {name}") from None
        where = f"data dir {data_dir}" if data_dir is not None else f"{root} (the default; set --data-dir)"
        raise ConfigError(
            f"{name} not found in {where} (torchvision: {_one_line(e)}); pass --download to fetch it "
            f"there, or point --data-dir at a folder holding {name}"
        ) from None
    train_x, train_y = _to_tensors(train, nhwc)
    test_x, test_y = _to_tensors(test, nhwc)
    for y, split in ((train_y, "training"), (test_y, "test")):
        check_labels(y, NUM_CLASSES, f"{name} {split} split in {root}")
    return RawData(train_x, train_y, test_x, test_y, NUM_CLASSES, root)


def _register(name: str, factory: Factory, nhwc: bool) -> None:
    def loader(spec: Optional[str], data_dir: Optional[str], download: bool,
               limit_train: Optional[int], limit_test: Optional[int]) -> RawData:
        reject_spec(name, spec)
        return load_torchvision(name, factory, nhwc, data_dir, download)

    loader.__name__ = f"load_{name}"
    DATASETS.add(name, loader)


_register("cifar10", _cifar10, nhwc=True)  # CIFAR .data is NHWC
_register("svhn", _svhn, nhwc=False)  # SVHN and STL-10 .data are already NCHW
_register("stl10", _stl10, nhwc=False)
