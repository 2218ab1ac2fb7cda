"""ImageNet-layout folders (``train/<class>/*``, ``val/<class>/*``) streamed from disk."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import torch
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision import datasets, transforms

from ..errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class FolderData:
    """Train / val ImageFolders with the standard ImageNet transforms at ``image_size``.

    Same interface as the in-memory ``ImageData`` for training: ``num_classes``,
    ``mean``, ``std``, ``in_chans``, ``image_size``, ``num_train``, ``train_batches``,
    ``test_batches``.
    """

    def __init__(self, root: str, image_size: int = 224, limit_train: Optional[int] = None,
                 limit_test: Optional[int] = None, workers: int = 2) -> None:
        self.name, self.source = "imagefolder", str(root)
        base = Path(root)
        for split in ("train", "val"):
            if not (base / split).is_dir():
                raise ConfigError(f"imagefolder: {base / split} does not exist; --data-dir must "
                                  "hold train/<class>/* and val/<class>/* images")
        norm = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)
        train_tf = transforms.Compose([transforms.RandomResizedCrop(image_size),
                                       transforms.RandomHorizontalFlip(), transforms.ToTensor(), norm])
        val_tf = transforms.Compose([transforms.Resize(int(round(image_size / 0.875))),
                                     transforms.CenterCrop(image_size), transforms.ToTensor(), norm])
        try:
            train = datasets.ImageFolder(str(base / "train"), transform=train_tf)
            val = datasets.ImageFolder(str(base / "val"), transform=val_tf)
        except (FileNotFoundError, RuntimeError) as e:
            raise ConfigError(f"imagefolder: {e}") from None
        if train.classes != val.classes:
            raise ConfigError(f"imagefolder: train/ has {len(train.classes)} classes and val/ "
                              f"{len(val.classes)}; they must be the same folders")
        self.train: Dataset = Subset(train, range(min(limit_train, len(train)))) if limit_train else train
        self.test: Dataset = Subset(val, range(min(limit_test, len(val)))) if limit_test else val
        self.num_classes = len(train.classes)
        self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD
        self.in_chans, self.image_size = 3, (image_size, image_size)
        self.workers = workers

    @property
    def num_train(self) -> int:
        return len(self.train)

    def train_batches(self, batch_size: int, generator: torch.Generator, device: torch.device,
                      channels_last: bool = False, shard: Tuple[int, int] = (0, 1),
                      augment: bool = True) -> "FolderBatches":
        return FolderBatches(self.train, batch_size, device, generator=generator, shuffle=True,
                             drop_last=True, channels_last=channels_last, shard=shard,
                             workers=self.workers)

    def test_batches(self, batch_size: int, device: torch.device,
                     channels_last: bool = False) -> "FolderBatches":
        return FolderBatches(self.test, batch_size, device, channels_last=channels_last,
                             workers=self.workers)


class FolderBatches:
    """Global batches from a shuffled order drawn from ``generator`` (resumable at epoch
    boundaries); with ``shard=(rank, world)`` each rank loads its slice of every batch."""

    def __init__(self, dataset: Dataset, batch_size: int, device: torch.device, *,
                 generator: Optional[torch.Generator] = None, shuffle: bool = False,
                 drop_last: bool = False, channels_last: bool = False,
                 shard: Tuple[int, int] = (0, 1), workers: int = 2) -> None:
        rank, world = shard
        if batch_size % world:
            raise ConfigError(f"batch size {batch_size} must divide evenly over {world} processes")
        self.dataset, self.batch_size, self.device = dataset, batch_size, device
        self.generator, self.shuffle, self.drop_last = generator, shuffle, drop_last
        self.channels_last, self.rank, self.world, self.workers = channels_last, rank, world, workers

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _index_batches(self) -> List[List[int]]:
        n = len(self.dataset)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        per = self.batch_size // self.world
        out = []
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            out.append(idx[self.rank * per:(self.rank + 1) * per].tolist() if self.world > 1
                       else idx.tolist())
        return out

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        return self.iter_from(0)

    def iter_from(self, start: int) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        """The epoch's batches from index ``start`` on. Mid-epoch the sample order resumes
        exactly; the workers' random transforms do not (they follow the worker schedule)."""
        # the workers' augmentation seed is drawn from our generator too: resumable
        seed = int(torch.randint(0, 2 ** 31 - 1, (1,), generator=self.generator)) \
            if self.generator is not None else 0
        loader = DataLoader(self.dataset, batch_sampler=self._index_batches()[start:],
                            num_workers=self.workers, generator=torch.Generator().manual_seed(seed),
                            pin_memory=self.device.type == "cuda",
                            persistent_workers=False)
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        for x, y in loader:
            yield (x.to(self.device, non_blocking=True).contiguous(memory_format=fmt),
                   y.to(self.device, non_blocking=True))
