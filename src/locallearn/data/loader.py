"""One deterministic, resumable batch iterator over in-memory uint8 images (no DataLoader workers)."""
from __future__ import annotations

from typing import Iterator, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from ..errors import ConfigError


def crop_pad(h: int) -> int:
    """Zero padding of the random crop: 32 -> 4, 28 -> 3, 96 -> 12."""
    return max(1, h // 8)


def crop_at(x: torch.Tensor, pad: int, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """Crop each zero-padded sample i at offset (dy[i], dx[i]) in [0, 2*pad]; pad means no shift."""
    b, c, h, w = x.shape
    dev = x.device  # the images may live on an accelerator; index tensors follow them
    xp = F.pad(x, (pad, pad, pad, pad))
    rows = (dy.to(dev).view(b, 1) + torch.arange(h, device=dev)).view(b, 1, h, 1)
    cols = (dx.to(dev).view(b, 1) + torch.arange(w, device=dev)).view(b, 1, 1, w)
    return xp[torch.arange(b, device=dev).view(b, 1, 1, 1), torch.arange(c, device=dev).view(1, c, 1, 1), rows, cols]


def flip_where(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Horizontally flip the samples where ``mask`` (bool [B]) is True."""
    return torch.where(mask.to(x.device).view(-1, 1, 1, 1), x.flip(3), x)


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random crop (zero padding crop_pad(H)) then random horizontal flip (p = 0.5), per sample.

    Draw order (part of the resumability contract): dy, dx, flip.
    """
    pad = crop_pad(x.shape[2])
    dy, dx, flip = augment_draws(x.shape[0], pad, generator)
    return flip_where(crop_at(x, pad, dy, dx), flip)


def augment_draws(b: int, pad: int, generator: torch.Generator) -> Tuple[torch.Tensor, ...]:
    """The random draws of ``augment`` for a batch of ``b``: crop offsets dy, dx and flip mask."""
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    return dy, dx, torch.rand(b, generator=generator) < 0.5


def norm_stats(mean: Sequence[float], std: Sequence[float], c: int,
               device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    """mean / std as [1, C, 1, 1] float32 on ``device``: ``(x/255 - mean) / std`` there."""
    return (torch.tensor(list(mean), dtype=torch.float32, device=device).view(1, c, 1, 1),
            torch.tensor(list(std), dtype=torch.float32, device=device).view(1, c, 1, 1))


class EpochBatches:
    """What every batch iterator shares: its length and ``iter`` = ``iter_from(0)``."""

    x: torch.Tensor
    batch_size: int
    drop_last: bool

    def __len__(self) -> int:
        n = len(self.x)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        return self.iter_from(0)

    def iter_from(self, start: int) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        raise NotImplementedError


class Batches(EpochBatches):
    """Iterates (x, y) batches: x float normalised (x/255 - mean)/std on `device`, y int64 on `device`.

    Shuffling and augmentation draw only from ``generator``, so restoring ``generator.get_state()``
    at an epoch boundary replays the following epochs bit-exactly (and ``iter_from`` resumes
    mid-epoch).
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, mean: Sequence[float],
                 std: Sequence[float], *, shuffle: bool = False, augment: bool = False,
                 generator: Optional[torch.Generator] = None, device: Union[torch.device, str] = "cpu",
                 channels_last: bool = False, drop_last: bool = False,
                 shard: Tuple[int, int] = (0, 1)) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch size must be an integer >= 1 (got {batch_size!r})")
        if x.dtype != torch.uint8 or x.dim() != 4:
            raise ValueError(f"Batches expects uint8 images [N, C, H, W], got {x.dtype} {tuple(x.shape)}")
        if len(y) != len(x):
            raise ValueError(f"{len(x)} images but {len(y)} labels")
        c = x.shape[1]
        if len(mean) != c or len(std) != c:
            raise ValueError(f"mean/std need {c} values (one per channel), got {len(mean)}/{len(std)}")
        if (shuffle or augment) and generator is None:
            generator = torch.Generator().manual_seed(torch.initial_seed())
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.shuffle, self.augment = shuffle, augment
        self.generator = generator
        self.device = torch.device(device)
        self.channels_last, self.drop_last = channels_last, drop_last
        rank, world = shard
        if world > 1 and batch_size % world:
            raise ConfigError(f"batch size {batch_size} must divide evenly over {world} processes")
        # data parallel: every rank draws the same global batch (same generator) and keeps
        # its contiguous 1/world slice, so the union is exactly the single-process batch
        self.rank, self.world = rank, world
        self.mean, self.std = norm_stats(mean, std, c, self.device)

    def iter_from(self, start: int) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        """The epoch's batches from index ``start`` on, exactly as a full pass yields them.

        The skipped batches still take their random draws (nothing else), so restoring
        the generator state of the epoch's start and calling ``iter_from(i)`` resumes an
        epoch mid-way bit-exactly.
        """
        n = len(self.x)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else None
        for i in range(len(self)):
            lo, hi = i * self.batch_size, min(n, (i + 1) * self.batch_size)
            if i < start:
                if self.augment:
                    augment_draws(hi - lo, crop_pad(self.x.shape[2]), self.generator)
                continue
            if order is None:
                xb, yb = self.x[lo:hi], self.y[lo:hi]
            else:
                idx = order[lo:hi]
                xb, yb = self.x[idx], self.y[idx]
            if self.augment:
                xb = augment(xb, self.generator)
            if self.world > 1:
                per = len(yb) // self.world
                xb, yb = xb[self.rank * per:(self.rank + 1) * per], yb[self.rank * per:(self.rank + 1) * per]
            # move uint8 (4x fewer bytes than float), then normalise on the device
            xb = xb.to(self.device, non_blocking=True).float().div_(255.0).sub_(self.mean).div_(self.std)
            if self.channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            yield xb, yb.to(self.device, dtype=torch.int64, non_blocking=True)
