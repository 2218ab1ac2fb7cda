"""DenseData (data/dense.py) and the segmentation sets of load_dataset (data/seg_data.py)."""
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from locallearn.data import DenseData, list_datasets, load_dataset
from locallearn.data import idx as idx_mod
from locallearn.data.base import ImageData
from locallearn.data.dense import train_transform
from locallearn.data.folder import FolderData
from locallearn.errors import ConfigError

CPU = torch.device("cpu")
LABELME_VOC = Path("/usr/share/doc/labelme-examples/examples/semantic_segmentation/data_dataset_voc")


def block_data(n=12, size=32, classes=5, block=8, seed=0, workers=0):
    """Masks of random block x block squares of ids 0..classes-1; image = (mask + 1) * 20, so the
    image encodes the mask and a padded image pixel (0) can never be a real one."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, classes, (n, size // block, size // block), generator=g, dtype=torch.uint8)
    masks = coarse.repeat_interleave(block, 1).repeat_interleave(block, 2)
    images = ((masks + 1) * 20).unsqueeze(1)
    return DenseData("blocks", images, masks, images[:5].clone(), masks[:5].clone(), num_classes=classes,
                     source="test", workers=workers)


def unnormalise(x, data):
    mean = torch.tensor(data.mean).view(1, -1, 1, 1)
    std = torch.tensor(data.std).view(1, -1, 1, 1)
    return (x * std + mean).mul(255).round().to(torch.int64)


def epoch(batches, start=0):
    return list(batches.iter_from(start))


def assert_shards_concatenate(d, g, state, full, batch=4):
    """Two ranks' slices of every batch, drawn from the same generator state, make up the
    single-process batch (images and targets)."""
    parts = []
    for rank in range(2):
        g.set_state(state)
        parts.append(epoch(d.train_batches(batch, g, CPU, shard=(rank, 2))))
    for i, (x, y) in enumerate(full):
        assert torch.equal(torch.cat([parts[0][i][0], parts[1][i][0]]), x)
        assert torch.equal(torch.cat([parts[0][i][1], parts[1][i][1]]), y)


def test_batches_shapes_dtypes_and_normalisation():
    d = block_data()
    assert d.task == "segmentation" and d.num_classes == 5 and d.in_chans == 1 and d.image_size == (32, 32)
    assert d.num_train == 12 and d.class_names == ("0", "1", "2", "3", "4")
    assert ImageData.task == "classification" and FolderData.task == "classification"
    (x, y), = epoch(d.test_batches(8, CPU))[:1]
    assert x.dtype == torch.float32 and x.shape == (5, 1, 32, 32) and y.dtype == torch.int64 and y.shape == (5, 32, 32)
    ref = (d.test_x.float() / 255 - d.mean[0]) / d.std[0]
    assert torch.allclose(x, ref, atol=1e-6) and torch.equal(y, d.test_y.long())
    g = torch.Generator().manual_seed(0)
    tr = d.train_batches(4, g, CPU, channels_last=True)
    assert len(tr) == 3
    x, y = next(iter(tr))
    assert x.shape == (4, 1, 32, 32) and x.is_contiguous(memory_format=torch.channels_last) and y.shape == (4, 32, 32)
    # without augmentation: the stored samples, in the order drawn from the generator
    xs = torch.cat([b[0] for b in epoch(d.train_batches(4, torch.Generator().manual_seed(1), CPU, augment=False))])
    assert sorted(unnormalise(xs, d).sum((1, 2, 3)).tolist()) == sorted(d.train_x.long().sum((1, 2, 3)).tolist())


def test_augmentation_moves_the_mask_with_the_image():
    d = block_data(n=24, size=48)
    flips = pads = checked = real = 0
    for seed in range(3):
        for x, y in epoch(d.train_batches(8, torch.Generator().manual_seed(seed), CPU)):
            img = unnormalise(x, d)[:, 0]
            pad = y == 255
            assert torch.equal(pad, img == 0)  # padding: mask ignore exactly where the image is 0
            # away from block edges (5x5 neighbourhood of one id, inside the crop: a block cut off
            # by the crop still blends into its edge pixels) the image encodes the mask exactly
            m = y.float().unsqueeze(1)
            flat = (F.max_pool2d(m, 5, 1) == -F.max_pool2d(-m, 5, 1))[:, 0]
            inner = F.pad(flat, (2, 2, 2, 2)) & ~pad
            checked += int(inner.sum())
            real += int((~pad).sum())
            assert (img[inner] - 20 * (y[inner] + 1)).abs().max() <= 1
            pads += int(pad.any((1, 2)).sum())
            flips += int((img[:, :, 0] != img[:, :, -1]).any(1).sum())
    assert checked > 0.3 * real
    assert pads > 5 and flips > 5  # the draws did rescale below 1 and crop / flip


def test_v2_pairing_is_exact_without_rescale():
    d = block_data(n=16, block=4)
    tr = d.train_batches(16, torch.Generator().manual_seed(3), CPU)
    tr.transform = train_transform(d.image_size, scale=(1.0, 1.0))  # crop + flip only: no resampling
    x, y = next(iter(tr))
    img = unnormalise(x, d)[:, 0]
    assert torch.equal(img, (y + 1) * 20) and not bool((y == 255).any())


def test_deterministic_resumable_and_sharded():
    d = block_data(n=20)
    g = torch.Generator().manual_seed(5)
    state = g.get_state()
    rng = torch.get_rng_state()
    full = epoch(d.train_batches(4, g, CPU))
    assert torch.equal(torch.get_rng_state(), rng)  # the global RNG is left alone
    after = g.get_state()
    g.set_state(state)
    again = epoch(d.train_batches(4, g, CPU))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(full, again))
    assert torch.equal(g.get_state(), after)  # a full pass and a resumed one consume the same draws
    g.set_state(state)
    tail = epoch(d.train_batches(4, g, CPU), start=3)
    assert torch.equal(g.get_state(), after) and len(tail) == len(full) - 3
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(full[3:], tail))
    assert_shards_concatenate(d, g, state, full)
    g.set_state(after)
    assert not torch.equal(epoch(d.train_batches(4, g, CPU))[0][0], full[0][0])  # the next epoch differs


def test_worker_processes_give_the_same_batches():
    d0, d1 = block_data(n=8), block_data(n=8, workers=1)
    a = epoch(d0.train_batches(4, torch.Generator().manual_seed(2), CPU))
    b = epoch(d1.train_batches(4, torch.Generator().manual_seed(2), CPU))
    assert all(torch.equal(u[0], v[0]) and torch.equal(u[1], v[1]) for u, v in zip(a, b))


def test_bad_masks_and_shapes_are_one_line_errors():
    d = block_data()
    bad = d.train_y.clone()
    bad[3, 0, 0], bad[5, 1, 1] = 7, 9
    with pytest.raises(ConfigError, match=r"mask ids \[7, 9\] outside the 5 classes \(ids 0..4, 255 = ignore\)"):
        DenseData("x", d.train_x, bad, d.test_x, d.test_y, num_classes=5, source="s")
    with pytest.raises(ConfigError, match=r"mask ids \[-1\]"):
        DenseData("x", d.train_x, d.train_y.long() - 1, d.test_x, d.test_y, num_classes=5, source="s")
    ok = d.train_y.clone()
    ok[0, 0, 0] = 255  # the ignore value is a valid mask id
    DenseData("x", d.train_x, ok, d.test_x, d.test_y, num_classes=5, source="s")
    with pytest.raises(ConfigError, match="each mask must have its image's height and width"):
        DenseData("x", d.train_x, d.train_y[:, :, :16], d.test_x, d.test_y, num_classes=5, source="s")
    with pytest.raises(ConfigError, match="must match"):
        DenseData("x", d.train_x, d.train_y, d.test_x[:, :, :16, :16], d.test_y[:, :16, :16], num_classes=5,
                  source="s")
    with pytest.raises(ConfigError, match="num_classes must be an integer in 2..255"):
        DenseData("x", d.train_x, d.train_y, d.test_x, d.test_y, num_classes=300, source="s")
    with pytest.raises(ConfigError, match="uint8"):
        DenseData("x", d.train_x.float(), d.train_y, d.test_x, d.test_y, num_classes=5, source="s")
    with pytest.raises(ConfigError) as err:
        DenseData("x", d.train_x, bad, d.test_x, d.test_y, num_classes=5, source="s")
    assert "\n" not in str(err.value)


def test_registered_and_image_size_checks(tmp_path):
    assert {"fmnist-scenes", "voc-seg", "cityscapes"} <= set(list_datasets())
    for size in (16, 1000, "64", True, 64.0):
        with pytest.raises(ConfigError, match=r"--image-size .* not valid for fmnist-scenes: .*32..512"):
            load_dataset("fmnist-scenes", image_size=size)
    with pytest.raises(ConfigError, match="not valid for voc-seg"):
        load_dataset("voc-seg", str(tmp_path), image_size=8)
    with pytest.raises(ConfigError, match=r"fmnist-scenes:seed=x: seed must be an integer"):
        load_dataset("fmnist-scenes:seed=x")
    with pytest.raises(ConfigError, match=r"expected seed=N \(e.g. fmnist-scenes:seed=3\)"):
        load_dataset("fmnist-scenes:size=3")
    with pytest.raises(ConfigError, match="voc-seg needs --data-dir"):
        load_dataset("voc-seg")
    with pytest.raises(ConfigError, match="does not exist"):
        load_dataset("cityscapes", str(tmp_path / "nowhere"), download=True)  # nothing to download
    with pytest.raises(ConfigError, match="holds no VOCdevkit"):
        load_dataset("voc-seg", str(tmp_path))


def _fmnist_or_skip():
    try:
        idx_mod.load_fashion_mnist(None, None, False, None, None)
    except ConfigError:
        pytest.skip("Fashion-MNIST not installed")


def test_fmnist_scenes_fixed_across_training_seeds():
    _fmnist_or_skip()
    from locallearn.data.scenes import fmnist_scenes

    a = load_dataset("fmnist-scenes", limit_train=40, limit_test=12, image_size=64, seed=1)
    b = load_dataset("fmnist-scenes", limit_train=40, limit_test=12, image_size=64, seed=2)
    assert isinstance(a, DenseData) and a.task == "segmentation" and a.num_classes == 11 and a.in_chans == 1
    assert a.train_x.shape == (40, 1, 64, 64) and a.test_y.shape == (12, 64, 64) and a.num_train == 40
    assert a.class_names[0] == "background" and a.class_names[1] == "T-shirt/top"
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.train_y, b.train_y) and torch.equal(a.test_x, b.test_x)
    assert int(a.train_y.max()) <= 10 and float((a.train_y > 0).float().mean()) > 0.05
    c = load_dataset("fmnist-scenes:seed=3", limit_train=40, limit_test=12, image_size=64)
    assert c.name == "fmnist-scenes:seed=3" and not torch.equal(a.train_x, c.train_x)
    # the loader's data is fmnist_scenes' at seed 0: train scenes from train items only, test from test items
    train, test = fmnist_scenes(None, 40, 12, size=64, seed=0, scale=(0.375, 1.25))
    assert torch.equal(a.train_x, train.images) and torch.equal(a.test_y, test.masks)
    assert train.config["split"] == "train" and test.config["split"] == "test"
    n_test_items = len(idx_mod.load_fashion_mnist(None, None, False, None, None).test_y)
    assert max(int(i.max()) for i in train.item_ids) >= n_test_items  # indices of the 60000-item train pool


def _palette_png(ids, path):
    im = Image.fromarray(np.asarray(ids, dtype=np.uint8))
    im.putpalette([v for c in range(256) for v in (c, 255 - c, (7 * c) % 256)])
    im.save(path)


def make_voc(root, splits, sizes):
    """VOCdevkit/VOC2012 with one JPEG + palette mask per name; sizes name -> (h, w); splits name -> names."""
    voc = Path(root) / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    for i, (name, (h, w)) in enumerate(sizes.items()):
        ids = np.zeros((h, w), np.uint8)
        ids[h // 2:, :] = 15
        ids[:, w // 2:] = 3 + i
        Image.fromarray(np.full((h, w, 3), 40 * (i + 1), np.uint8)).save(voc / "JPEGImages" / f"{name}.jpg")
        _palette_png(ids, voc / "SegmentationClass" / f"{name}.png")
    for split, names in splits.items():
        (voc / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("".join(f"{n}\n" for n in names))
    return voc


def test_voc_seg_letterboxed(tmp_path):
    voc = make_voc(tmp_path, {"train": ["a", "b", "c"], "val": ["d"]},
                   {"a": (20, 40), "b": (40, 20), "c": (16, 16), "d": (30, 30)})
    for data_dir in (tmp_path, tmp_path / "VOCdevkit", voc):
        d = load_dataset("voc-seg", str(data_dir), image_size=16)
        assert d.train_x.shape == (3, 3, 16, 16) and d.test_y.shape == (1, 16, 16) and d.num_classes == 21
    assert d.class_names[15] == "person" and d.config["fit"] == "letterbox"
    # a (20 x 40) fits as 8 x 16: rows 8.. are padding (ignore, image 0); ids kept by nearest resizing
    assert bool((d.train_y[0, 8:] == 255).all()) and bool((d.train_x[0, :, 8:] == 0).all())
    assert d.train_y[0, :4, :8].unique().tolist() == [0] and d.train_y[0, :4, 8:].unique().tolist() == [3]
    assert d.train_y[0, 4:8, :8].unique().tolist() == [15]
    assert bool((d.train_y[1, :, 8:] == 255).all())  # b (40 x 20): columns 8.. padded
    assert int((d.train_y[2] == 255).sum()) == 0 and int(d.train_x[2].float().mean().round()) == 120
    one = load_dataset("voc-seg", str(tmp_path), image_size=16, limit_train=1)
    assert one.num_train == 1 and torch.equal(one.train_x[0], d.train_x[0])
    x, y = next(iter(d.train_batches(2, torch.Generator().manual_seed(0), CPU)))
    assert x.shape == (2, 3, 16, 16) and y.dtype == torch.int64


def test_voc_seg_bad_files(tmp_path):
    voc = make_voc(tmp_path, {"train": ["a"], "val": ["a"]}, {"a": (8, 8)})
    _palette_png(np.full((8, 8), 40), voc / "SegmentationClass" / "a.png")
    with pytest.raises(ConfigError, match=r"a\.png has class ids \[40\] outside the 21 classes"):
        load_dataset("voc-seg", str(tmp_path), image_size=16)
    _palette_png(np.zeros((6, 8)), voc / "SegmentationClass" / "a.png")
    with pytest.raises(ConfigError, match=r"image .*a\.jpg is 8x8 but its mask .*a\.png is 8x6"):
        load_dataset("voc-seg", str(tmp_path), image_size=16)
    os.remove(voc / "ImageSets" / "Segmentation" / "val.txt")
    with pytest.raises(ConfigError, match="split list not found: .*val.txt"):
        load_dataset("voc-seg", str(tmp_path), image_size=16)


def test_cityscapes_two_to_one(tmp_path):
    for split, city in (("train", "aachen"), ("val", "lindau")):
        img_dir, gt_dir = tmp_path / "leftImg8bit" / split / city, tmp_path / "gtFine" / split / city
        img_dir.mkdir(parents=True)
        gt_dir.mkdir(parents=True)
        ids = np.full((16, 32), 7, np.uint8)  # road
        ids[:, 16:] = 26  # car
        Image.fromarray(np.zeros((16, 32, 3), np.uint8)).save(img_dir / f"{city}_000000_000019_leftImg8bit.png")
        Image.fromarray(ids).save(gt_dir / f"{city}_000000_000019_gtFine_labelIds.png")
    d = load_dataset("cityscapes", str(tmp_path), image_size=16)
    assert d.train_x.shape == (1, 3, 16, 32) and d.image_size == (16, 32) and d.num_classes == 19
    assert d.train_y[0, :, :16].unique().tolist() == [0] and d.train_y[0, :, 16:].unique().tolist() == [13]


@pytest.mark.skipif(not LABELME_VOC.is_dir(), reason="Debian package labelme-examples not installed")
def test_real_voc_files_from_labelme_examples(tmp_path):
    names = sorted(p.stem for p in (LABELME_VOC / "SegmentationClassPNG").glob("*.png"))
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True)
    for n in names:
        (voc / "JPEGImages" / f"{n}.jpg").symlink_to(LABELME_VOC / "JPEGImages" / f"{n}.jpg")
        (voc / "SegmentationClass" / f"{n}.png").symlink_to(LABELME_VOC / "SegmentationClassPNG" / f"{n}.png")
    for split in ("train", "val"):
        (voc / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("".join(f"{n}\n" for n in names))
    d = load_dataset("voc-seg", str(voc), image_size=64)
    assert d.train_x.shape == (len(names), 3, 64, 64) and torch.equal(d.train_y, d.test_y)
    for i, n in enumerate(names):
        ref = set(np.unique(np.load(LABELME_VOC / "SegmentationClass" / f"{n}.npy", allow_pickle=False)).tolist())
        ref = {255 if v == -1 else v for v in ref}
        got = set(d.train_y[i].unique().tolist())
        assert got - {255} <= ref and len(got - {0, 255}) >= 1  # objects survive the resize
    x, y = next(iter(d.train_batches(len(names), torch.Generator().manual_seed(0), CPU)))
    assert x.shape == (len(names), 3, 64, 64) and set(y.unique().tolist()) <= set(range(21)) | {255}
