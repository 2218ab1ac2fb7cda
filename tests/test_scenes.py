"""fmnist-scenes (locallearn.data.scenes): determinism, split hygiene, masks vs boxes, v2 transforms."""
import os
import struct

import numpy as np
import pytest
import torch

from locallearn.data import idx as idx_mod
from locallearn.data.scenes import CHUNK, MASK_THRESHOLD, Scenes, fmnist_scenes, make_scenes
from locallearn.errors import ConfigError

H = 128


def fake_pool(n, value=None, seed=0):
    """n 28x28 uint8 items: filled ellipses (constant ``value``, or textured), labels 0..9 in turn."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    cy, cx = torch.randint(10, 18, (n, 1, 1), generator=g), torch.randint(10, 18, (n, 1, 1), generator=g)
    ry, rx = torch.randint(5, 10, (n, 1, 1), generator=g), torch.randint(3, 10, (n, 1, 1), generator=g)
    inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    if value is None:
        tex = 60 + 195 * torch.rand(n, 28, 28, generator=g)
    else:
        tex = torch.full((n, 28, 28), float(value))
    x = (inside * tex).round().to(torch.uint8)
    return x, torch.arange(n) % 10


@pytest.fixture(scope="module")
def pool():
    return fake_pool(50)


@pytest.fixture(scope="module")
def scenes(pool):
    return make_scenes(*pool, 96, seed=7)


@pytest.fixture(scope="module")
def clean(pool):
    return make_scenes(*pool, 96, seed=8, clutter=0, noise=0, background=0)


def same(a: Scenes, b: Scenes, n=None) -> bool:
    """The first n scenes (all by default) of a and b are identical, targets included."""
    if n is None:
        if len(a) != len(b):
            return False
        n = len(a)
    if min(len(a), len(b)) < n:
        return False
    if not (torch.equal(a.images[:n], b.images[:n]) and torch.equal(a.masks[:n], b.masks[:n])):
        return False
    for x, y in ((a.boxes, b.boxes), (a.labels, b.labels), (a.item_ids, b.item_ids), (a.clutter_ids, b.clutter_ids)):
        if not all(torch.equal(u, v) for u, v in zip(x[:n], y[:n])):
            return False
    return True


def test_deterministic_from_the_seed_alone(pool):
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = make_scenes(*pool, 40, seed=3)
    assert torch.equal(state, torch.get_rng_state())  # the global generator is never drawn from
    torch.manual_seed(456)  # and plays no part
    b = make_scenes(*pool, 40, seed=3)
    assert same(a, b)
    c = make_scenes(*pool, 40, seed=4)
    assert not torch.equal(a.images, c.images) and not torch.equal(a.masks, c.masks)
    short = make_scenes(*pool, 10, seed=3)  # the first scenes do not depend on n
    assert len(short) == 10 and same(short, a, 10)
    big, less = make_scenes(*pool, CHUNK + 6, seed=3), make_scenes(*pool, CHUNK + 2, seed=3)  # nor across chunks
    assert same(less, big, CHUNK + 2) and same(a, big, 40)


def test_shapes_dtypes_and_class_ids(scenes, pool):
    x, y = pool
    n = len(scenes)
    assert scenes.images.shape == (n, 1, H, H) and scenes.images.dtype == torch.uint8
    assert scenes.masks.shape == (n, H, H) and scenes.masks.dtype == torch.uint8
    assert scenes.num_classes == 10 and scenes.num_seg_classes == 11
    assert int(scenes.masks.max()) <= 10  # 0 = background, 1..10; 255 (ignore) never written
    for i in range(n):
        b, lab, ids = scenes.boxes[i], scenes.labels[i], scenes.item_ids[i]
        assert 1 <= len(b) <= 4 and b.dtype == torch.float32 and b.shape == (len(lab), 4)
        assert lab.dtype == torch.int64 and ids.dtype == torch.int64
        assert bool(((lab >= 0) & (lab <= 9)).all())
        assert torch.equal(lab, y[ids])  # each object's label is its source item's
        assert bool((b[:, :2] >= 0).all() and (b[:, 2:] <= H).all() and (b[:, 2:] > b[:, :2]).all())
        present = set(scenes.masks[i].unique().tolist()) - {0}
        assert present == set((lab + 1).tolist())  # every object is visible, nothing else is labelled
        assert bool((scenes.clutter_ids[i] < len(x)).all()) and len(scenes.clutter_ids[i]) <= 3


@pytest.mark.parametrize("which", ["scenes", "clean"])
def test_masks_lie_in_boxes_and_boxes_are_tight(which, request):
    sc = request.getfixturevalue(which)
    for i in range(len(sc)):
        mask = sc.masks[i]
        boxes, labels = sc.boxes[i].long(), sc.labels[i]
        for c in mask.unique().tolist():
            if c == 0:
                continue
            ys, xs = (mask == c).nonzero(as_tuple=True)
            own = boxes[labels == c - 1]
            assert len(own), f"scene {i}: class id {c} in the mask but no object of class {c - 1}"
            inside = ((xs[:, None] >= own[:, 0]) & (xs[:, None] < own[:, 2])
                      & (ys[:, None] >= own[:, 1]) & (ys[:, None] < own[:, 3])).any(1)
            assert bool(inside.all()), f"scene {i}: class {c} pixels outside every class-{c - 1} box"
        for (x0, y0, x1, y1), lab in zip(boxes.tolist(), labels.tolist()):
            region = mask[y0:y1, x0:x1] == lab + 1
            assert bool(region[:, 0].any() and region[:, -1].any() and region[0].any() and region[-1].any()), \
                f"scene {i}: box {(x0, y0, x1, y1)} of class {lab} is not tight"


def test_clean_scene_masks_are_the_bright_item_pixels(clean):
    # without clutter, noise and background, the mask is exactly where the canvas is brighter than
    # the threshold: the items' pixels, nothing more (their dim rims stay below it)
    assert torch.equal(clean.masks > 0, clean.images[:, 0] > MASK_THRESHOLD)


def test_later_items_overwrite_earlier_ones():
    # filled squares, any overlap allowed, crowded: the last object listed is drawn on top, so it is
    # whole (a square box, all its class, its own intensity); items hidden entirely are dropped
    x = (40 + 20 * torch.arange(10, dtype=torch.uint8)).view(10, 1, 1).expand(10, 28, 28).contiguous()
    y = torch.arange(10)
    sc = make_scenes(x, y, 64, size=48, scale=(0.75, 1.5), max_overlap=1.0, clutter=0, noise=0, background=0, seed=1)
    covered = 0
    for i in range(len(sc)):
        boxes, labels = sc.boxes[i].long(), sc.labels[i]
        x0, y0, x1, y1 = boxes[-1].tolist()
        assert x1 - x0 == y1 - y0
        assert bool((sc.masks[i, y0:y1, x0:x1] == labels[-1] + 1).all())
        assert bool((sc.images[i, 0, y0:y1, x0:x1] == 40 + 20 * labels[-1]).all())
        for (a0, b0, a1, b1), lab in zip(boxes[:-1].tolist(), labels[:-1].tolist()):
            covered += not bool((sc.masks[i, b0:b1, a0:a1] == lab + 1).all())
    assert covered > 10  # earlier objects were overlapped, and it is the later ones that show


def test_objects_overlap_little(scenes):
    worst = 0.0
    for b in scenes.boxes:
        for i in range(len(b)):
            for j in range(i + 1, len(b)):
                iw = (min(b[i, 2], b[j, 2]) - max(b[i, 0], b[j, 0])).clamp(min=0)
                ih = (min(b[i, 3], b[j, 3]) - max(b[i, 1], b[j, 1])).clamp(min=0)
                inter = float(iw * ih)
                union = float((b[i, 2:] - b[i, :2]).prod() + (b[j, 2:] - b[j, :2]).prod()) - inter
                worst = max(worst, inter / union)
    assert worst <= 0.15  # placement bounds the overlap by 0.15 of the smaller box (IoU <= that)


def test_horizontal_flip_moves_mask_and_boxes_with_the_image(scenes):
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    flip = v2.RandomHorizontalFlip(p=1.0)
    for i in range(8):
        img, target = flip(*scenes.sample(i))
        assert isinstance(img, tv_tensors.Image) and isinstance(target["mask"], tv_tensors.Mask)
        assert isinstance(target["boxes"], tv_tensors.BoundingBoxes)
        assert torch.equal(img, scenes.images[i].flip(-1))
        assert torch.equal(target["mask"], scenes.masks[i].long().flip(-1))
        b = scenes.boxes[i]
        mirrored = torch.stack([H - b[:, 2], b[:, 1], H - b[:, 0], b[:, 3]], 1)
        assert torch.equal(target["boxes"].as_subclass(torch.Tensor), mirrored)
        assert torch.equal(target["labels"], scenes.labels[i])
        m = target["mask"]
        for (x0, y0, x1, y1), lab in zip(mirrored.long().tolist(), scenes.labels[i].tolist()):
            region = m[y0:y1, x0:x1] == lab + 1  # still tight on the flipped mask
            assert bool(region[:, 0].any() and region[:, -1].any())
    sc = Scenes(scenes.images, scenes.masks, scenes.boxes, scenes.labels, scenes.item_ids, transforms=flip)
    img, target = sc[0]  # indexing applies the transforms
    assert torch.equal(img, scenes.images[0].flip(-1)) and torch.equal(target["mask"], scenes.masks[0].long().flip(-1))


def _write_idx(path, arr, magic):
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    with open(path, "wb") as f:
        f.write(struct.pack(">I", magic) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes())


def test_no_test_item_appears_in_a_train_scene(tmp_path):
    # train items are drawn at intensity 200, test items at 250: a train scene (clutter included)
    # that shows a test pixel would be brighter than 200 + the noise
    tr_x, tr_y = fake_pool(60, value=200, seed=1)
    te_x, te_y = fake_pool(30, value=250, seed=2)
    files = idx_mod.FILES
    _write_idx(tmp_path / files[0], tr_x.numpy(), idx_mod.IMAGES_MAGIC)
    _write_idx(tmp_path / files[1], tr_y.numpy(), idx_mod.LABELS_MAGIC)
    _write_idx(tmp_path / files[2], te_x.numpy(), idx_mod.IMAGES_MAGIC)
    _write_idx(tmp_path / files[3], te_y.numpy(), idx_mod.LABELS_MAGIC)
    train, test = fmnist_scenes(str(tmp_path), n_train=64, n_test=48, seed=5)
    noise = train.config["noise"]
    assert int(train.images.max()) < 200 + noise <= 250 - noise <= int(test.images.max())
    for sc, y, n in ((train, tr_y, 60), (test, te_y, 30)):
        ids = torch.cat(sc.item_ids)
        assert bool((ids < n).all()) and torch.equal(torch.cat(sc.labels), y[ids])
        assert bool((torch.cat(sc.clutter_ids) < n).all())
    assert train.config["split"] == "train" and test.config["split"] == "test"
    assert train.config["seed"] != test.config["seed"]  # different derived seeds
    again, _ = fmnist_scenes(str(tmp_path), n_train=64, n_test=1, seed=5)
    assert same(train, again)


@pytest.mark.parametrize("kwargs, match", [
    ({"scale": (1.0, 5.0)}, "does not fit"),
    ({"n": -1}, "n must be"),
    ({"noise": 200}, "noise"),
    ({"max_items": 0}, "max_items"),
    ({"scale": (0.0, 1.0)}, "scale"),
])
def test_bad_arguments_raise_one_clear_error(pool, kwargs, match):
    args = {"n": 4, **kwargs}
    n = args.pop("n")
    with pytest.raises(ConfigError, match=match):
        make_scenes(*pool, n, **args)


def test_bad_pools_raise(pool):
    x, y = pool
    with pytest.raises(ConfigError, match="label 10"):
        make_scenes(x, torch.full_like(y, 10), 4)
    with pytest.raises(ConfigError, match="uint8"):
        make_scenes(x.float(), y, 4)
    with pytest.raises(ConfigError, match="brighter"):
        make_scenes(torch.zeros_like(x), y, 4)


@pytest.mark.skipif(not os.path.isdir(idx_mod.DEBIAN_DIR), reason="Fashion-MNIST not installed")
def test_real_fashion_mnist_scenes():
    raw = idx_mod.load_fashion_mnist(None, idx_mod.DEBIAN_DIR, False, None, None)
    train, test = fmnist_scenes(idx_mod.DEBIAN_DIR, n_train=300, n_test=100)
    assert train.images.shape == (300, 1, H, H) and test.masks.shape == (100, H, H)
    for sc, y in ((train, raw.train_y), (test, raw.test_y)):
        assert min(len(b) for b in sc.boxes) >= 1
        ids = torch.cat(sc.item_ids)
        assert torch.equal(torch.cat(sc.labels), y[ids])
        fg = float((sc.masks > 0).float().mean())
        assert 0.05 < fg < 0.35
    assert set(torch.cat(train.labels).tolist()) == set(range(10))
    assert train.config["source"] == idx_mod.DEBIAN_DIR
