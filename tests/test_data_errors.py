"""Data mistakes a user can make end in one ConfigError line (issue 13), never a worker
traceback, a silent download or a wider model; imagefolder subsets, --no-augment and
mid-epoch resume are deterministic."""
from __future__ import annotations

import struct
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

import locallearn.data.idx as idx_mod
from locallearn.data import load_dataset
from locallearn.data.folder import IMAGENET_MEAN, IMAGENET_STD, FolderData
from locallearn.data.idx import FILES
from locallearn.data.subset import stratified_subset
from locallearn.errors import ConfigError

CPU = torch.device("cpu")


# ---- fixtures ----------------------------------------------------------------------------------

def make_folder(root: Path, counts: Sequence[int] = (4, 4, 4), val: Optional[Sequence[int]] = None,
                size: Tuple[int, int] = (12, 14)) -> Path:
    """train/classK/i.png with counts[K] random images (val: 2 per class unless given)."""
    rng = np.random.default_rng(0)
    for split, ns in (("train", counts), ("val", val or [2] * len(counts))):
        for c, n in enumerate(ns):
            d = root / split / f"class{c}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return root


def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg and "Traceback" not in msg, msg
    return msg


def folder_data(root: Path, workers: int, **kw) -> FolderData:
    data = load_dataset("imagefolder", data_dir=str(root), image_size=8, **kw)
    data.workers = workers
    return data


def drain(batches) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    return [(x.clone(), y.clone()) for x, y in batches]


# ---- corrupt / truncated images (lazily, in the loader workers) --------------------------------

def _not_an_image(p: Path) -> None:
    p.write_text("hello, I am not an image\n")


def _truncated_png(p: Path) -> None:
    b = p.read_bytes()
    p.write_bytes(b[: len(b) // 2])


def _truncated_jpeg(p: Path) -> None:
    p.unlink()
    p = p.with_suffix(".jpg")
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (12, 14, 3), dtype=np.uint8)).save(p, quality=90)
    b = p.read_bytes()
    p.write_bytes(b[: len(b) // 3])


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("spoil", [_not_an_image, _truncated_png, _truncated_jpeg],
                         ids=["not-an-image", "truncated-png", "truncated-jpeg"])
def test_bad_training_image_names_the_file(tmp_path: Path, spoil, workers: int) -> None:
    root = make_folder(tmp_path)
    bad = root / "train" / "class1" / "2.png"
    spoil(bad)
    data = folder_data(root, workers)  # lazily: loading the folder does not decode images
    batches = data.train_batches(4, torch.Generator().manual_seed(0), CPU)
    with pytest.raises(ConfigError) as e:
        drain(batches)
    msg = one_line(e)
    assert str(bad.parent / "2.") in msg and "cannot read image" in msg


@pytest.mark.parametrize("workers", [0, 2])
def test_bad_val_image_names_the_file(tmp_path: Path, workers: int) -> None:
    root = make_folder(tmp_path)
    bad = root / "val" / "class2" / "1.png"
    _not_an_image(bad)
    data = folder_data(root, workers)
    drain(data.train_batches(4, torch.Generator().manual_seed(0), CPU))  # train/ is fine
    with pytest.raises(ConfigError) as e:
        drain(data.test_batches(3, CPU))
    assert str(bad) in one_line(e)


def test_empty_class_folder(tmp_path: Path) -> None:
    root = make_folder(tmp_path)
    for p in (root / "train" / "class1").iterdir():
        p.unlink()
    with pytest.raises(ConfigError) as e:
        load_dataset("imagefolder", data_dir=str(root))
    msg = one_line(e)
    assert str(root / "train") in msg and "class1" in msg


def test_no_class_folders(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    (tmp_path / "val").mkdir()
    with pytest.raises(ConfigError) as e:
        load_dataset("imagefolder", data_dir=str(tmp_path))
    assert str(tmp_path / "train") in one_line(e)


def test_one_class_folder(tmp_path: Path) -> None:
    root = make_folder(tmp_path, counts=(4,))
    with pytest.raises(ConfigError, match="only one class folder.*class0.*at least 2"):
        load_dataset("imagefolder", data_dir=str(root))


def test_train_val_class_mismatch(tmp_path: Path) -> None:
    root = make_folder(tmp_path)
    (root / "val" / "class2").rename(root / "val" / "other")
    with pytest.raises(ConfigError, match=r"only in train/: \['class2'\], only in val/: \['other'\]"):
        load_dataset("imagefolder", data_dir=str(root))


@pytest.mark.parametrize("size", [0, -5, 2.5, True])
def test_folder_bad_image_size(tmp_path: Path, size: object) -> None:
    root = make_folder(tmp_path)
    with pytest.raises(ConfigError, match="image_size must be an integer >= 1"):
        load_dataset("imagefolder", data_dir=str(root), image_size=size)  # type: ignore[arg-type]


def test_cli_bad_image_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from locallearn.cli import main

    root = make_folder(tmp_path / "f")
    bad = root / "train" / "class0" / "1.png"
    _truncated_png(bad)
    rc = main(["train", "--model", "resnet20", "--method", "e2e", "--dataset", "imagefolder",
               "--data-dir", str(root), "--image-size", "8", "--batch-size", "4", "--epochs", "1",
               "--device", "cpu", "--no-progress", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and str(bad) in err, err


# ---- labels and classes ------------------------------------------------------------------------

def idx_bytes(a: np.ndarray) -> bytes:
    return struct.pack(">I", 0x0800 | a.ndim) + struct.pack(f">{a.ndim}I", *a.shape) + a.astype(np.uint8).tobytes()


def write_fashion(d: Path, train_y: Optional[np.ndarray] = None, test_y: Optional[np.ndarray] = None,
                  train_x: Optional[np.ndarray] = None, test_x: Optional[np.ndarray] = None) -> Path:
    rng = np.random.default_rng(0)
    arrays = (
        rng.integers(0, 256, (20, 28, 28)) if train_x is None else train_x,
        np.arange(20) % 10 if train_y is None else train_y,
        rng.integers(0, 256, (10, 28, 28)) if test_x is None else test_x,
        np.arange(10) % 10 if test_y is None else test_y,
    )
    d.mkdir(parents=True, exist_ok=True)
    for name, a in zip(FILES, arrays):
        (d / name).write_bytes(idx_bytes(np.asarray(a)))
    return d


def test_idx_label_out_of_range_is_refused(tmp_path: Path) -> None:
    y = np.arange(20) % 10
    y[13] = 200
    d = write_fashion(tmp_path, train_y=y)
    with pytest.raises(ConfigError) as e:  # before: a 201-class model, silently
        load_dataset("fashion-mnist", data_dir=str(d))
    msg = one_line(e)
    assert str(d / FILES[1]) in msg and "label 200" in msg and "sample 13" in msg and "10 classes" in msg


def test_idx_test_label_10_is_refused(tmp_path: Path) -> None:
    d = write_fashion(tmp_path, test_y=np.full(10, 10))
    with pytest.raises(ConfigError, match=f"{FILES[3]} has label 10 .*10 such labels"):
        load_dataset("fashion-mnist", data_dir=str(d))


def test_idx_one_class_is_refused(tmp_path: Path) -> None:
    d = write_fashion(tmp_path, train_y=np.full(20, 3))
    with pytest.raises(ConfigError, match=f"{FILES[1]}: every training label is 3.*at least 2 classes"):
        load_dataset("fashion-mnist", data_dir=str(d))


def test_idx_sizes_must_match(tmp_path: Path) -> None:
    d = write_fashion(tmp_path, test_x=np.zeros((10, 32, 32)))
    with pytest.raises(ConfigError, match=r"\(28, 28\) images but .*t10k-images-idx3-ubyte \(32, 32\)"):
        load_dataset("fashion-mnist", data_dir=str(d))


def test_idx_empty_images_file(tmp_path: Path) -> None:
    d = write_fashion(tmp_path, train_x=np.zeros((0, 28, 28)), train_y=np.zeros(0))
    with pytest.raises(ConfigError, match=f"{FILES[0]} holds no images"):
        load_dataset("fashion-mnist", data_dir=str(d))


def test_idx_huge_header_dims(tmp_path: Path) -> None:
    d = write_fashion(tmp_path)
    (d / FILES[0]).write_bytes(struct.pack(">IIII", 2051, 2 ** 32 - 1, 2 ** 32 - 1, 2 ** 32 - 1) + b"\0" * 8)
    with pytest.raises(ConfigError, match="truncated or corrupt"):
        load_dataset("fashion-mnist", data_dir=str(d))


class FakeCifar:
    """Stands in for torchvision's CIFAR10: records the download flag, never downloads."""

    calls: List[Tuple[str, bool]] = []
    labels: List[int] = [0, 1, 2, 3]

    def __init__(self, root: str, train: bool = True, download: bool = False) -> None:
        FakeCifar.calls.append((root, download))
        if not download:
            raise RuntimeError("Dataset not found or corrupted. You can use download=True to download it")
        self.data = np.zeros((len(self.labels), 4, 4, 3), dtype=np.uint8)
        self.targets = list(self.labels)


@pytest.fixture
def fake_cifar(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    import torchvision.datasets

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCifar)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    FakeCifar.calls, FakeCifar.labels = [], [0, 1, 2, 3]
    return FakeCifar


def test_torchvision_label_out_of_range(fake_cifar, tmp_path: Path) -> None:
    fake_cifar.labels = [0, 1, 12, 3]
    with pytest.raises(ConfigError, match=r"cifar10 training split in .* has label 12 \(sample 2"):
        load_dataset("cifar10", data_dir=str(tmp_path), download=True)


@pytest.mark.parametrize("spec,match", [
    ("1x8x8:1", "K=1 classes, classification needs K >= 2"),
    ("0x8x8", "sizes must be >= 1"),
    ("3x100000x100000", "too large"),
    ("3x8x8:2000000000", "too large"),
])
def test_synthetic_bad_specs(spec: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_dataset(f"synthetic:{spec}")


def test_synthetic_too_many_samples() -> None:
    # before: a 2.4 TB allocation (RuntimeError traceback) or the OOM killer
    with pytest.raises(ConfigError, match="200000000 training samples of 3x32x32 are too many"):
        load_dataset("synthetic:3x32x32", limit_train=200_000_000)


# ---- no network unless download=True -----------------------------------------------------------

def test_cifar_missing_without_download_does_not_download(fake_cifar, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:  # before: a silent download into the cache dir
        load_dataset("cifar10")
    msg = one_line(e)
    cache = str(tmp_path / "cache" / "locallearn")
    assert cache in msg and "--download" in msg and "--data-dir" in msg and "download=True" not in msg
    assert fake_cifar.calls and not any(dl for _, dl in fake_cifar.calls)


def test_cifar_download_when_asked(fake_cifar, tmp_path: Path) -> None:
    d = load_dataset("cifar10", download=True)
    assert d.num_classes == 10 and d.source == str(tmp_path / "cache" / "locallearn")
    assert all(dl for _, dl in fake_cifar.calls)


@pytest.fixture
def no_fashion(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> List[str]:
    """No Fashion-MNIST anywhere; _download records its calls instead of using the network."""
    monkeypatch.delenv("LOCALLEARN_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(idx_mod, "DEBIAN_DIR", str(tmp_path / "no-debian"))
    calls: List[str] = []

    def fake_download(root: str):
        calls.append(root)
        return idx_mod.find_idx_files(str(write_fashion(Path(root) / "FashionMNIST" / "raw"))), ""

    monkeypatch.setattr(idx_mod, "_download", fake_download)
    return calls


def test_fashion_missing_without_download(no_fashion: List[str], tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        load_dataset("fashion-mnist")
    msg = one_line(e)
    assert no_fashion == []  # the network was not touched
    for part in (str(tmp_path / "no-debian"), "apt-get install dataset-fashion-mnist", "$LOCALLEARN_DATA",
                 "--data-dir", "--download", str(tmp_path / "cache" / "locallearn")):
        assert part in msg, part


def test_fashion_download_when_asked(no_fashion: List[str], tmp_path: Path) -> None:
    d = load_dataset("fashion-mnist", download=True)
    assert no_fashion == [str(tmp_path / "cache" / "locallearn")] and d.num_train == 20


# ---- --data-dir that is a file or missing ------------------------------------------------------

@pytest.mark.parametrize("name", ["fashion-mnist", "cifar10", "imagefolder"])
@pytest.mark.parametrize("download", [False, True])
def test_data_dir_is_a_file(tmp_path: Path, name: str, download: bool) -> None:
    f = tmp_path / "afile"
    f.write_text("x")
    with pytest.raises(ConfigError, match=f"--data-dir {f} is a file"):
        load_dataset(name, data_dir=str(f), download=download)


@pytest.mark.parametrize("name", ["fashion-mnist", "cifar10", "imagefolder"])
def test_data_dir_missing(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError, match=f"--data-dir {tmp_path / 'nope'} does not exist"):
        load_dataset(name, data_dir=str(tmp_path / "nope"))


def test_name_not_a_string() -> None:
    with pytest.raises(ConfigError, match="dataset name must be a string.*synthetic"):
        load_dataset(None)  # type: ignore[arg-type]


# ---- stratified, seeded --limit-train / --limit-test on imagefolder ----------------------------

def test_stratified_subset_proportions() -> None:
    labels = [0] * 12 + [1] * 4 + [2] * 4 + [3] * 4
    keep = stratified_subset(labels, 12, seed=0)
    assert np.bincount([labels[i] for i in keep]).tolist() == [6, 2, 2, 2]
    keep4 = stratified_subset(labels, 4, seed=0)
    assert sorted(labels[i] for i in keep4) == [0, 1, 2, 3]  # every class, not the first one
    assert stratified_subset(labels, 12, seed=0) == keep  # deterministic
    assert any(stratified_subset(labels, 12, seed=s) != keep for s in range(1, 4))  # seeded
    assert stratified_subset(labels, 100, seed=0) == list(range(len(labels)))
    assert len(set(stratified_subset(labels, 2, seed=5))) == 2


@pytest.mark.parametrize("n", [1, 3, 7, 23])
def test_stratified_subset_sizes(n: int) -> None:
    labels = [0] * 20 + [1] * 2 + [2] * 1
    keep = stratified_subset(labels, n, seed=3)
    assert len(keep) == n == len(set(keep))
    if n >= 3:
        assert set(labels[i] for i in keep) == {0, 1, 2}


def test_folder_limit_train_is_stratified_and_seeded(tmp_path: Path) -> None:
    root = make_folder(tmp_path, counts=(6, 6, 6, 6))
    labels = lambda d: sorted(y for _, y in d.train_samples)  # noqa: E731
    d0 = load_dataset("imagefolder", data_dir=str(root), image_size=8, limit_train=4)
    assert labels(d0) == [0, 1, 2, 3] and d0.num_train == 4  # before: [0, 0, 0, 0]
    again = load_dataset("imagefolder", data_dir=str(root), image_size=8, limit_train=4)
    assert again.train_samples == d0.train_samples
    others = [load_dataset("imagefolder", data_dir=str(root), image_size=8, limit_train=4, seed=s)
              for s in (1, 2, 3)]
    assert any(o.train_samples != d0.train_samples for o in others)
    assert all(labels(o) == [0, 1, 2, 3] for o in others)


def test_folder_limit_test_is_stratified_and_seed_free(tmp_path: Path) -> None:
    root = make_folder(tmp_path, counts=(2, 2, 2), val=(5, 5, 5))
    a = load_dataset("imagefolder", data_dir=str(root), image_size=8, limit_test=6, seed=0)
    b = load_dataset("imagefolder", data_dir=str(root), image_size=8, limit_test=6, seed=9)
    assert sorted(y for _, y in a.test_samples) == [0, 0, 1, 1, 2, 2]
    assert a.test_samples == b.test_samples


# ---- --no-augment ------------------------------------------------------------------------------

def epoch_order(state: torch.Tensor, n: int) -> List[int]:
    """The sample order FolderBatches draws from a generator in ``state`` (seed, then order)."""
    g = torch.Generator()
    g.set_state(state)
    torch.randint(0, 2 ** 31 - 1, (1,), generator=g)
    return torch.randperm(n, generator=g).tolist()


@pytest.mark.parametrize("augment", [False, True])
def test_no_augment_uses_the_eval_transform(tmp_path: Path, augment: bool) -> None:
    root = make_folder(tmp_path, counts=(3, 3), size=(20, 13))
    data = folder_data(root, workers=0)
    g = torch.Generator().manual_seed(4)
    order = epoch_order(g.get_state(), data.num_train)
    (x, y), = drain(data.train_batches(6, g, CPU, augment=augment))
    samples = sorted((str(p), int(p.parent.name[-1])) for p in (root / "train").glob("*/*.png"))
    eval_tf = transforms.Compose([transforms.Resize(9), transforms.CenterCrop(8), transforms.ToTensor(),
                                  transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    want = torch.stack([eval_tf(Image.open(samples[i][0]).convert("RGB")) for i in order])
    assert y.tolist() == [samples[i][1] for i in order]
    assert torch.equal(x, want) is (not augment)  # before: always augmented


# ---- exact mid-epoch resume --------------------------------------------------------------------

@pytest.mark.parametrize("workers", [0, 2])
def test_folder_resume_mid_epoch_is_bit_exact(tmp_path: Path, workers: int) -> None:
    root = make_folder(tmp_path, counts=(5, 5, 6), size=(23, 17))
    data = folder_data(root, workers)
    g = torch.Generator().manual_seed(11)
    batches = data.train_batches(4, g, CPU)
    torch.manual_seed(0)
    global_rng = torch.get_rng_state()
    state = g.get_state()
    full = drain(batches)
    assert torch.equal(torch.get_rng_state(), global_rng)  # the caller's RNG is left alone
    g.set_state(state)
    resumed = drain(batches.iter_from(2))
    assert len(full) == 4 and len(resumed) == 2
    for (xa, ya), (xb, yb) in zip(full[2:], resumed):
        assert torch.equal(ya, yb) and torch.equal(xa, xb)
    # the augmentation is alive: a sample's crop depends on the epoch's seed, not only its index
    ds = batches.dataset
    assert all(torch.equal(ds.for_epoch(1)[i][0], ds.for_epoch(1)[i][0]) for i in range(4))
    assert any(not torch.equal(ds.for_epoch(1)[i][0], ds.for_epoch(2)[i][0]) for i in range(4))


def test_folder_workers_do_not_change_batches(tmp_path: Path) -> None:
    root = make_folder(tmp_path, counts=(4, 4), size=(15, 18))
    out = []
    for workers in (0, 2):
        data = folder_data(root, workers)
        out.append(drain(data.train_batches(4, torch.Generator().manual_seed(2), CPU)))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(*out))


def test_ddp_shards_are_slices_of_the_single_process_batch(tmp_path: Path) -> None:
    root = make_folder(tmp_path, counts=(4, 4), size=(15, 18))
    data = folder_data(root, 0)
    whole = drain(data.train_batches(4, torch.Generator().manual_seed(2), CPU))
    halves = [drain(data.train_batches(4, torch.Generator().manual_seed(2), CPU, shard=(r, 2)))
              for r in (0, 1)]
    for i, (x, _) in enumerate(whole):
        assert torch.equal(x, torch.cat([halves[0][i][0], halves[1][i][0]]))
