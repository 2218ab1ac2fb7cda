"""A deterministic, learnable synthetic dataset for tests and smoke runs: 'synthetic[:CxHxW[:K]]'."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .base import DATASETS, RawData

DEFAULT_SHAPE = (3, 32, 32)
DEFAULT_CLASSES = 10
DEFAULT_TRAIN, DEFAULT_TEST = 512, 256
SEED = 20240611  # fixed: the data never depends on the global RNG
NOISE_STD = 40.0  # in uint8 units; prototypes stay separable, samples are not copies
# refuse sizes that would exhaust memory (a crash or the OOM killer, not one line):
# N x C x H x W pixel values per split (about 5 bytes each while generating)
MAX_VALUES = 2 ** 30
MAX_CLASSES = 100_000


def parse_spec(spec: Optional[str]) -> Tuple[Tuple[int, int, int], int]:
    """'3x32x32' or '1x28x28:10' -> ((C, H, W), K); None gives the defaults."""
    if spec is None:
        return DEFAULT_SHAPE, DEFAULT_CLASSES
    form = "expected synthetic:CxHxW or synthetic:CxHxW:K, e.g. synthetic:3x32x32:10"
    parts = spec.split(":")
    dims = parts[0].lower().split("x")
    try:
        if len(parts) > 2 or len(dims) != 3:
            raise ValueError
        c, h, w = (int(d) for d in dims)
        k = int(parts[1]) if len(parts) == 2 else DEFAULT_CLASSES
    except ValueError:
        raise ConfigError(f"bad synthetic dataset spec {spec!r}: {form}") from None
    if min(c, h, w) < 1:
        raise ConfigError(f"bad synthetic dataset spec {spec!r}: sizes must be >= 1; {form}")
    if k < 2:
        raise ConfigError(f"bad synthetic dataset spec {spec!r}: K={k} classes, classification needs "
                          f"K >= 2; {form}")
    if k > MAX_CLASSES or k * c * h * w > MAX_VALUES:
        raise ConfigError(f"synthetic dataset spec {spec!r} is too large: at most {MAX_CLASSES} classes "
                          f"and K x C x H x W <= 2^{MAX_VALUES.bit_length() - 1} (the class prototypes); {form}")
    return (c, h, w), k


def _prototypes(shape: Tuple[int, int, int], k: int, g: torch.Generator) -> torch.Tensor:
    # Smooth (upsampled coarse-grid) prototypes, so crops and shifts keep a sample near its class.
    c, h, w = shape
    coarse = torch.rand(k, c, max(2, h // 8), max(2, w // 8), generator=g) * 255.0
    return F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=True)


def _samples(protos: torch.Tensor, n: int, g: torch.Generator) -> Tuple[torch.Tensor, torch.Tensor]:
    k = protos.shape[0]
    y = torch.arange(n, dtype=torch.int64) % k  # balanced, and every prefix is too
    # in place and in chunks (the same values as protos[y] + noise): one float buffer only
    x = torch.randn((n,) + tuple(protos.shape[1:]), generator=g).mul_(NOISE_STD)
    step = max(1, 2 ** 22 // max(1, protos[0].numel()))
    for lo in range(0, n, step):
        x[lo:lo + step].add_(protos[y[lo:lo + step]])
    return x.round_().clamp_(0, 255).to(torch.uint8), y


def make_synthetic(spec: Optional[str] = None, n_train: int = DEFAULT_TRAIN, n_test: int = DEFAULT_TEST) -> RawData:
    """Class prototype + Gaussian noise, clipped to uint8; same output on every call."""
    shape, k = parse_spec(spec)
    for what, n in (("training", n_train), ("test", n_test)):
        if n * shape[0] * shape[1] * shape[2] > MAX_VALUES:
            raise ConfigError(f"synthetic: {n} {what} samples of {'x'.join(map(str, shape))} are too many "
                              f"(N x C x H x W > 2^{MAX_VALUES.bit_length() - 1} values); use a smaller "
                              "--limit-train / --limit-test or image size")
    protos = _prototypes(shape, k, torch.Generator().manual_seed(SEED))
    # separate streams so the test set does not depend on the train size
    train_x, train_y = _samples(protos, n_train, torch.Generator().manual_seed(SEED + 1))
    test_x, test_y = _samples(protos, n_test, torch.Generator().manual_seed(SEED + 2))
    name = "synthetic" if spec is None else f"synthetic:{spec}"
    return RawData(train_x, train_y, test_x, test_y, k, f"{name} (generated, seed {SEED})")


@DATASETS.register("synthetic")
def load_synthetic(spec: Optional[str], data_dir: Optional[str], download: bool,
                   limit_train: Optional[int], limit_test: Optional[int]) -> RawData:
    """Sizes: limit_train / limit_test when given, else 512 / 256; data_dir is ignored."""
    return make_synthetic(spec, limit_train or DEFAULT_TRAIN, limit_test or DEFAULT_TEST)
