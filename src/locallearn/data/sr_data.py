"""In-memory super-resolution data: the SRData container, its patch batches and the resize helpers.

Images are kept whole, as lists of uint8 [3, H, W] tensors (sizes differ per image): each HR
image with its LR twin of exactly [3, H/scale, W/scale]. Training draws random LR patches of
``patch`` x ``patch`` and the aligned HR patches (``patch * scale``), EDSR's recipe:

- the image is picked uniformly, not by area: EDSR samples each image equally often, and area
  weighting would let one large photo (retina, 1411 x 1411 px) dominate a small set;
- the LR top-left is uniform over the image; the HR crop is the LR crop times ``scale``;
- with ``augment``, a random horizontal flip, vertical flip and transpose (rot90 with the
  flips: all 8 dihedral variants), the same on both patches so that they stay aligned.

Every draw of patch ``i`` of an epoch comes from a CPU generator seeded with
``sample_seed(epoch_seed, i)`` (``epoch_seed``: one draw from the caller's generator), so the
patches depend only on (epoch, i): not on sharding or a mid-epoch resume. The flip bits are
drawn with or without ``augment``, so both see the same crops. Networks get images in [0, 1]
(``mean`` 0, ``std`` 1): EDSR subtracts its own RGB mean inside.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image

from ..errors import ConfigError
from ..tasks.sr_rules import RULES, border
from .folder import sample_seed
from .loader import EpochBatches


def _to_pil(x: torch.Tensor) -> Image.Image:
    return Image.fromarray(x.permute(1, 2, 0).contiguous().numpy())


def _from_pil(im: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


def _check_image(x: object, what: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8 or x.dim() != 3 or x.shape[0] != 3:
        got = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ConfigError(f"{what} must be a uint8 RGB tensor [3, H, W] (got {got})")
    return x


def mod_crop(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """``hr`` [C, H, W] cropped right and bottom so that both sides divide by ``scale``."""
    h, w = hr.shape[-2:]
    return hr[..., :h - h % scale, :w - w % scale]


def downscale(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """uint8 [3, H, W] -> [3, H/scale, W/scale] by PIL bicubic (antialiased like MATLAB imresize)."""
    _check_image(hr, "downscale's image")
    h, w = hr.shape[-2:]
    if h % scale or w % scale:
        raise ConfigError(f"downscale: a {h}x{w} image does not divide by the scale {scale}; "
                          "mod_crop it first")
    return _from_pil(_to_pil(hr).resize((w // scale, h // scale), Image.BICUBIC))


def bicubic_upscale(lr: torch.Tensor, scale: int) -> torch.Tensor:
    """uint8 [3, h, w] -> [3, h*scale, w*scale] by PIL bicubic (MATLAB's a = -0.5 kernel): the baseline."""
    _check_image(lr, "bicubic_upscale's image")
    h, w = lr.shape[-2:]
    return _from_pil(_to_pil(lr).resize((w * scale, h * scale), Image.BICUBIC))


def _int_at_least(value: object, lo: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ConfigError(f"{what} must be an integer >= {lo} (got {value!r})")
    return value


@dataclass
class SRData:
    """A super-resolution dataset in memory; the trainer's interface of ``DenseData``.

    Construction checks that every image is uint8 [3, H, W], that each LR image is exactly its
    HR image / ``scale`` (loaders mod-crop the HR images), and that every training LR image
    holds a ``patch`` x ``patch`` crop.
    """

    name: str
    train_hr: List[torch.Tensor]
    train_lr: List[torch.Tensor]
    test_hr: List[torch.Tensor]
    test_lr: List[torch.Tensor]
    scale: int
    patch: int  # LR patch side; the HR patch is patch * scale
    patches: int  # training patches per epoch
    source: str
    eval_rule: str = "y"
    train_names: List[str] = field(default_factory=list)
    test_names: List[str] = field(default_factory=list)
    config: Dict[str, Any] = field(default_factory=dict)  # how the data was built, for run configs
    workers: int = 0  # interface of DenseData only: patches are cut in this process (cheap)

    task = "super_resolution"
    in_chans = 3
    num_classes = 3  # output channels
    mean = (0.0, 0.0, 0.0)
    std = (1.0, 1.0, 1.0)

    def __post_init__(self) -> None:
        where = f"{self.name} in {self.source}"
        self.scale = _int_at_least(self.scale, 2, f"{where}: scale")
        self.patch = _int_at_least(self.patch, 1, f"{where}: patch")
        self.patches = _int_at_least(self.patches, 1, f"{where}: patches per epoch")
        if self.eval_rule not in RULES:  # the task's (tasks.sr_metrics)
            raise ConfigError(f"{where}: eval_rule {self.eval_rule!r} is not one of {', '.join(RULES)}")
        self.train_names = self._split("training", self.train_hr, self.train_lr, self.train_names)
        self.test_names = self._split("test", self.test_hr, self.test_lr, self.test_names)
        self.train_hr, self.train_lr = list(self.train_hr), list(self.train_lr)
        self.test_hr, self.test_lr = list(self.test_hr), list(self.test_lr)
        p = self.patch
        # name the smallest image, so that "at most" is a patch every image holds
        small = min(range(len(self.train_lr)), key=lambda i: min(self.train_lr[i].shape[-2:]))
        h, w = self.train_lr[small].shape[-2:]
        name = self.train_names[small]
        if h < p or w < p:
            raise ConfigError(f"{where}: training image {name} is {h}x{w} at LR (x{self.scale}), smaller "
                                  f"than the {p}x{p} LR patch; pass a smaller --image-size (at most "
                                  f"{min(h, w)}) or leave that image out")
        for key, value in (("scale", self.scale), ("patch", p), ("patches", self.patches),
                           ("eval_rule", self.eval_rule)):
            self.config.setdefault(key, value)

    def _split(self, split: str, hr: Sequence[torch.Tensor], lr: Sequence[torch.Tensor],
               names: Sequence[str]) -> List[str]:
        """Check one split's pairs; returns its image names (``split[i]`` where none are given)."""
        where = f"{self.name} in {self.source} ({split})"
        if not isinstance(hr, (list, tuple)) or not isinstance(lr, (list, tuple)) or not hr:
            raise ConfigError(f"{where}: HR and LR images must be non-empty lists of tensors")
        if len(lr) != len(hr):
            raise ConfigError(f"{where}: {len(hr)} HR images but {len(lr)} LR images")
        names = list(names) or [f"{split}[{i}]" for i in range(len(hr))]
        if len(names) != len(hr):
            raise ConfigError(f"{where}: {len(names)} names for {len(hr)} images")
        s = self.scale
        for h_img, l_img, name in zip(hr, lr, names):
            _check_image(h_img, f"{where}: HR image {name}")
            _check_image(l_img, f"{where}: LR image {name}")
            (H, W), (h, w) = h_img.shape[-2:], l_img.shape[-2:]
            if H % s or W % s or (h * s, w * s) != (H, W):
                raise ConfigError(f"{where}: image {name} is {H}x{W} HR but {h}x{w} LR; at scale {s} the LR "
                                  f"image must be exactly HR / {s} (mod-crop the HR image first)")
        return names

    @property
    def image_size(self) -> Tuple[int, int]:
        """The LR training patch (H, W): what the network sees."""
        return self.patch, self.patch

    @property
    def num_train(self) -> int:
        return self.patches

    @property
    def border(self) -> int:
        """Pixels shaved off each HR side before PSNR/SSIM: ``scale`` (Y rule), ``scale + 6`` (RGB rule)."""
        return border(self.eval_rule, self.scale)

    def bicubic(self, lr: torch.Tensor) -> torch.Tensor:
        """The bicubic baseline of one uint8 LR image [3, h, w] at this set's scale."""
        return bicubic_upscale(lr, self.scale)

    def train_batches(self, batch_size: int, generator: torch.Generator, device: torch.device,
                      channels_last: bool = False, shard: Tuple[int, int] = (0, 1),
                      augment: bool = True) -> "SRPatchBatches":
        """``patches // batch_size`` batches of random (LR, HR) patch pairs (module docstring)."""
        return SRPatchBatches(self.train_lr, self.train_hr, self.scale, self.patch, self.patches, batch_size,
                              generator=generator, device=device, channels_last=channels_last,
                              shard=shard, augment=augment)

    def test_batches(self, batch_size: int, device: torch.device,
                     channels_last: bool = False) -> "SRTestBatches":
        """The whole test images in order, never augmented."""
        return SRTestBatches(self.test_lr, self.test_hr, batch_size, device=device, channels_last=channels_last)


def _check_batch_size(batch_size: object, shard: Tuple[int, int]) -> Tuple[int, int]:
    _int_at_least(batch_size, 1, "batch size")
    rank, world = shard
    if world > 1 and batch_size % world:  # type: ignore[operator]
        raise ConfigError(f"batch size {batch_size} must divide evenly over {world} processes")
    return rank, world


def _to_device(xb: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    # move uint8 (4x fewer bytes than float), then scale to [0, 1] on the device
    xb = xb.to(device, non_blocking=True).float().div_(255.0)
    return xb.contiguous(memory_format=torch.channels_last) if channels_last else xb


class SRPatchBatches(EpochBatches):
    """Iterates (x, y): x float LR patches in [0, 1] [B, 3, p, p], y the HR patches [B, 3, p*s, p*s].

    Each epoch draws one epoch seed from ``generator`` and nothing else, so restoring the
    generator state of an epoch's start and calling ``iter_from(b)`` yields exactly batches
    b, b+1, ... of the full pass. ``shard=(rank, world)`` keeps the rank's contiguous slice of
    every global batch (only that slice is cut).
    """

    def __init__(self, lr: Sequence[torch.Tensor], hr: Sequence[torch.Tensor], scale: int, patch: int,
                 patches: int, batch_size: int, *, generator: Optional[torch.Generator] = None,
                 device: Union[torch.device, str] = "cpu", channels_last: bool = False,
                 shard: Tuple[int, int] = (0, 1), augment: bool = True) -> None:
        self.rank, self.world = _check_batch_size(batch_size, shard)
        if batch_size > patches:  # an epoch without a single step would train nothing, silently
            raise ConfigError(f"batch size {batch_size} is larger than the {patches} training patches per "
                              "epoch; pass a smaller batch size or more patches (e.g. sr-photos:patches=N)")
        if generator is None:
            generator = torch.Generator().manual_seed(torch.initial_seed())
        self.lr, self.hr, self.scale, self.patch, self.patches = list(lr), list(hr), scale, patch, patches
        self.batch_size, self.generator, self.augment = batch_size, generator, augment
        self.device, self.channels_last, self.drop_last = torch.device(device), channels_last, True

    def __len__(self) -> int:
        return self.patches // self.batch_size

    def draw(self, epoch_seed: int, i: int) -> Tuple[int, int, int, int]:
        """Patch ``i`` of the epoch: (image index, LR top, LR left, flips: bit 0 h, bit 1 v, bit 2 transpose).

        Draw order (part of the resume contract): image, top, left, flips.
        """
        g = torch.Generator().manual_seed(sample_seed(epoch_seed, i))
        k = int(torch.randint(len(self.lr), (1,), generator=g))
        h, w = self.lr[k].shape[-2:]
        top = int(torch.randint(h - self.patch + 1, (1,), generator=g))
        left = int(torch.randint(w - self.patch + 1, (1,), generator=g))
        return k, top, left, int(torch.randint(8, (1,), generator=g))

    def pair(self, epoch_seed: int, i: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """The uint8 (LR, HR) patches of patch ``i`` of the epoch."""
        k, top, left, flips = self.draw(epoch_seed, i)
        p, s = self.patch, self.scale
        lr = self.lr[k][:, top:top + p, left:left + p]
        hr = self.hr[k][:, top * s:(top + p) * s, left * s:(left + p) * s]
        if self.augment:  # EDSR's order: hflip, vflip, then transpose (with the flips: any rot90)
            if flips & 1:
                lr, hr = lr.flip(-1), hr.flip(-1)
            if flips & 2:
                lr, hr = lr.flip(-2), hr.flip(-2)
            if flips & 4:
                lr, hr = lr.transpose(-1, -2), hr.transpose(-1, -2)
        return lr, hr

    def iter_from(self, start: int) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        """The epoch's batches from index ``start`` on, bit-identical to a full pass's."""
        epoch_seed = int(torch.randint(0, 2 ** 62, (1,), generator=self.generator))
        per = self.batch_size // self.world
        for b in range(start, len(self)):
            lo = b * self.batch_size + self.rank * per
            pairs = [self.pair(epoch_seed, i) for i in range(lo, lo + per)]
            xb = torch.stack([q[0] for q in pairs])
            yb = torch.stack([q[1] for q in pairs])
            yield _to_device(xb, self.device, self.channels_last), _to_device(yb, self.device, self.channels_last)


class SRTestBatches(EpochBatches):
    """Iterates (x, y) over whole test images in order: x float LR in [0, 1], y float HR in [0, 1].

    Consecutive images of one size go into a batch of up to ``batch_size``; an image whose size
    differs from its predecessor starts a new batch. ``groups`` lists each batch's image indices.
    """

    def __init__(self, lr: Sequence[torch.Tensor], hr: Sequence[torch.Tensor], batch_size: int, *,
                 device: Union[torch.device, str] = "cpu", channels_last: bool = False) -> None:
        _check_batch_size(batch_size, (0, 1))
        self.lr, self.hr, self.batch_size = list(lr), list(hr), batch_size
        self.device, self.channels_last, self.drop_last = torch.device(device), channels_last, False
        self.groups: List[List[int]] = []
        for i, img in enumerate(self.lr):
            last = self.groups[-1] if self.groups else None
            if last is not None and len(last) < batch_size and self.lr[last[-1]].shape == img.shape:
                last.append(i)
            else:
                self.groups.append([i])

    def __len__(self) -> int:
        return len(self.groups)

    def iter_from(self, start: int) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        for idx in self.groups[start:]:
            xb = torch.stack([self.lr[i] for i in idx])
            yb = torch.stack([self.hr[i] for i in idx])
            yield _to_device(xb, self.device, self.channels_last), _to_device(yb, self.device, self.channels_last)
