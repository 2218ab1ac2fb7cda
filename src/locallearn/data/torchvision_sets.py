"""CIFAR-10, SVHN and STL-10 through torchvision, converted to in-memory uint8 [N, C, H, W]."""
from __future__ import annotations

from typing import Any, Callable, Optional, Tuple

import numpy as np
import torch

from ..errors import ConfigError
from .base import DATASETS, RawData, cache_dir, reject_spec

# (root, train, download) -> a torchvision dataset with .data and labels
Factory = Callable[[str, bool, bool], Any]
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


def load_torchvision(name: str, factory: Factory, nhwc: bool, data_dir: Optional[str], download: bool) -> RawData:
    """Open train and test splits: present files first, then a download as the rules allow."""
    root = data_dir if data_dir is not None else cache_dir()
    try:
        train, test = _open_both(factory, root, download)
    except _LOAD_ERRORS as e:
        if data_dir is not None and not download:
            raise ConfigError(
                f"{name} not found in data dir {data_dir} (torchvision: {e}); pass --download to fetch it there, "
                f"or point --data-dir at a folder holding {name}"
            ) from None
        if download:  # a download was already attempted above
            raise ConfigError(f"{name}: download into {root} failed ({e}); check the network, "
                              f"or point --data-dir at a folder holding {name}") from None
        try:
            train, test = _open_both(factory, root, True)
        except _LOAD_ERRORS as e2:
            raise ConfigError(
                f"{name} not found in {root} and the download failed ({e2}); "
                f"download it elsewhere and pass --data-dir DIR pointing at the folder holding it"
            ) from None
    train_x, train_y = _to_tensors(train, nhwc)
    test_x, test_y = _to_tensors(test, nhwc)
    return RawData(train_x, train_y, test_x, test_y, 10, root)


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
