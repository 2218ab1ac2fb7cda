"""Tests for locallearn.data: IDX parsing, dataset lookup, synthetic data, stats and the batch iterator."""
from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path
from typing import Tuple

import numpy as np
import pytest
import torch

from locallearn.data import (
    Batches, ImageData, channel_stats, crop_at, crop_pad, flip_where, list_datasets, load_dataset,
    read_idx_images, read_idx_labels,
)
from locallearn.data.idx import DEBIAN_DIR, FILES, find_idx_files
from locallearn.errors import ConfigError


def idx_bytes(a: np.ndarray) -> bytes:
    """Hand-built IDX encoding (independent of the reader under test)."""
    magic = 0x0800 | a.ndim
    return struct.pack(">I", magic) + struct.pack(f">{a.ndim}I", *a.shape) + a.astype(np.uint8).tobytes()


def write_idx(path: Path, a: np.ndarray, gz: bool = False) -> Path:
    data = idx_bytes(a)
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def write_fashion(d: Path, n_train: int = 6, n_test: int = 4, gz: bool = False) -> Tuple[np.ndarray, ...]:
    rng = np.random.default_rng(0)
    arrays = (
        rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8), np.arange(n_train, dtype=np.uint8) % 10,
        rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8), np.arange(n_test, dtype=np.uint8)[::-1] % 10,
    )
    d.mkdir(parents=True, exist_ok=True)
    for name, a in zip(FILES, arrays):
        write_idx(d / name, a, gz=gz)
    return arrays


# ---- IDX ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("gz", [False, True])
def test_idx_roundtrip(tmp_path: Path, gz: bool) -> None:
    imgs = np.arange(3 * 5 * 4, dtype=np.uint8).reshape(3, 5, 4)
    labels = np.array([7, 0, 9], dtype=np.uint8)
    x = read_idx_images(str(write_idx(tmp_path / "i", imgs, gz)))
    y = read_idx_labels(str(write_idx(tmp_path / "l", labels, gz)))
    assert x.dtype == torch.uint8 and x.shape == (3, 1, 5, 4)
    assert torch.equal(x[:, 0], torch.from_numpy(imgs))
    assert y.dtype == torch.int64 and y.tolist() == [7, 0, 9]


def test_idx_bad_magic(tmp_path: Path) -> None:
    p = write_idx(tmp_path / "labels", np.zeros(4, dtype=np.uint8))  # magic 2049
    with pytest.raises(ConfigError, match="labels.*magic number 2049, expected 2051"):
        read_idx_images(str(p))


@pytest.mark.parametrize("cut", [2, 10, 30])
def test_idx_truncated(tmp_path: Path, cut: int) -> None:
    p = tmp_path / "short-images"
    p.write_bytes(idx_bytes(np.zeros((2, 4, 4), dtype=np.uint8))[:cut])
    with pytest.raises(ConfigError, match="short-images.*truncated"):
        read_idx_images(str(p))


def test_idx_broken_gzip(tmp_path: Path) -> None:
    p = tmp_path / "bad.gz"
    p.write_bytes(gzip.compress(idx_bytes(np.zeros(8, dtype=np.uint8)))[:-6])
    with pytest.raises(ConfigError, match="bad.gz"):
        read_idx_labels(str(p))


# ---- Fashion-MNIST lookup ----------------------------------------------------------------------

@pytest.mark.parametrize("gz", [False, True])
def test_fashion_from_data_dir(tmp_path: Path, gz: bool) -> None:
    tr_x, tr_y, te_x, te_y = write_fashion(tmp_path, gz=gz)
    d = load_dataset("fashion-mnist", data_dir=str(tmp_path))
    assert isinstance(d, ImageData) and d.source == str(tmp_path)
    assert torch.equal(d.train_x[:, 0], torch.from_numpy(tr_x)) and d.train_y.tolist() == tr_y.tolist()
    assert torch.equal(d.test_x[:, 0], torch.from_numpy(te_x)) and d.test_y.tolist() == te_y.tolist()
    assert d.num_classes == 10 and d.in_chans == 1 and d.image_size == (28, 28)


def test_fashion_torchvision_layout(tmp_path: Path) -> None:
    write_fashion(tmp_path / "FashionMNIST" / "raw", gz=True)
    d = load_dataset("fashion-mnist", data_dir=str(tmp_path), limit_train=2, limit_test=3)
    assert d.source == str(tmp_path / "FashionMNIST" / "raw")
    assert d.train_y.tolist() == [0, 1] and d.test_y.tolist() == [3, 2, 1]


def test_fashion_empty_data_dir(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        load_dataset("fashion-mnist", data_dir=str(tmp_path))
    assert str(tmp_path) in str(e.value) and "train-images-idx3-ubyte" in str(e.value)
    assert "--download" in str(e.value)


def test_fashion_partial_dir_is_not_found(tmp_path: Path) -> None:
    write_fashion(tmp_path)
    (tmp_path / FILES[3]).unlink()
    assert find_idx_files(str(tmp_path)) is None


def test_fashion_label_count_mismatch(tmp_path: Path) -> None:
    write_fashion(tmp_path)
    write_idx(tmp_path / FILES[1], np.zeros(5, dtype=np.uint8))
    with pytest.raises(ConfigError, match="5 labels but the images file has 6"):
        load_dataset("fashion-mnist", data_dir=str(tmp_path))


def test_fashion_env_lookup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tr_x, *_ = write_fashion(tmp_path / "FashionMNIST" / "raw", n_train=3)
    monkeypatch.setenv("LOCALLEARN_DATA", str(tmp_path))
    d = load_dataset("fashion-mnist")
    assert len(d.train_x) == 3 and torch.equal(d.train_x[:, 0], torch.from_numpy(tr_x))


@pytest.mark.skipif(not os.path.isdir(DEBIAN_DIR), reason="Debian dataset-fashion-mnist not installed")
def test_fashion_real_debian(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOCALLEARN_DATA", raising=False)
    d = load_dataset("fashion-mnist")
    assert d.source == DEBIAN_DIR
    assert d.train_x.shape == (60000, 1, 28, 28) and d.test_x.shape == (10000, 1, 28, 28)
    assert d.num_classes == 10 and d.train_y.bincount().tolist() == [6000] * 10
    assert d.mean[0] == pytest.approx(0.2860, abs=1e-4) and d.std[0] == pytest.approx(0.3530, abs=1e-4)


# ---- registry, limits, torchvision sets --------------------------------------------------------

def test_list_and_unknown() -> None:
    assert list_datasets() == ["cifar10", "cityscapes", "coco", "div2k", "fashion-mnist",
                               "fmnist-scenes", "fmnist-scenes-det", "imagefolder", "sr-folder",
                               "sr-photos", "stl10", "svhn", "synthetic", "voc-det", "voc-seg"]
    with pytest.raises(ConfigError, match=r"unknown dataset 'imagenet'.*cifar10.*synthetic"):
        load_dataset("imagenet")


@pytest.mark.parametrize("bad", [0, -3, 2.5])
def test_bad_limits(bad: object) -> None:
    with pytest.raises(ConfigError, match="limit_train must be an integer >= 1"):
        load_dataset("synthetic", limit_train=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="limit_test"):
        load_dataset("synthetic", limit_test=bad)  # type: ignore[arg-type]


def test_suffix_on_real_dataset(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="takes no ':' suffix"):
        load_dataset("cifar10:3x32x32", data_dir=str(tmp_path))


@pytest.mark.parametrize("name", ["cifar10", "svhn", "stl10"])
def test_torchvision_missing_no_download(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_dataset(name, data_dir=str(tmp_path), download=False)
    msg = str(e.value)
    assert name in msg and str(tmp_path) in msg and "--download" in msg and "--data-dir" in msg
    assert os.listdir(tmp_path) == []  # nothing was downloaded


# ---- synthetic ---------------------------------------------------------------------------------

def test_synthetic_default_and_deterministic() -> None:
    torch.manual_seed(1)
    a = load_dataset("synthetic")
    torch.manual_seed(123)  # the global RNG must not matter
    b = load_dataset("synthetic")
    assert a.train_x.shape == (512, 3, 32, 32) and a.test_x.shape == (256, 3, 32, 32)
    assert a.train_x.dtype == torch.uint8 and a.train_y.dtype == torch.int64
    assert a.num_classes == 10 and a.train_y.bincount().tolist() == [52, 52] + [51] * 8
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_x, b.test_x)


def test_synthetic_leaves_global_rng_alone() -> None:
    torch.manual_seed(7)
    before = torch.get_rng_state()
    load_dataset("synthetic:1x8x8:3")
    assert torch.equal(torch.get_rng_state(), before)


@pytest.mark.parametrize("name,shape,k", [
    ("synthetic:3x32x32", (3, 32, 32), 10), ("synthetic:1x28x28:10", (1, 28, 28), 10),
    ("synthetic:2x9x7:4", (2, 9, 7), 4),
])
def test_synthetic_suffix(name: str, shape: Tuple[int, int, int], k: int) -> None:
    d = load_dataset(name, limit_train=20, limit_test=8)
    assert d.train_x.shape == (20,) + shape and d.test_x.shape == (8,) + shape
    assert d.num_classes == k and d.in_chans == shape[0] and d.image_size == shape[1:]
    assert sorted(set(d.train_y.tolist())) == list(range(k)) and d.name == name


@pytest.mark.parametrize("spec", ["32x32", "3x32x32:", "3x32x32:10:1", "ax32x32", "0x32x32", "3x32x32:1", ""])
def test_synthetic_bad_suffix(spec: str) -> None:
    with pytest.raises(ConfigError, match=r"synthetic.*CxHxW"):
        load_dataset(f"synthetic:{spec}")


def test_synthetic_is_learnable() -> None:
    # nearest class mean (from train) must classify the test set far above chance
    d = load_dataset("synthetic:3x16x16:10")
    xtr, xte = d.train_x.float().flatten(1), d.test_x.float().flatten(1)
    means = torch.stack([xtr[d.train_y == k].mean(0) for k in range(10)])
    acc = (torch.cdist(xte, means).argmin(1) == d.test_y).float().mean().item()
    assert acc > 0.9


# ---- stats -------------------------------------------------------------------------------------

def test_channel_stats_values() -> None:
    x = torch.tensor([0, 255, 0, 255], dtype=torch.uint8).view(4, 1, 1, 1)
    x = torch.cat([x, torch.full((4, 1, 1, 1), 51, dtype=torch.uint8)], 1)
    mean, std = channel_stats(x)
    assert mean == pytest.approx((0.5, 0.2)) and std == pytest.approx((0.5, 0.0))
    d = load_dataset("synthetic:2x6x5:3", limit_train=40)
    ref = d.train_x.double() / 255
    assert d.mean == pytest.approx(tuple(ref.mean((0, 2, 3)).tolist()), abs=1e-12)
    assert d.std == pytest.approx(tuple(ref.std((0, 2, 3), unbiased=False).tolist()), abs=1e-12)


# ---- Batches -----------------------------------------------------------------------------------

def small(n: int = 10, c: int = 3, h: int = 8, w: int = 8) -> Tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8, generator=g), torch.arange(n)


def test_batches_count_and_order() -> None:
    x, y = small(10)
    b = Batches(x, y, 4, (0.5,) * 3, (0.25,) * 3)
    assert len(b) == 3 and [len(yb) for _, yb in b] == [4, 4, 2]
    assert torch.cat([yb for _, yb in b]).tolist() == list(range(10))
    b = Batches(x, y, 4, (0.5,) * 3, (0.25,) * 3, drop_last=True)
    assert len(b) == 2 and [yb.tolist() for _, yb in b] == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_batches_normalisation_exact() -> None:
    x, y = small(5)
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.6, 0.7)
    xb, yb = next(iter(Batches(x, y, 5, mean, std)))
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    assert xb.dtype == torch.float32 and yb.dtype == torch.int64
    assert torch.equal(xb, (x.float() / 255 - m) / s)
    assert xb[0, 1, 0, 0].item() == pytest.approx((x[0, 1, 0, 0].item() / 255 - 0.2) / 0.6, rel=1e-6)


def test_batches_channels_last() -> None:
    x, y = small(4)
    xb, _ = next(iter(Batches(x, y, 4, (0.0,) * 3, (1.0,) * 3, channels_last=True)))
    assert xb.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(xb, x.float() / 255)


def test_batches_bad_batch_size() -> None:
    x, y = small(4)
    for bs in (0, -1):
        with pytest.raises(ConfigError, match=f"batch size must be an integer >= 1 \\(got {bs}\\)"):
            Batches(x, y, bs, (0.0,) * 3, (1.0,) * 3)


def epoch(b: Batches) -> Tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*list(b))
    return torch.cat(xs), torch.cat(ys)


def test_batches_seeded_and_resumable() -> None:
    x, y = small(23)
    mk = lambda g: Batches(x, y, 5, (0.5,) * 3, (0.5,) * 3, shuffle=True, augment=True, generator=g)  # noqa: E731
    b1, b2 = mk(torch.Generator().manual_seed(3)), mk(torch.Generator().manual_seed(3))
    e1, e2 = epoch(b1), epoch(b2)
    assert torch.equal(e1[0], e2[0]) and torch.equal(e1[1], e2[1])
    assert sorted(e1[1].tolist()) == list(range(23)) and e1[1].tolist() != list(range(23))
    state = b1.generator.get_state()
    nxt = epoch(b1)
    assert not torch.equal(nxt[1], e1[1])  # a new epoch reshuffles
    g = torch.Generator().manual_seed(999)
    g.set_state(state)
    again = epoch(mk(g))
    assert torch.equal(again[0], nxt[0]) and torch.equal(again[1], nxt[1])


def test_batches_iter_from_resumes_mid_epoch() -> None:
    x, y = small(23)
    mk = lambda g: Batches(x, y, 5, (0.5,) * 3, (0.5,) * 3, shuffle=True, augment=True, generator=g)  # noqa: E731
    full_gen = torch.Generator().manual_seed(5)
    full = list(mk(full_gen))
    part_gen = torch.Generator().manual_seed(5)
    part = list(mk(part_gen).iter_from(2))
    assert len(part) == len(full) - 2
    for (xa, ya), (xb, yb) in zip(full[2:], part):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert torch.equal(full_gen.get_state(), part_gen.get_state())  # the next epoch matches too


def test_batches_default_generator_follows_initial_seed() -> None:
    x, y = small(12)
    torch.manual_seed(42)
    a = epoch(Batches(x, y, 4, (0.0,) * 3, (1.0,) * 3, shuffle=True))[1]
    torch.manual_seed(42)
    b = epoch(Batches(x, y, 4, (0.0,) * 3, (1.0,) * 3, shuffle=True))[1]
    assert a.tolist() == b.tolist() and sorted(a.tolist()) == list(range(12))


def test_augment_shapes_and_changes() -> None:
    x, y = small(64, 3, 32, 32)
    b = Batches(x, y, 64, (0.0,) * 3, (1.0,) * 3, augment=True, generator=torch.Generator().manual_seed(0))
    xb, yb = next(iter(b))
    assert xb.shape == x.shape and yb.tolist() == y.tolist()
    same = (xb * 255).round().to(torch.uint8).eq(x).flatten(1).all(1)
    assert 0 < int((~same).sum()) and int(same.sum()) < 64  # at least some samples changed


def test_crop_pad_sizes() -> None:
    assert [crop_pad(h) for h in (32, 28, 96, 7)] == [4, 3, 12, 1]


def test_crop_at_known_shift() -> None:
    img = torch.arange(1, 26, dtype=torch.uint8).view(1, 1, 5, 5)
    x = torch.cat([img, img, img])
    pad = 2
    # offset (pad, pad) is the identity; (0, 0) shifts content down-right; (4, 3) shifts up-left by (2, 1)
    out = crop_at(x, pad, torch.tensor([2, 0, 4]), torch.tensor([2, 0, 3]))
    assert torch.equal(out[0], img[0])
    down_right = torch.zeros(1, 5, 5, dtype=torch.uint8)
    down_right[:, 2:, 2:] = img[0, :, :3, :3]
    assert torch.equal(out[1], down_right)
    up_left = torch.zeros(1, 5, 5, dtype=torch.uint8)
    up_left[:, :3, :4] = img[0, :, 2:, 1:]
    assert torch.equal(out[2], up_left)


def test_flip_where_exact() -> None:
    x, _ = small(4, 2, 3, 5)
    out = flip_where(x, torch.tensor([True, False, False, True]))
    assert torch.equal(out[0], x[0].flip(-1)) and torch.equal(out[3], x[3].flip(-1))
    assert torch.equal(out[1], x[1]) and torch.equal(out[2], x[2])
    assert out[0, 1, 2].tolist() == x[0, 1, 2].tolist()[::-1]
