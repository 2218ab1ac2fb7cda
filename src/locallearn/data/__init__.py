"""Datasets held in memory as uint8 tensors, and one deterministic batch iterator for all of them."""
from __future__ import annotations

from .base import DATASETS, ImageData, RawData, cache_dir, channel_stats, list_datasets, load_dataset
from . import det_sets, idx, seg_data, sr_sets, synthetic, torchvision_sets  # noqa: F401  (register the datasets)
from .sr_data import SRData
from .dense import DenseBatches, DenseData
from .det_data import DetBatches, DetData
from .idx import read_idx, read_idx_images, read_idx_labels
from .loader import Batches, augment, crop_at, crop_pad, flip_where
from .synthetic import make_synthetic, parse_spec

__all__ = [
    "DATASETS", "DenseBatches", "DenseData", "DetBatches", "DetData", "ImageData", "RawData", "SRData", "Batches", "augment", "cache_dir", "channel_stats", "crop_at",
    "crop_pad", "flip_where", "list_datasets", "load_dataset", "make_synthetic", "parse_spec",
    "read_idx", "read_idx_images", "read_idx_labels",
]
