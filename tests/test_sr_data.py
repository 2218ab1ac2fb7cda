"""Super-resolution data: aligned patch pairs, resumable and sharded epochs, the three loaders."""
import os

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from locallearn.data import SRData, load_dataset
from locallearn.data.sr_data import bicubic_upscale, downscale, mod_crop
from locallearn.data.sr_sets import PHOTOS_TEST, PHOTOS_TRAIN
from locallearn.errors import ConfigError

from test_dense_data import assert_shards_concatenate

CPU = torch.device("cpu")


def block_pair(h: int, w: int, scale: int, seed: int):
    """A random LR image and its HR image, constant over each scale x scale block: LR = HR block mean."""
    g = torch.Generator().manual_seed(seed)
    lr = torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8)
    return lr.repeat_interleave(scale, 1).repeat_interleave(scale, 2), lr


def block_data(scale: int = 2, patch: int = 8, patches: int = 64, sizes=((20, 30), (25, 25), (9, 40))) -> SRData:
    pairs = [block_pair(h, w, scale, i) for i, (h, w) in enumerate(sizes)]
    test = [block_pair(10, 12, scale, 10), block_pair(10, 12, scale, 11), block_pair(8, 12, scale, 12)]
    return SRData("blocks", [p[0] for p in pairs], [p[1] for p in pairs], [p[0] for p in test],
                  [p[1] for p in test], scale=scale, patch=patch, patches=patches, source="memory")


def as_int(t: torch.Tensor) -> torch.Tensor:
    return (t * 255).round()


def epoch(batches, start: int = 0):
    return list(batches.iter_from(start))


@pytest.mark.parametrize("scale", [2, 3])
def test_patch_pairs_stay_aligned_through_flips_and_rotations(scale):
    d = block_data(scale)
    b = d.train_batches(8, torch.Generator().manual_seed(1), CPU)
    assert len(b) == 8
    for x, y in epoch(b):
        assert x.dtype == y.dtype == torch.float32
        assert x.shape == (8, 3, 8, 8) and y.shape == (8, 3, 8 * scale, 8 * scale)
        assert 0 <= float(x.min()) and float(x.max()) <= 1
        assert torch.equal(F.avg_pool2d(as_int(y), scale), as_int(x))


def test_resume_is_exact_and_shards_concatenate():
    d = block_data(patches=40)
    g = torch.Generator().manual_seed(3)
    state = g.get_state()
    full = epoch(d.train_batches(4, g, CPU))
    after = g.get_state()
    assert len(full) == 10
    g.set_state(state)
    tail = epoch(d.train_batches(4, g, CPU), 6)
    assert torch.equal(g.get_state(), after)  # a resumed pass draws what a full one does
    assert len(tail) == 4 and all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
                                  for a, b in zip(tail, full[6:]))
    assert_shards_concatenate(d, g, state, full)
    g.set_state(state)
    assert not torch.equal(epoch(d.train_batches(4, g, CPU))[0][0], epoch(d.train_batches(4, g, CPU))[0][0])
    with pytest.raises(ConfigError, match="divide evenly over 3"):
        d.train_batches(4, g, CPU, shard=(0, 3))
    with pytest.raises(ConfigError, match="larger than the 40 training patches"):
        d.train_batches(41, g, CPU)


def dihedral(t: torch.Tensor):
    """The 8 variants of patches [.., H, W] in the code's order: bit 0 hflip, bit 1 vflip, bit 2 transpose."""
    out = []
    for k in range(8):
        v = t.flip(-1) if k & 1 else t
        v = v.flip(-2) if k & 2 else v
        out.append(v.transpose(-1, -2) if k & 4 else v)
    return out


def test_every_flip_and_rotation_happens_on_the_unaugmented_crop():
    d = block_data(patches=256)
    g = torch.Generator().manual_seed(5)
    state = g.get_state()
    aug = epoch(d.train_batches(32, g, CPU))
    g.set_state(state)
    plain = epoch(d.train_batches(32, g, CPU, augment=False))
    seen = set()
    for (xa, ya), (xp, yp) in zip(aug, plain):
        for i in range(len(xa)):
            kinds = [k for k, v in enumerate(dihedral(xp[i])) if torch.equal(v, xa[i])]
            assert kinds, "an augmented patch is no flip / rotation of its plain crop"
            assert any(torch.equal(dihedral(yp[i])[k], ya[i]) for k in kinds)  # HR got the same one
            seen.update(kinds)
    assert seen == set(range(8))


def test_construction_errors_name_the_image():
    hr, lr = block_pair(10, 12, 2, 0)
    with pytest.raises(ConfigError, match=r"image a is 20x24 HR but 10x11 LR; at scale 2"):
        SRData("s", [hr], [lr[:, :, :11]], [hr], [lr], scale=2, patch=4, patches=8, source="m", train_names=["a"])
    with pytest.raises(ConfigError, match=r"training image a is 10x12 at LR \(x2\).*12x12 LR patch.*at most 10"):
        SRData("s", [hr], [lr], [hr], [lr], scale=2, patch=12, patches=8, source="m", train_names=["a"])
    with pytest.raises(ConfigError, match="non-empty"):
        SRData("s", [hr], [lr], [], [], scale=2, patch=4, patches=8, source="m")
    with pytest.raises(ConfigError, match=r"uint8 RGB tensor \[3, H, W\]"):
        SRData("s", [hr.float()], [lr], [hr], [lr], scale=2, patch=4, patches=8, source="m")


def test_data_interface():
    d = block_data()
    assert (d.task, d.in_chans, d.num_classes, d.mean, d.std) == ("super_resolution", 3, 3, (0.0,) * 3, (1.0,) * 3)
    assert d.image_size == (8, 8) and d.num_train == 64 and d.border == 2
    assert d.config["scale"] == 2 and d.train_names == ["training[0]", "training[1]", "training[2]"]


def test_test_batches_group_equal_sizes_in_order():
    d = block_data()
    tb = d.test_batches(4, CPU)
    assert len(tb) == 2 and tb.groups == [[0, 1], [2]]
    for _ in range(2):  # iterable more than once
        got = list(tb)
        assert [tuple(x.shape) for x, _ in got] == [(2, 3, 10, 12), (1, 3, 8, 12)]
        assert [tuple(y.shape) for _, y in got] == [(2, 3, 20, 24), (1, 3, 16, 24)]
    x, y = got[0]
    assert x.dtype == torch.float32 and 0 <= float(x.min()) and float(x.max()) <= 1
    assert torch.equal(as_int(x[1]), d.test_lr[1].float()) and torch.equal(as_int(y[0]), d.test_hr[0].float())
    assert d.test_batches(1, CPU).groups == [[0], [1], [2]]


def test_resize_helpers():
    hr = torch.full((3, 12, 18), 77, dtype=torch.uint8)
    lr = downscale(hr, 3)
    assert lr.shape == (3, 4, 6) and bool((lr == 77).all())
    assert bicubic_upscale(lr, 3).shape == (3, 12, 18) and bool((bicubic_upscale(lr, 3) == 77).all())
    assert mod_crop(torch.zeros(3, 13, 17, dtype=torch.uint8), 4).shape == (3, 12, 16)
    with pytest.raises(ConfigError, match="mod_crop"):
        downscale(torch.zeros(3, 13, 12, dtype=torch.uint8), 2)
    d = block_data()
    assert d.bicubic(d.test_lr[0]).shape == d.test_hr[0].shape


def test_sr_photos():
    pytest.importorskip("skimage")
    pytest.importorskip("sklearn")
    d = load_dataset("sr-photos:scale=3,patches=32", limit_train=3, limit_test=2, image_size=16)
    assert d.train_names == list(PHOTOS_TRAIN[:3]) == ["china", "flower", "hubble_deep_field"]
    assert d.test_names == ["astronaut", "chelsea"] and d.eval_rule == "y" and d.border == 3
    assert (d.scale, d.patch, d.patches, d.name) == (3, 16, 32, "sr-photos:scale=3,patches=32")
    for hr, lr in zip(d.train_hr + d.test_hr, d.train_lr + d.test_lr):
        assert hr.dtype == torch.uint8 and hr.shape[0] == 3 and hr.shape[1] % 3 == 0 and hr.shape[2] % 3 == 0
        assert lr.shape == (3, hr.shape[1] // 3, hr.shape[2] // 3)
    assert d.test_hr[1].shape == (3, 300, 450)  # chelsea 451 x 300, mod-cropped
    full = load_dataset("sr-photos")
    assert full.train_names == list(PHOTOS_TRAIN) and full.test_names == list(PHOTOS_TEST)
    assert len(PHOTOS_TRAIN) == 14 and PHOTOS_TEST == ("astronaut", "chelsea", "coffee", "rocket", "camera")
    camera = full.test_hr[4]  # greyscale: three equal channels
    assert torch.equal(camera[0], camera[1]) and torch.equal(camera[0], camera[2])
    assert full.patch == 48 and load_dataset("sr-photos:scale=4", limit_test=1).patch == 43  # text.png: 112x43 LR
    with pytest.raises(ConfigError, match="scale 5 is not supported; choose from 2, 3, 4"):
        load_dataset("sr-photos:scale=5")
    with pytest.raises(ConfigError, match="scale=4"):
        load_dataset("sr-photos:seed=1")
    with pytest.raises(ConfigError, match=r"training image text is 86x224 at LR.*at most 86"):
        load_dataset("sr-photos", image_size=100, limit_test=1)
    with pytest.raises(ConfigError, match="8..512"):
        load_dataset("sr-photos", image_size=4)


def write_png(path, h: int, w: int, seed: int = 0, mode: str = "RGB") -> None:
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(0, 256, (h, w, 3), generator=g, dtype=torch.uint8).numpy()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(a).convert(mode).save(path)


def div2k_tree(root, lr: bool, scale: int = 2) -> None:
    for split, stems in (("train", ["0001", "0002"]), ("valid", ["0801"])):
        for i, stem in enumerate(stems):
            write_png(root / f"DIV2K_{split}_HR" / f"{stem}.png", 36, 41, i)  # 41: mod-cropped to 40
            if lr:
                write_png(root / f"DIV2K_{split}_LR_bicubic" / f"X{scale}" / f"{stem}x{scale}.png",
                          36 // scale, 41 // scale, 9 + i)


@pytest.mark.parametrize("with_lr", [False, True])
def test_div2k(tmp_path, with_lr):
    div2k_tree(tmp_path, with_lr)
    d = load_dataset("div2k", data_dir=str(tmp_path))
    assert (d.train_names, d.test_names, d.eval_rule, d.border) == (["0001", "0002"], ["0801"], "rgb", 8)
    assert d.train_hr[0].shape == (3, 36, 40) and d.train_lr[0].shape == (3, 18, 20)
    assert d.patch == 18 and d.config["lr"]["train"] == ("files" if with_lr else "bicubic (PIL)")
    if with_lr:  # the file's own pixels, not a downscale
        with Image.open(tmp_path / "DIV2K_train_LR_bicubic" / "X2" / "0002x2.png") as im:
            assert torch.equal(d.train_lr[1], torch.from_numpy(__import__("numpy").array(im)).permute(2, 0, 1))
    assert load_dataset("div2k", data_dir=str(tmp_path), limit_train=1).train_names == ["0001"]


def test_div2k_errors(tmp_path):
    div2k_tree(tmp_path, lr=True)
    bad = tmp_path / "DIV2K_train_LR_bicubic" / "X2" / "0002x2.png"
    write_png(bad, 17, 20)
    with pytest.raises(ConfigError, match=r"0002x2\.png is 17x20 but its HR image .*0002\.png is 36x40"):
        load_dataset("div2k", data_dir=str(tmp_path))
    bad.unlink()
    with pytest.raises(ConfigError, match=r"0002x2\.png is missing"):
        load_dataset("div2k", data_dir=str(tmp_path))
    (tmp_path / "DIV2K_train_HR" / "0002.png").write_bytes(b"not a png")
    with pytest.raises(ConfigError, match=r"cannot read image .*0002\.png"):
        load_dataset("div2k:scale=3", data_dir=str(tmp_path), image_size=8)
    (tmp_path / "DIV2K_train_HR").rename(tmp_path / "elsewhere")
    with pytest.raises(ConfigError, match="DIV2K_train_HR"):
        load_dataset("div2k", data_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="needs --data-dir"):
        load_dataset("div2k")


def test_sr_folder(tmp_path):
    write_png(tmp_path / "train" / "a.png", 40, 44, 0)
    write_png(tmp_path / "train" / "b.jpg", 33, 50, 1, mode="L")
    write_png(tmp_path / "test" / "c.bmp", 20, 21, 2)
    d = load_dataset("sr-folder:scale=2", data_dir=str(tmp_path))
    assert d.train_names == ["a.png", "b.jpg"] and d.test_names == ["c.bmp"] and d.eval_rule == "y"
    assert d.train_hr[1].shape == (3, 32, 50) and d.test_lr[0].shape == (3, 10, 10) and d.patch == 16
    x, y = next(iter(d.train_batches(2, torch.Generator().manual_seed(0), CPU)))
    assert x.shape == (2, 3, 16, 16) and y.shape == (2, 3, 32, 32)
    os.remove(tmp_path / "test" / "c.bmp")
    with pytest.raises(ConfigError, match=r"test holds no images \(.*\.png"):
        load_dataset("sr-folder", data_dir=str(tmp_path))
    (tmp_path / "test").rename(tmp_path / "val")
    with pytest.raises(ConfigError, match="expected the folder .*test"):
        load_dataset("sr-folder", data_dir=str(tmp_path))
