"""Fashion-MNIST: IDX file parsing and the file lookup (data_dir, $LOCALLEARN_DATA, Debian, download)."""
from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from ..errors import ConfigError
from .base import DATASETS, RawData, cache_dir, check_classes, check_labels, reject_spec

IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dims
LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dim

FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"  # Debian package dataset-fashion-mnist
NUM_CLASSES = 10  # Fashion-MNIST (and MNIST) IDX files: labels 0..9


def _read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read()
        if data[:2] == b"\x1f\x8b":  # gzip magic, whatever the file is called
            data = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:
        raise ConfigError(f"cannot read IDX file {path}: {e}") from None
    return data


def read_idx(path: str, magic: int) -> np.ndarray:
    """Parse one uint8 IDX file (raw or gzip); ``magic`` is 2051 (images) or 2049 (labels)."""
    data = _read_bytes(path)
    if len(data) < 4:
        raise ConfigError(f"IDX file {path} is truncated ({len(data)} bytes, no header)")
    (got,) = struct.unpack(">I", data[:4])
    if got != magic:
        raise ConfigError(f"IDX file {path} has magic number {got}, expected {magic}; is it the right file?")
    ndim = magic & 0xFF
    head = 4 + 4 * ndim
    if len(data) < head:
        raise ConfigError(f"IDX file {path} is truncated (header needs {head} bytes, file has {len(data)})")
    dims = struct.unpack(f">{ndim}I", data[4:head])
    size = math.prod(dims)  # Python ints: a garbage header must not overflow
    if len(data) != head + size:
        raise ConfigError(
            f"IDX file {path} is truncated or corrupt: dims {dims} need {head + size} bytes, file has {len(data)}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=head, count=size).reshape(dims)


def read_idx_images(path: str) -> torch.Tensor:
    """IDX images -> uint8 tensor [N, 1, H, W]."""
    a = read_idx(path, IMAGES_MAGIC)
    return torch.from_numpy(a.copy()).unsqueeze(1)


def read_idx_labels(path: str) -> torch.Tensor:
    """IDX labels -> int64 tensor [N]."""
    return torch.from_numpy(read_idx(path, LABELS_MAGIC).astype(np.int64))


def find_idx_files(directory: str) -> Optional[Dict[str, str]]:
    """The four Fashion-MNIST files in ``directory`` or its torchvision layout FashionMNIST/raw/, else None."""
    for d in (directory, os.path.join(directory, "FashionMNIST", "raw")):
        found: Dict[str, str] = {}
        for f in FILES:
            for cand in (f, f + ".gz"):
                p = os.path.join(d, cand)
                if os.path.isfile(p):
                    found[f] = p
                    break
        if len(found) == len(FILES):
            return found
    return None


def read_fashion_files(files: Dict[str, str]) -> RawData:
    """Read the four IDX files found by find_idx_files; refuse what would train a wrong model."""
    train_x, train_y = read_idx_images(files[FILES[0]]), read_idx_labels(files[FILES[1]])
    test_x, test_y = read_idx_images(files[FILES[2]]), read_idx_labels(files[FILES[3]])
    for x, y, fx, fy in ((train_x, train_y, FILES[0], FILES[1]), (test_x, test_y, FILES[2], FILES[3])):
        if len(x) == 0 or min(x.shape[2:]) < 1:
            raise ConfigError(f"IDX images file {files[fx]} holds no images (dims {tuple(x.shape[:1]) + tuple(x.shape[2:])})")
        if len(x) != len(y):
            raise ConfigError(f"IDX label file {files[fy]} has {len(y)} labels but the images file has {len(x)} images")
        check_labels(y, NUM_CLASSES, f"IDX label file {files[fy]}")
    if train_x.shape[2:] != test_x.shape[2:]:
        raise ConfigError(f"IDX images file {files[FILES[0]]} holds {tuple(train_x.shape[2:])} images but "
                          f"{files[FILES[2]]} {tuple(test_x.shape[2:])}; they must be the same size")
    check_classes(train_y, f"IDX label file {files[FILES[1]]}")
    source = os.path.dirname(files[FILES[0]])
    return RawData(train_x, train_y, test_x, test_y, NUM_CLASSES, source)


def _download(root: str) -> Tuple[Optional[Dict[str, str]], str]:
    """torchvision download into root/FashionMNIST/raw; returns (files or None, error text)."""
    from torchvision.datasets import FashionMNIST

    try:
        FashionMNIST(root=root, train=True, download=True)  # fetches all four files
    except (RuntimeError, OSError) as e:  # URLError is an OSError
        return None, f"download into {root} failed: {' '.join(str(e).split())}"  # one line
    files = find_idx_files(root)
    return files, "" if files else f"download into {root} left no IDX files"


@DATASETS.register("fashion-mnist")
def load_fashion_mnist(
    spec: Optional[str], data_dir: Optional[str], download: bool, limit_train: Optional[int], limit_test: Optional[int]
) -> RawData:
    """Fashion-MNIST as [N, 1, 28, 28] uint8.

    Lookup: data_dir (only; download into it if asked), else $LOCALLEARN_DATA, the Debian
    package dir, the cache dir, and finally, only when ``download``, a torchvision download
    into the cache dir.
    """
    reject_spec("fashion-mnist", spec)
    expected = ", ".join(FILES) + " (raw or .gz)"
    if data_dir is not None:
        files = find_idx_files(data_dir)
        err = "pass --download to fetch them there, or point --data-dir at a folder holding them"
        if files is None and download:
            files, err = _download(data_dir)
        if files is None:
            raise ConfigError(
                f"no Fashion-MNIST files in data dir {data_dir} (nor {os.path.join(data_dir, 'FashionMNIST', 'raw')}): "
                f"expected {expected}; {err}"
            )
        return read_fashion_files(files)
    looked: List[str] = []
    for d in (os.environ.get("LOCALLEARN_DATA"), DEBIAN_DIR, cache_dir()):
        if d:
            looked.append(d)
            files = find_idx_files(d)
            if files is not None:
                return read_fashion_files(files)
    hint = (f"install it with `apt-get install dataset-fashion-mnist` (Debian), set $LOCALLEARN_DATA or "
            f"pass --data-dir DIR holding the IDX files {expected}")
    if not download:  # never touch the network unasked
        raise ConfigError(f"Fashion-MNIST not found (looked in {', '.join(looked)}); {hint}, or pass "
                          f"--download to fetch it into {cache_dir()}")
    files, err = _download(cache_dir())
    if files is None:
        raise ConfigError(f"Fashion-MNIST not found (looked in {', '.join(looked)}) and the {err}; {hint}")
    return read_fashion_files(files)
