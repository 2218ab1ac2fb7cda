"""ImageNet-layout folders (``train/<class>/*``, ``val/<class>/*``) streamed from disk."""
from __future__ import annotations

from pathlib import Path
import signal
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, default_collate
from torchvision import transforms
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from ..errors import ConfigError
from .subset import stratified_subset


def ignore_stop_signals(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: a worker ignores SIGINT / SIGTERM, so a signal sent to
    the whole process group (``kill -- -PGID``, ``pkill -f``) reaches only the trainer, which
    finishes its step, checkpoints and shuts the workers down itself. A worker still exits
    when the trainer dies (torch's watchdog)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def epoch_loader(ds: Dataset, batches: List[List[int]], workers: int, collate_fn: Callable,
                 seed: int, device: torch.device) -> DataLoader:
    """One epoch's DataLoader over fixed index batches, its workers seeded from ``seed``
    (a private generator, so the global RNG is not drawn) and deaf to stop signals."""
    return DataLoader(ds, batch_sampler=batches, num_workers=workers, collate_fn=collate_fn,
                      generator=torch.Generator().manual_seed(seed), worker_init_fn=ignore_stop_signals,
                      pin_memory=device.type == "cuda", persistent_workers=False)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TEST_SUBSET_SEED = 0  # --limit-test: the same val subset for every --seed, so runs compare

Sample = Tuple[str, int]  # (path, class index), as torchvision's make_dataset returns them


class BadImage:
    """Stands for a sample whose file could not be decoded; travels back from a DataLoader
    worker through ``collate`` like a batch, so the error arrives as data, not as a worker
    traceback, and the main process turns it into one ConfigError naming the file."""

    def __init__(self, path: str, reason: str) -> None:
        self.path, self.reason = path, reason

    def error(self) -> ConfigError:
        return ConfigError(f"imagefolder: cannot read image {self.path} ({self.reason}); "
                           "remove or replace the file")


def collate(batch: List[Tuple[Any, int]]) -> Any:
    """default_collate, or the first BadImage of the batch."""
    for x, _ in batch:
        if isinstance(x, BadImage):
            return x
    return default_collate(batch)


def sample_seed(epoch_seed: int, index: int) -> int:
    """A well-mixed 64-bit seed for sample ``index`` of an epoch (splitmix64 of both).

    torch's CPU generator keeps only the low 32 bits of a seed, so they must depend on
    every bit of (epoch_seed, index): neighbouring samples get unrelated streams.
    """
    z = (epoch_seed * 0x9E3779B97F4A7C15 + index + 1) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return z ^ (z >> 31)


class FolderImages(Dataset):
    """(path, label) samples decoded with PIL and transformed; bad files become ``BadImage``.

    With ``epoch_seed`` set, sample i's random transform draws from a CPU RNG seeded by
    ``sample_seed(epoch_seed, i)``, so the result depends only on (epoch, sample), not on
    which worker loads it or when: a mid-epoch resume rebuilds the very same batches.
    """

    def __init__(self, samples: Sequence[Sample], transform: Callable[[Image.Image], torch.Tensor],
                 random: bool, epoch_seed: Optional[int] = None) -> None:
        self.samples, self.transform, self.random = samples, transform, random
        self.epoch_seed = epoch_seed

    def __len__(self) -> int:
        return len(self.samples)

    def for_epoch(self, seed: int) -> "FolderImages":
        return FolderImages(self.samples, self.transform, self.random, seed)

    def __getitem__(self, i: int) -> Tuple[Any, int]:
        path, label = self.samples[i]
        try:
            with Image.open(path) as im:
                img = im.convert("RGB")  # decodes now: a truncated file fails here
            if self.random and self.epoch_seed is not None:
                # torchvision's random transforms draw from the global CPU generator; fork it
                # so the caller's stream (the main process when workers=0) is left untouched
                with torch.random.fork_rng(devices=[]):
                    torch.default_generator.manual_seed(sample_seed(self.epoch_seed, i))
                    return self.transform(img), label
            return self.transform(img), label
        except Exception as e:  # noqa: BLE001  PIL raises OSError, SyntaxError, ValueError, ... for bad files
            reason = " ".join(f"{type(e).__name__}: {e}".split())  # one line
            return BadImage(path, reason), label


def _scan(split_dir: Path) -> Tuple[List[str], List[Sample]]:
    """Class names and (path, label) samples of one split, or a one-line ConfigError."""
    try:
        classes, class_to_idx = find_classes(str(split_dir))
        samples = make_dataset(str(split_dir), class_to_idx, extensions=IMG_EXTENSIONS)
    except FileNotFoundError as e:  # no class folder, or a class folder without images
        raise ConfigError(f"imagefolder: {split_dir}: {e}".rstrip()) from None
    except OSError as e:  # unreadable folder
        raise ConfigError(f"imagefolder: cannot read {split_dir}: {e}") from None
    return classes, samples


def _check_image_size(image_size: object) -> int:
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ConfigError(f"image_size must be an integer >= 1 (got {image_size!r})")
    return image_size


class FolderData:
    """Train / val image folders with the standard ImageNet transforms at ``image_size``.

    Same interface as the in-memory ``ImageData`` for training: ``num_classes``,
    ``mean``, ``std``, ``in_chans``, ``image_size``, ``num_train``, ``train_batches``,
    ``test_batches``. ``limit_train`` takes a stratified subset drawn from ``seed`` (each
    class in proportion, at least one sample per class when the limit allows);
    ``limit_test`` a stratified subset that is the same for every seed. Images are
    decoded lazily in the loader workers; a file that does not decode ends the
    iteration with a ConfigError naming it.
    """

    task = "classification"

    def __init__(self, root: str, image_size: int = 224, limit_train: Optional[int] = None,
                 limit_test: Optional[int] = None, workers: int = 2, seed: int = 0) -> None:
        self.name, self.source = "imagefolder", str(root)
        image_size = _check_image_size(image_size)
        base = Path(root)
        for split in ("train", "val"):
            if not (base / split).is_dir():
                raise ConfigError(f"imagefolder: {base / split} does not exist; --data-dir must "
                                  "hold train/<class>/* and val/<class>/* images")
        classes, train = _scan(base / "train")
        val_classes, val = _scan(base / "val")
        if classes != val_classes:
            only_t = sorted(set(classes) - set(val_classes))
            only_v = sorted(set(val_classes) - set(classes))
            raise ConfigError(f"imagefolder: train/ and val/ must hold the same class folders; "
                              f"only in train/: {only_t[:5] or 'none'}, only in val/: "
                              f"{only_v[:5] or 'none'}")
        if len(classes) < 2:
            raise ConfigError(f"imagefolder: {base / 'train'} has only one class folder "
                              f"({classes[0]!r}); classification needs at least 2")
        norm = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)
        self.train_tf = transforms.Compose([
            transforms.RandomResizedCrop(image_size), transforms.RandomHorizontalFlip(),
            transforms.ToTensor(), norm])
        self.eval_tf = transforms.Compose([
            transforms.Resize(int(round(image_size / 0.875))), transforms.CenterCrop(image_size),
            transforms.ToTensor(), norm])
        self.train_samples = _limit(train, limit_train, seed)
        self.test_samples = _limit(val, limit_test, TEST_SUBSET_SEED)
        self.classes = classes
        self.num_classes = len(classes)
        self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD
        self.in_chans, self.image_size = 3, (image_size, image_size)
        self.workers = workers

    @property
    def num_train(self) -> int:
        return len(self.train_samples)

    @property
    def train(self) -> FolderImages:
        """The training samples with the augmenting transform (unseeded: for inspection)."""
        return FolderImages(self.train_samples, self.train_tf, random=True)

    @property
    def test(self) -> FolderImages:
        return FolderImages(self.test_samples, self.eval_tf, random=False)

    def train_batches(self, batch_size: int, generator: torch.Generator, device: torch.device,
                      channels_last: bool = False, shard: Tuple[int, int] = (0, 1),
                      augment: bool = True) -> "FolderBatches":
        """Shuffled training batches; ``augment=False`` uses the eval transform (resize +
        centre crop) instead of the random-resized crop and flip."""
        ds = FolderImages(self.train_samples, self.train_tf if augment else self.eval_tf,
                          random=augment)
        return FolderBatches(ds, batch_size, device, generator=generator, shuffle=True,
                             drop_last=True, channels_last=channels_last, shard=shard,
                             workers=self.workers)

    def test_batches(self, batch_size: int, device: torch.device,
                     channels_last: bool = False) -> "FolderBatches":
        ds = FolderImages(self.test_samples, self.eval_tf, random=False)
        return FolderBatches(ds, batch_size, device, channels_last=channels_last,
                             workers=self.workers)


def _limit(samples: List[Sample], n: Optional[int], seed: int) -> List[Sample]:
    if n is None or n >= len(samples):
        return samples
    keep = stratified_subset([label for _, label in samples], n, seed)
    return [samples[i] for i in keep]


class FolderBatches:
    """Global batches from a shuffled order drawn from ``generator``; with
    ``shard=(rank, world)`` each rank loads its slice of every batch.

    Each epoch draws a seed, then the order, from ``generator``; the random transforms
    are a function of (that seed, sample index) (see ``FolderImages``), so restoring the
    generator state of the epoch's start and calling ``iter_from(b)`` yields exactly the
    batches b, b+1, ... of the uninterrupted epoch, for any number of workers.
    """

    def __init__(self, dataset: Dataset, batch_size: int, device: torch.device, *,
                 generator: Optional[torch.Generator] = None, shuffle: bool = False,
                 drop_last: bool = False, channels_last: bool = False,
                 shard: Tuple[int, int] = (0, 1), workers: int = 2) -> None:
        rank, world = shard
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch size must be an integer >= 1 (got {batch_size!r})")
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
        """The epoch's batches from index ``start`` on, bit-identical to a full pass's."""
        # draw order (part of the resume contract): the epoch's transform seed, then the order
        seed = int(torch.randint(0, 2 ** 31 - 1, (1,), generator=self.generator)) \
            if self.generator is not None else 0
        batches = self._index_batches()[start:]
        ds = self.dataset.for_epoch(seed) if isinstance(self.dataset, FolderImages) else self.dataset
        loader = epoch_loader(ds, batches, self.workers, collate, seed, self.device)
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        for item in loader:
            if isinstance(item, BadImage):
                raise item.error()
            x, y = item
            yield (x.to(self.device, non_blocking=True).contiguous(memory_format=fmt),
                   y.to(self.device, non_blocking=True))
