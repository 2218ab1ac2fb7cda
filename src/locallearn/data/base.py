"""In-memory image datasets: the ImageData container, the DATASETS registry, load_dataset."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Dict, List, NamedTuple, Optional, Tuple

import torch

from ..errors import ConfigError
from ..registry import Registry

if TYPE_CHECKING:
    from .dense import DenseData
    from .folder import FolderData


class HeldImages:
    """Sizes of a dataset held in memory as ``train_x`` uint8 [N, C, H, W]."""

    train_x: torch.Tensor

    @property
    def in_chans(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def image_size(self) -> Tuple[int, int]:
        return int(self.train_x.shape[2]), int(self.train_x.shape[3])

    @property
    def num_train(self) -> int:
        return int(self.train_x.shape[0])


@dataclass
class ImageData(HeldImages):
    """A whole dataset held as uint8 images [N, C, H, W] and int64 labels [N]."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    mean: Tuple[float, ...]  # per channel, of train_x / 255
    std: Tuple[float, ...]
    source: str  # where it was read from, for the run's config and logs

    task = "classification"  # not a field: the trainer checks it against the model's task


    def train_batches(self, batch_size: int, generator: torch.Generator, device: torch.device,
                      channels_last: bool = False, shard: Tuple[int, int] = (0, 1),
                      augment: bool = True) -> "Batches":
        """Shuffled, augmented training batches drawn from ``generator`` (drop_last)."""
        from .loader import Batches

        return Batches(self.train_x, self.train_y, batch_size, self.mean, self.std, shuffle=True,
                       augment=augment, generator=generator, device=device,
                       channels_last=channels_last, drop_last=True, shard=shard)

    def test_batches(self, batch_size: int, device: torch.device,
                     channels_last: bool = False) -> "Batches":
        from .loader import Batches

        return Batches(self.test_x, self.test_y, batch_size, self.mean, self.std, device=device,
                       channels_last=channels_last)


class RawData(NamedTuple):
    """What a dataset loader returns; load_dataset limits it and adds mean/std."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    source: str


# A loader gets (spec, data_dir, download, limit_train, limit_test); spec is the text after
# "name:" (None when absent). Limits are passed so synthetic data can size itself by them.
Loader = Callable[[Optional[str], Optional[str], bool, Optional[int], Optional[int]], RawData]

DATASETS: Registry[Loader] = Registry("dataset")


def _folder_placeholder(*_: object) -> RawData:
    raise ConfigError("imagefolder is streamed: use load_dataset('imagefolder', data_dir)")


DATASETS.add("imagefolder", _folder_placeholder)


class DenseLoader(NamedTuple):
    """A segmentation set: ``load(spec, data_dir, download, limit_train, limit_test, image_size)``
    returns a DenseData (data/seg_data.py); ``can_download`` says whether a missing data_dir may be
    created by ``download``."""

    load: Callable[..., "DenseData"]
    can_download: bool
    task: str = "segmentation"


DENSE_LOADERS: Dict[str, DenseLoader] = {}


def register_dense(name: str, load: Callable[..., "DenseData"], can_download: bool,
                   task: str = "segmentation") -> None:
    """Register a dense (segmentation or detection) set; its DATASETS entry only reserves and
    lists the name."""

    def placeholder(*_: object) -> RawData:
        raise ConfigError(f"{name} is a {task} set: use load_dataset({name!r}, ...)")

    DATASETS.add(name, placeholder)  # raises on a duplicate name
    DENSE_LOADERS[name] = DenseLoader(load, can_download, task)


def dataset_task(name: str) -> str:
    """The task a dataset name serves (without loading it); unknown names raise."""
    base = name.partition(":")[0] if isinstance(name, str) else name
    DATASETS.get(base)  # type: ignore[arg-type]
    return DENSE_LOADERS[base].task if base in DENSE_LOADERS else "classification"


def list_datasets() -> List[str]:
    """Names accepted by load_dataset (synthetic also takes a ':CxHxW[:K]' suffix, fmnist-scenes
    a ':seed=N' one)."""
    return DATASETS.names()


def cache_dir() -> str:
    """Default download root: $XDG_CACHE_HOME/locallearn or ~/.cache/locallearn."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "locallearn")


def reject_spec(name: str, spec: Optional[str]) -> None:
    """Raise for 'name:suffix' on a dataset that takes no suffix."""
    if spec is not None:
        raise ConfigError(f"dataset {name!r} takes no ':' suffix (got {name}:{spec}); use plain {name!r}")


def check_limit(what: str, n: Optional[int]) -> None:
    if n is None:
        return
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"{what} must be an integer >= 1 (got {n!r}); leave it unset to use all samples")


def _first(t: torch.Tensor, n: Optional[int]) -> torch.Tensor:
    # clone so that the full-size storage can be freed
    return t[:n].clone() if n is not None and n < len(t) else t


def channel_stats(x: torch.Tensor) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    """Exact per-channel mean and (population) std of uint8 x / 255, via 256-bin histograms.

    Histograms avoid a float copy of the whole dataset and give the same numbers on every machine.
    """
    if x.dtype != torch.uint8 or x.dim() != 4 or len(x) == 0:
        raise ValueError(f"expected non-empty uint8 [N, C, H, W], got {x.dtype} {tuple(x.shape)}")
    levels = torch.arange(256, dtype=torch.float64) / 255.0
    means, stds = [], []
    for c in range(x.shape[1]):
        counts = torch.bincount(x[:, c].reshape(-1), minlength=256).to(torch.float64)
        p = counts / counts.sum()
        m = float((p * levels).sum())
        var = float((p * (levels - m) ** 2).sum())
        means.append(m)
        stds.append(max(var, 0.0) ** 0.5)
    return tuple(means), tuple(stds)


def check_data_dir(data_dir: Optional[str], download: bool, can_download: bool = True) -> None:
    """Refuse a --data-dir that is a file, or (without a download to create it) missing."""
    if data_dir is None:
        return
    if not isinstance(data_dir, (str, os.PathLike)):
        raise ConfigError(f"data_dir must be a path (got {data_dir!r})")
    if os.path.exists(data_dir) and not os.path.isdir(data_dir):
        raise ConfigError(f"--data-dir {data_dir} is a file; it must be a folder holding the dataset")
    if not os.path.exists(data_dir) and not (download and can_download):
        hint = " (or pass --download to fetch it there)" if can_download else ""
        raise ConfigError(f"--data-dir {data_dir} does not exist; point it at the folder holding "
                          f"the dataset{hint}")


def check_labels(y: torch.Tensor, num_classes: int, where: str) -> None:
    """Refuse labels outside [0, num_classes): they would silently widen the model."""
    if len(y) == 0:
        return
    bad = (y < 0) | (y >= num_classes)
    if bool(bad.any()):
        i = int(bad.nonzero()[0])
        raise ConfigError(f"{where} has label {int(y[i])} (sample {i}, {int(bad.sum())} such "
                          f"labels); the dataset has {num_classes} classes, 0..{num_classes - 1}")


def check_classes(y: torch.Tensor, where: str) -> None:
    """Refuse training labels that are all one class: nothing to classify."""
    if len(y) > 1 and bool((y == y[0]).all()):
        raise ConfigError(f"{where}: every training label is {int(y[0])}; classification "
                          "needs at least 2 classes")


def load_dataset(
    name: str,
    data_dir: Optional[str] = None,
    limit_train: Optional[int] = None,
    limit_test: Optional[int] = None,
    download: bool = False,
    image_size: Optional[int] = None,
    seed: int = 0,
) -> "ImageData | FolderData | DenseData":
    """Load a dataset fully into memory (``imagefolder``: stream it from ``data_dir``).

    ``limit_*`` keep the first N samples (``imagefolder``: a stratified subset, the
    training one drawn from ``seed``); ``image_size`` is imagefolder's crop size. Nothing
    is downloaded unless ``download`` is True: a missing dataset raises ConfigError.
    Segmentation sets (fmnist-scenes, voc-seg, cityscapes: data/seg_data.py) return a
    DenseData at ``image_size``; they never depend on ``seed``, so seeds compare on one set.
    """
    if not isinstance(name, str):
        raise ConfigError(f"dataset name must be a string (got {name!r}); choose from: "
                          f"{', '.join(list_datasets())}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"seed must be an integer (got {seed!r})")
    check_limit("limit_train", limit_train)
    check_limit("limit_test", limit_test)
    base, sep, spec = name.partition(":")
    loader = DATASETS.get(base)
    if base in DENSE_LOADERS:
        entry = DENSE_LOADERS[base]
        check_data_dir(data_dir, download, can_download=entry.can_download)
        return entry.load(spec if sep else None, data_dir, download, limit_train, limit_test, image_size)
    if base != "synthetic":  # generated data ignores data_dir (the CLI warns about it)
        check_data_dir(data_dir, download, can_download=base != "imagefolder")
    if base == "imagefolder":
        from .folder import FolderData

        if not data_dir:
            raise ConfigError("imagefolder needs --data-dir DIR holding train/<class>/* and "
                              "val/<class>/*")
        return FolderData(data_dir, 224 if image_size is None else image_size, limit_train,
                          limit_test, seed=seed)
    if image_size is not None:
        raise ConfigError(f"--image-size {image_size} applies to imagefolder only and to "
                          f"{', '.join(sorted(DENSE_LOADERS))}; {base!r} is used at its own resolution")
    raw = loader(spec if sep else None, data_dir, download, limit_train, limit_test)
    for split, x, y in (("training", raw.train_x, raw.train_y), ("test", raw.test_x, raw.test_y)):
        if x.dim() != 4 or len(x) == 0 or min(x.shape[1:]) < 1:
            raise ConfigError(f"{name} in {raw.source}: the {split} images have shape "
                              f"{tuple(x.shape)}; expected a non-empty [N, C, H, W]")
        if len(y) != len(x):
            raise ConfigError(f"{name} in {raw.source}: {len(x)} {split} images but {len(y)} labels")
    if raw.train_x.shape[1:] != raw.test_x.shape[1:]:
        raise ConfigError(f"{name} in {raw.source}: training images are {tuple(raw.train_x.shape[1:])} "
                          f"but test images {tuple(raw.test_x.shape[1:])}; they must match")
    if raw.num_classes < 2:
        raise ConfigError(f"{name}: {raw.num_classes} class; classification needs at least 2")
    check_labels(raw.train_y, raw.num_classes, f"{name} in {raw.source}")
    check_labels(raw.test_y, raw.num_classes, f"{name} in {raw.source}")
    check_classes(raw.train_y, f"{name} in {raw.source}")
    train_x, train_y = _first(raw.train_x, limit_train), _first(raw.train_y, limit_train)
    test_x, test_y = _first(raw.test_x, limit_test), _first(raw.test_y, limit_test)
    mean, std = channel_stats(train_x)
    return ImageData(
        name=name, train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y,
        num_classes=raw.num_classes, mean=mean, std=std, source=raw.source,
    )
