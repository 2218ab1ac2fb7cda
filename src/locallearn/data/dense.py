"""In-memory segmentation data: the DenseData container and its resumable, paired-augmenting batches.

Images are uint8 [N, C, H, W] and masks uint8 [N, H, W] of class ids ``0..num_classes-1``
with 255 = ignore. Training augmentation is the torchvision segmentation reference recipe
(``references/segmentation``), built from ``torchvision.transforms.v2`` so that the mask moves
with the image:

- random rescale: the shorter side to ``U{S/2 .. 2S}`` (``S`` the stored shorter side;
  image bilinear with antialiasing, mask nearest: v2 does that for a ``tv_tensors.Mask``),
- random crop back to the stored ``H x W``, padding where the rescaled image is smaller:
  image with 0, mask with 255 (ignore), so padding never counts in the loss or the metric,
- random horizontal flip (p = 0.5).

Every random draw of sample ``i`` in an epoch comes from the CPU RNG seeded with
``sample_seed(epoch_seed, i)`` (``epoch_seed`` drawn from the caller's generator), so an
augmented sample depends only on (epoch, sample): not on batch composition, sharding or a
mid-epoch resume. The transforms run in ``workers`` DataLoader processes (each with its own
global RNG); the batches are the same for any number of workers.
"""
from __future__ import annotations

from dataclasses import dataclass, field
import os
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

import torch
from torch.utils.data import Dataset, default_collate
from torchvision import tv_tensors
from torchvision.transforms import v2

from ..errors import ConfigError
from .base import HeldImages
from .folder import epoch_loader, sample_seed
from .loader import EpochBatches, norm_stats

IGNORE_INDEX = 255
SCALE_RANGE = (0.5, 2.0)  # random rescale of the shorter side, as torchvision's reference / DeepLab


def train_transform(size: Tuple[int, int], scale: Tuple[float, float] = SCALE_RANGE) -> Callable[..., Any]:
    """The paired training augmentation (see the module docstring) for stored images of ``size``."""
    short = min(size)
    lo, hi = max(1, int(round(short * scale[0]))), max(1, int(round(short * scale[1])))
    return v2.Compose([
        v2.RandomResize(lo, hi + 1),  # randint's upper end is exclusive: hi is included
        v2.RandomCrop(size, pad_if_needed=True, fill={tv_tensors.Image: 0, tv_tensors.Mask: IGNORE_INDEX}),
        v2.RandomHorizontalFlip(),
    ])


def default_workers() -> int:
    """Augmentation worker processes: half the cores, at most 4 (per-sample v2 transforms cost
    about 0.7 ms at 64 px and 3 ms at 256 px RGB on one thread: seconds per epoch, too slow for
    the training process to do between GPU steps)."""
    return min(4, (os.cpu_count() or 1) // 2)


def check_masks(masks: torch.Tensor, num_classes: int, where: str) -> None:
    """Refuse mask ids outside ``0..num_classes-1`` other than 255: one line naming the first bad ones."""
    if masks.numel() == 0:
        return
    if masks.dtype == torch.uint8:  # a histogram: one pass, no int64 copy of the whole set
        counts = torch.bincount(masks.reshape(-1), minlength=256)
        counts[IGNORE_INDEX] = 0
        bad_values = counts[num_classes:].nonzero().squeeze(1) + num_classes
    else:
        bad = ((masks < 0) | (masks >= num_classes)) & (masks != IGNORE_INDEX)
        bad_values = masks[bad].unique()
    if len(bad_values):
        values = [int(v) for v in bad_values[:8]]
        raise ConfigError(f"{where} has mask ids {values} outside the {num_classes} classes "
                          f"(ids 0..{num_classes - 1}, {IGNORE_INDEX} = ignore)")


def _check_pair(x: torch.Tensor, y: torch.Tensor, where: str) -> torch.Tensor:
    """Shape and dtype checks of one split; returns the masks as uint8."""
    if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8 or x.dim() != 4 or len(x) == 0:
        got = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ConfigError(f"{where}: images must be a non-empty uint8 tensor [N, C, H, W] (got {got})")
    if not isinstance(y, torch.Tensor) or y.dim() != 3 or y.dtype.is_floating_point or y.dtype == torch.bool:
        got = f"{y.dtype} {tuple(y.shape)}" if isinstance(y, torch.Tensor) else type(y).__name__
        raise ConfigError(f"{where}: masks must be an integer tensor [N, H, W] (got {got})")
    if len(y) != len(x) or y.shape[1:] != x.shape[2:]:
        raise ConfigError(f"{where}: images {tuple(x.shape)} and masks {tuple(y.shape)} differ; each mask must "
                          "have its image's height and width")
    return y


@dataclass
class HeldDense(HeldImages):
    """Fields and batch makers shared by the dense-task datasets held in memory
    (segmentation ``DenseData``, detection ``DetData``); a subclass checks its targets in
    ``__post_init__``, then calls ``_complete``, and names its batches and augmentation."""

    name: str
    train_x: torch.Tensor
    train_y: Any  # the targets: masks [N, H, W], or one box dict per image
    test_x: torch.Tensor
    test_y: Any
    num_classes: int
    source: str
    class_names: Tuple[str, ...] = ()
    mean: Tuple[float, ...] = ()
    std: Tuple[float, ...] = ()
    config: Dict[str, Any] = field(default_factory=dict)  # how the data was built, for run configs
    workers: int = field(default_factory=default_workers)  # augmenting processes; 0 = in this one

    def _check_images_match(self, where: str) -> None:
        if self.train_x.shape[1:] != self.test_x.shape[1:]:
            raise ConfigError(f"{where}: training images are {tuple(self.train_x.shape[1:])} but test images "
                              f"{tuple(self.test_x.shape[1:])}; they must match")

    def _complete(self, where: str) -> None:
        """Default class names and the training images' channel statistics, when not given."""
        from .base import channel_stats

        if not self.class_names:
            self.class_names = tuple(str(i) for i in range(self.num_classes))
        elif len(self.class_names) != self.num_classes:
            raise ConfigError(f"{where}: {len(self.class_names)} class names for {self.num_classes} classes")
        self.class_names = tuple(self.class_names)
        if not self.mean or not self.std:
            self.mean, self.std = channel_stats(self.train_x)

    def _batches(self) -> type:
        return DenseBatches

    def _augmentation(self) -> Callable[..., Any]:
        return train_transform(self.image_size)

    def train_batches(self, batch_size: int, generator: torch.Generator, device: torch.device,
                      channels_last: bool = False, shard: Tuple[int, int] = (0, 1),
                      augment: bool = True) -> "DenseBatches":
        """Shuffled training batches (drop_last); with ``augment`` the paired rescale-crop-flip
        (``_augmentation``; a subclass names its own batches and augmentation)."""
        return self._batches()(self.train_x, self.train_y, batch_size, self.mean, self.std,
                               shuffle=True, transform=self._augmentation() if augment else None,
                               generator=generator, device=device, channels_last=channels_last,
                               drop_last=True, shard=shard, workers=self.workers)

    def test_batches(self, batch_size: int, device: torch.device,
                     channels_last: bool = False) -> "DenseBatches":
        """The test set in order, never augmented."""
        return self._batches()(self.test_x, self.test_y, batch_size, self.mean, self.std,
                               device=device, channels_last=channels_last)


@dataclass
class DenseData(HeldDense):
    """A segmentation dataset in memory; the trainer's interface of ``ImageData`` plus ``task``.

    Construction checks shapes, that every mask id is a class or 255, and computes ``mean`` /
    ``std`` (per channel of the training images / 255) when they are not given.
    """

    task = "segmentation"
    ignore_index = IGNORE_INDEX

    def __post_init__(self) -> None:
        where = f"{self.name} in {self.source}"
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int) \
                or not 2 <= self.num_classes <= IGNORE_INDEX:
            raise ConfigError(f"{where}: num_classes must be an integer in 2..{IGNORE_INDEX} (got "
                              f"{self.num_classes!r}); ids must stay below the ignore value {IGNORE_INDEX}")
        _check_pair(self.train_x, self.train_y, f"{where} (training)")
        _check_pair(self.test_x, self.test_y, f"{where} (test)")
        self._check_images_match(where)
        for split, y in (("training", self.train_y), ("test", self.test_y)):
            check_masks(y, self.num_classes, f"{where} ({split})")
        # uint8 holds every valid id (< 255) and 255 itself: 8x less memory than int64
        self.train_y, self.test_y = self.train_y.to(torch.uint8), self.test_y.to(torch.uint8)
        self._complete(where)


class Augmented(Dataset):
    """Sample i of an epoch: ``transform(Image, Mask)`` with the CPU RNG seeded by
    ``sample_seed(epoch_seed, i)``; returns plain uint8 tensors ([C, H, W], [H, W])."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, transform: Callable[..., Any], epoch_seed: int) -> None:
        self.x, self.y, self.transform, self.epoch_seed = x, y, transform, epoch_seed

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> Tuple[torch.Tensor, torch.Tensor]:
        # v2 draws from the global CPU RNG: fork it so the caller's stream is untouched
        with torch.random.fork_rng(devices=[]):
            # the CPU generator only: torch.manual_seed would reseed the accelerators too
            torch.default_generator.manual_seed(sample_seed(self.epoch_seed, i))
            img, mask = self.transform(tv_tensors.Image(self.x[i]), tv_tensors.Mask(self.y[i]))
        return img.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor)


class DenseBatches(EpochBatches):
    """Iterates (x, y): x float (x/255 - mean)/std [B, C, H, W], y int64 masks [B, H, W], on ``device``.

    With ``shuffle``, each epoch draws from ``generator`` an epoch seed, then the order, and
    nothing else; ``transform`` draws per sample from ``sample_seed(epoch_seed, index)``. So
    restoring the generator state of an epoch's start and calling ``iter_from(b)`` yields
    exactly batches b, b+1, ... of the full pass. ``shard=(rank, world)`` keeps the rank's
    contiguous slice of every global batch (only that slice is augmented).

    Subclasses (data/det_data.py) change the targets through ``_take``, ``dataset_class``,
    ``collate`` and ``_move_target``; the order, seeding and sharding stay here.
    """

    dataset_class: Callable[..., Dataset] = Augmented  # sample i of an augmented epoch
    collate: Callable[[List[Any]], Any] = staticmethod(default_collate)  # its batches

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, mean: Tuple[float, ...],
                 std: Tuple[float, ...], *, shuffle: bool = False, transform: Optional[Callable[..., Any]] = None,
                 generator: Optional[torch.Generator] = None, device: Union[torch.device, str] = "cpu",
                 channels_last: bool = False, drop_last: bool = False,
                 shard: Tuple[int, int] = (0, 1), workers: int = 0) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch size must be an integer >= 1 (got {batch_size!r})")
        rank, world = shard
        if world > 1 and batch_size % world:
            raise ConfigError(f"batch size {batch_size} must divide evenly over {world} processes")
        if (shuffle or transform is not None) and generator is None:
            generator = torch.Generator().manual_seed(torch.initial_seed())
        self.x, self.y, self.batch_size = x, y, batch_size
        self.shuffle, self.transform, self.generator = shuffle, transform, generator
        self.device = torch.device(device)
        self.channels_last, self.drop_last = channels_last, drop_last
        self.rank, self.world, self.workers = rank, world, workers
        self.mean, self.std = norm_stats(mean, std, x.shape[1], self.device)

    def _index_batches(self, order: Optional[torch.Tensor], start: int) -> List[List[int]]:
        """Sample indices of batches ``start..`` (this rank's slice of each)."""
        n, out = len(self.x), []
        for b in range(start, len(self)):
            lo, hi = b * self.batch_size, min(n, (b + 1) * self.batch_size)
            idx = order[lo:hi] if order is not None else torch.arange(lo, hi)
            if self.world > 1:
                per = len(idx) // self.world
                idx = idx[self.rank * per:(self.rank + 1) * per]
            out.append(idx.tolist())
        return out

    def _take(self, idx: List[int]) -> Tuple[torch.Tensor, Any]:
        """The stored (images, targets) of one batch, un-augmented."""
        return self.x[idx], self.y[idx]

    def _move_target(self, yb: Any) -> Any:
        """A batch's targets on the device, in the form the task's loss takes."""
        return yb.to(self.device, dtype=torch.int64, non_blocking=True)

    def _raw(self, batches: List[List[int]], epoch_seed: int) -> Iterator[Tuple[torch.Tensor, Any]]:
        """uint8 (images, targets) per batch: indexed, or augmented in ``workers`` processes."""
        if self.transform is None:
            for idx in batches:
                yield self._take(idx)
            return
        ds = self.dataset_class(self.x, self.y, self.transform, epoch_seed)
        loader = epoch_loader(ds, batches, self.workers, self.collate, epoch_seed, self.device)
        for xb, yb in loader:
            yield xb, yb

    def iter_from(self, start: int) -> Iterator[Tuple[torch.Tensor, Any]]:
        """The epoch's batches from index ``start`` on, bit-identical to a full pass's."""
        epoch_seed, order = 0, None
        if self.shuffle or self.transform is not None:
            # draw order (part of the resume contract): the epoch seed, then the permutation;
            # drawn with or without augmentation so both see the same order
            epoch_seed = int(torch.randint(0, 2 ** 62, (1,), generator=self.generator))
        if self.shuffle:
            order = torch.randperm(len(self.x), generator=self.generator)
        batches = self._index_batches(order, start)
        if not batches:
            return
        for xb, yb in self._raw(batches, epoch_seed):
            # move uint8 (4x fewer bytes than float), then normalise on the device
            xb = xb.to(self.device, non_blocking=True).float().div_(255.0).sub_(self.mean).div_(self.std)
            if self.channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            yield xb, self._move_target(yb)
