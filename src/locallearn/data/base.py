"""In-memory image datasets: the ImageData container, the DATASETS registry, load_dataset."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, List, NamedTuple, Optional, Tuple

import torch

from ..errors import ConfigError
from ..registry import Registry


@dataclass
class ImageData:
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

    @property
    def in_chans(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def image_size(self) -> Tuple[int, int]:
        return int(self.train_x.shape[2]), int(self.train_x.shape[3])

    @property
    def num_train(self) -> int:
        return int(self.train_y.shape[0])

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


def list_datasets() -> List[str]:
    """Names accepted by load_dataset (synthetic also takes a ':CxHxW[:K]' suffix)."""
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


def load_dataset(
    name: str,
    data_dir: Optional[str] = None,
    limit_train: Optional[int] = None,
    limit_test: Optional[int] = None,
    download: bool = False,
    image_size: Optional[int] = None,
) -> "ImageData | FolderData":
    """Load a dataset fully into memory (``imagefolder``: stream it from ``data_dir``);
    ``limit_*`` keep the first N samples; ``image_size`` is imagefolder's crop size."""
    check_limit("limit_train", limit_train)
    check_limit("limit_test", limit_test)
    base, sep, spec = name.partition(":")
    loader = DATASETS.get(base)
    if base == "imagefolder":
        from .folder import FolderData

        if not data_dir:
            raise ConfigError("imagefolder needs --data-dir DIR holding train/<class>/* and "
                              "val/<class>/*")
        return FolderData(data_dir, image_size or 224, limit_train, limit_test)
    if image_size is not None:
        raise ConfigError(f"--image-size {image_size} applies to imagefolder only; {base!r} is "
                          "used at its own resolution")
    raw = loader(spec if sep else None, data_dir, download, limit_train, limit_test)
    train_x, train_y = _first(raw.train_x, limit_train), _first(raw.train_y, limit_train)
    test_x, test_y = _first(raw.test_x, limit_test), _first(raw.test_y, limit_test)
    mean, std = channel_stats(train_x)
    return ImageData(
        name=name, train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y,
        num_classes=raw.num_classes, mean=mean, std=std, source=raw.source,
    )
