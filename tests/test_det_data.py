"""DetData / DetBatches (data/det_data.py) and the detection sets of load_dataset (data/det_sets.py)."""
import json
import multiprocessing
import os
import re
import shutil
import signal
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch
from PIL import Image
from torchvision import tv_tensors

from locallearn.data import DetData, load_dataset
from locallearn.data import idx as idx_mod
from locallearn.data.base import dataset_task
from locallearn.data.det_data import det_train_transform
from locallearn.data.det_sets import VOC_DET_CLASSES, coco_split, read_det_split
from locallearn.errors import ConfigError

CPU = torch.device("cpu")
LABELME = Path("/usr/share/doc/labelme-examples/examples")
LABELME_VOC = LABELME / "bbox_detection" / "data_dataset_voc"
LABELME_COCO = LABELME / "instance_segmentation" / "data_dataset_coco"


def _tight(mask):
    """[x1, y1, x2, y2] pixel-edge box of a bool mask [H, W]."""
    ys, xs = mask.nonzero(as_tuple=True)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def test_boxes_follow_flip_and_rescale():
    h, w = 64, 80
    ids = torch.zeros(h, w, dtype=torch.int64)
    ids[10:30, 8:24] = 1
    ids[40:60, 50:77] = 2
    ids[0:6, 72:80] = 3  # in the corner: an upscaled crop often cuts it away
    image = tv_tensors.Image((ids * 60).to(torch.uint8).expand(3, h, w).clone())
    boxes = tv_tensors.BoundingBoxes([[8, 10, 24, 30], [50, 40, 77, 60], [72, 0, 80, 6]], format="XYXY",
                                     canvas_size=(h, w))
    t = det_train_transform((h, w))
    flipped = rescaled = dropped = 0
    for seed in range(24):
        torch.manual_seed(seed)
        img, out = t(image, {"boxes": boxes, "labels": torch.tensor([0, 1, 2]), "mask": tv_tensors.Mask(ids)})
        assert img.shape == (3, h, w) and out["boxes"].canvas_size == (h, w)
        assert len(out["boxes"]) == len(out["labels"])
        dropped += 2 not in out["labels"].tolist()
        mask = out["mask"]
        for box, label in zip(out["boxes"].tolist(), out["labels"].tolist()):
            obj = mask == label + 1
            assert obj.any(), (seed, label)
            assert box == pytest.approx(_tight(obj), abs=1.5), (seed, label)
            # the image moved with the mask (its bilinear edges blend: compare the median)
            assert int(img[0][obj].median()) == 60 * (label + 1)
        # an object whose box was dropped is (all but) gone from the image too
        for label in {0, 1, 2} - set(out["labels"].tolist()):
            assert int((mask == label + 1).sum()) <= 2 * w
        first = out["boxes"][out["labels"] == 0]
        if len(first):
            flipped += float(first[0, 0]) > w / 2  # object 1 starts in the left half
            rescaled += abs(float(first[0, 3] - first[0, 1]) - 20) > 1.5
    assert flipped and rescaled and 0 < dropped < 24  # the seeds exercised all three


def det_data(n=12, size=32, workers=0, seed=0):
    """Random boxes on a 1-channel image whose pixels are 40 inside a box; image 3 has none."""
    g = torch.Generator().manual_seed(seed)
    images = torch.zeros(n, 1, size, size, dtype=torch.uint8)
    targets = []
    for i in range(n):
        k = 0 if i == 3 else int(torch.randint(1, 4, (1,), generator=g))
        xy = torch.randint(0, size - 8, (k, 2), generator=g).float()
        wh = torch.randint(4, 9, (k, 2), generator=g).float()
        b = torch.cat([xy, xy + wh], 1)
        for x1, y1, x2, y2 in b.long().tolist():
            images[i, 0, y1:y2, x1:x2] = 40
        targets.append({"boxes": b, "labels": torch.randint(0, 3, (k,), generator=g)})
    return DetData("boxes", images, targets, images[:5].clone(), targets[:5], num_classes=3, source="test",
                   workers=workers)


def _same(a, b):
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and len(ya) == len(yb)
        for ta, tb in zip(ya, yb):
            assert torch.equal(ta["boxes"], tb["boxes"]) and torch.equal(ta["labels"], tb["labels"])


def test_det_batches_values_and_empty_image():
    d = det_data()
    assert d.task == "detection" and d.class_names == ("0", "1", "2") and d.image_size == (32, 32)
    assert len(d.train_y[3]["boxes"]) == 0 and d.train_y[3]["boxes"].shape == (0, 4)
    batches = list(d.test_batches(4, CPU).iter_from(0))
    assert [len(b[1]) for b in batches] == [4, 1]
    x, ys = batches[0]
    assert torch.allclose(x, (d.test_x[:4].float() / 255 - d.mean[0]) / d.std[0], atol=1e-6)
    for t, ref in zip(ys, d.test_y[:4]):
        assert t["boxes"].device == CPU and t["boxes"].dtype == torch.float32 and t["labels"].dtype == torch.int64
        assert torch.equal(t["boxes"], ref["boxes"]) and torch.equal(t["labels"], ref["labels"])
    assert ys[3]["boxes"].shape == (0, 4)  # the image without objects passes through
    # augmented: every kept box still covers object pixels (value 40 after un-normalising)
    for x, ys in d.train_batches(4, torch.Generator().manual_seed(0), CPU).iter_from(0):
        raw = (x * d.std[0] + d.mean[0]).mul(255).round()
        for img, t in zip(raw, ys):
            assert t["boxes"].dtype == torch.float32 and t["labels"].dtype == torch.int64
            for x1, y1, x2, y2 in t["boxes"].tolist():
                assert 0 <= x1 < x2 <= 32 and 0 <= y1 < y2 <= 32
                assert bool((img[0, int(y1):int(y2) + 1, int(x1):int(x2) + 1] > 20).any())


def test_det_batches_deterministic_across_workers_and_resume():
    d0, d2 = det_data(workers=0), det_data(workers=2)

    def run(d, seed, start=0):
        return list(d.train_batches(4, torch.Generator().manual_seed(seed), CPU, channels_last=True).iter_from(start))

    full = run(d0, 7)
    assert len(full) == 3 and full[0][0].is_contiguous(memory_format=torch.channels_last)
    _same(full, run(d0, 7))
    _same(full, run(d2, 7))  # worker processes draw the same per-sample streams
    _same(full[1:], run(d0, 7, start=1))  # a resume replays the rest of the epoch
    other = run(d0, 8)
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(full, other))
    # and the second epoch of one iterator continues from the generator, again resumable
    g = torch.Generator().manual_seed(7)
    it = d0.train_batches(4, g, CPU)
    list(it.iter_from(0))
    state = g.get_state()
    second = list(it.iter_from(0))
    g.set_state(state)
    _same(second[2:], list(it.iter_from(2)))


def test_det_data_checks():
    d = det_data()
    bad = [dict(t) for t in d.train_y]
    bad[5] = {"boxes": torch.tensor([[1.0, 1.0, 40.0, 8.0]]), "labels": torch.tensor([0])}
    with pytest.raises(ConfigError, match=r"boxes in test \(training\) image 5: box 0 .* outside"):
        DetData("boxes", d.train_x, bad, d.test_x, d.test_y, num_classes=3, source="test")
    with pytest.raises(ConfigError, match="12 images but 11 targets"):
        DetData("boxes", d.train_x, d.train_y[:11], d.test_x, d.test_y, num_classes=3, source="test")
    with pytest.raises(ConfigError, match="label 2, outside the classes 0..1"):
        DetData("boxes", d.train_x, d.train_y, d.test_x, d.test_y, num_classes=2, source="test")
    with pytest.raises(ConfigError, match="2 class names for 3 classes"):
        DetData("boxes", d.train_x, d.train_y, d.test_x, d.test_y, num_classes=3, source="t", class_names=("a", "b"))


def _voc_layout(tmp_path):
    if not LABELME_VOC.is_dir():
        pytest.skip("Debian package labelme-examples not installed")
    names = sorted(p.stem for p in (LABELME_VOC / "Annotations").glob("*.xml"))
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    (voc / "ImageSets" / "Main").mkdir(parents=True)
    shutil.copytree(LABELME_VOC / "Annotations", voc / "Annotations")
    shutil.copytree(LABELME_VOC / "JPEGImages", voc / "JPEGImages")
    (voc / "ImageSets" / "Main" / "train.txt").write_text("\n".join(names[:2]) + "\n")
    (voc / "ImageSets" / "Main" / "val.txt").write_text(names[2] + "\n")
    return voc, names


def _letterbox_scale(path, size):
    with Image.open(path) as im:
        w, h = im.size
    s = min(size / h, size / w)
    nh, nw = min(size, max(1, round(h * s))), min(size, max(1, round(w * s)))
    return w, h, torch.tensor([nw / w, nh / h, nw / w, nh / h])


def test_voc_det_real_files(tmp_path):
    voc, names = _voc_layout(tmp_path)
    d = load_dataset("voc-det", data_dir=str(tmp_path), image_size=64)
    assert dataset_task("voc-det") == "detection" and d.task == "detection"
    assert d.num_classes == 20 and d.class_names == VOC_DET_CLASSES and d.class_names[14] == "person"
    assert d.train_x.shape == (2, 3, 64, 64) and d.test_x.shape == (1, 3, 64, 64)
    for n, t in zip(names, d.train_y + d.test_y):
        w, h, scale = _letterbox_scale(voc / "JPEGImages" / f"{n}.jpg", 64)
        objs = ET.parse(voc / "Annotations" / f"{n}.xml").getroot().findall("object")
        ref = torch.tensor([[float(o.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax")]
                            for o in objs]) - torch.tensor([1.0, 1.0, 0.0, 0.0])
        ref = torch.stack([ref[:, 0].clamp(0, w), ref[:, 1].clamp(0, h), ref[:, 2].clamp(0, w),
                           ref[:, 3].clamp(0, h)], 1) * scale
        assert len(objs) > 0 and torch.allclose(t["boxes"], ref, atol=1e-4)
        assert t["labels"].tolist() == [VOC_DET_CLASSES.index(o.findtext("name")) for o in objs]
    # an image with no objects is valid
    xml = voc / "Annotations" / f"{names[2]}.xml"
    root = ET.parse(xml).getroot()
    for o in root.findall("object"):
        root.remove(o)
    ET.ElementTree(root).write(xml)
    d = load_dataset("voc-det", data_dir=str(tmp_path / "VOCdevkit" / "VOC2012"), image_size=32)
    assert d.test_y[0]["boxes"].shape == (0, 4) and d.test_x.shape == (1, 3, 32, 32)


def test_voc_det_errors_name_the_file(tmp_path):
    voc, names = _voc_layout(tmp_path)
    xml = voc / "Annotations" / f"{names[1]}.xml"
    text = xml.read_text()
    xml.write_text(text.replace("<name>person</name>", "<name>alien</name>", 1))
    assert "alien" in xml.read_text()
    with pytest.raises(ConfigError, match=rf"{names[1]}\.xml: object \d+ has class 'alien'"):
        load_dataset("voc-det", data_dir=str(tmp_path), image_size=64)
    xml.write_text(text[: len(text) // 2])
    with pytest.raises(ConfigError, match=rf"cannot parse VOC annotation .*{names[1]}\.xml"):
        load_dataset("voc-det", data_dir=str(tmp_path), image_size=64)
    xml.write_text(re.sub(r"<xmax>[^<]*</xmax>", "<xmax>900.0</xmax>", text, count=1))
    with pytest.raises(ConfigError, match=rf"{names[1]}\.xml: box 0 .* outside"):
        load_dataset("voc-det", data_dir=str(tmp_path), image_size=64)
    with pytest.raises(ConfigError, match="voc-det needs --data-dir"):
        load_dataset("voc-det", image_size=64)


def test_coco_split_real_json(tmp_path):
    ann = LABELME_COCO / "annotations.json"
    if not ann.is_file():
        pytest.skip("Debian package labelme-examples not installed")
    data = json.loads(ann.read_text())
    ds = coco_split(str(LABELME_COCO), str(ann))  # file_names are "JPEGImages/...": relative to this root
    cats = sorted(data["categories"], key=lambda c: c["id"])
    assert ds.class_names == tuple(c["name"] for c in cats) and ds.num_classes == len(cats)
    images = sorted(data["images"], key=lambda im: im["id"])
    x, targets = read_det_split(ds, None, (64, 64))
    assert x.shape == (len(images), 3, 64, 64) and x.dtype == torch.uint8
    cat_index = {c["id"]: k for k, c in enumerate(cats)}
    for im, t in zip(images, targets):
        _, _, scale = _letterbox_scale(LABELME_COCO / im["file_name"], 64)
        anns = [a for a in data["annotations"] if a["image_id"] == im["id"] and not a.get("iscrowd")]
        ref = torch.tensor([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                            for a in anns]) * scale
        assert len(anns) > 0 and torch.allclose(t["boxes"], ref, atol=1e-4)
        assert t["labels"].tolist() == [cat_index[a["category_id"]] for a in anns]
    broken = tmp_path / "broken.json"
    broken.write_text(ann.read_text()[:100])
    with pytest.raises(ConfigError, match=r"cannot read COCO annotations .*broken\.json"):
        coco_split(str(LABELME_COCO), str(broken))
    data["images"][1]["file_name"] = "JPEGImages/nope.jpg"
    missing = tmp_path / "missing.json"
    missing.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=r"missing\.json: 1 of 3 listed images are missing .*nope\.jpg"):
        coco_split(str(LABELME_COCO), str(missing))


def _synthetic_coco(folder, split="train2017", extra_ann=None):
    (folder / split).mkdir(parents=True, exist_ok=True)
    (folder / "annotations").mkdir(exist_ok=True)
    for name, size in (("a.png", (40, 20)), ("b.png", (30, 30))):
        Image.new("RGB", size, (10, 20, 30)).save(folder / split / name)
    anns = [
        {"id": 1, "image_id": 5, "category_id": 7, "bbox": [2, 3, 10, 4], "iscrowd": 0},
        {"id": 2, "image_id": 5, "category_id": 3, "bbox": [0, 0, 40, 20], "iscrowd": 1},  # a crowd: dropped
        {"id": 3, "image_id": 5, "category_id": 3, "bbox": [20, 10, 5, 5]},
    ] + ([extra_ann] if extra_ann else [])
    data = {"images": [{"id": 9, "file_name": "b.png", "height": 30, "width": 30},
                       {"id": 5, "file_name": "a.png", "height": 20, "width": 40}],
            "categories": [{"id": 7, "name": "seven"}, {"id": 3, "name": "three"}], "annotations": anns}
    path = folder / "annotations" / f"instances_{split}.json"
    path.write_text(json.dumps(data))
    return path


def test_coco_synthetic_crowds_empty_images_and_layout(tmp_path):
    ann = _synthetic_coco(tmp_path)
    ds = coco_split(str(tmp_path / "train2017"), str(ann))
    assert ds.class_names == ("three", "seven") and len(ds) == 2  # categories in id order
    x, targets = read_det_split(ds, None, (40, 40))
    assert x.shape == (2, 3, 40, 40)
    # image-id order: image 5 (40x20, scale 1), then image 9 (no annotations)
    assert targets[0]["boxes"].tolist() == [[2.0, 3.0, 12.0, 7.0], [20.0, 10.0, 25.0, 15.0]]
    assert targets[0]["labels"].tolist() == [1, 0] and targets[1]["boxes"].shape == (0, 4)
    assert bool((x[0, :, 20:] == 0).all()) and x[0, :, :20].amin((1, 2)).tolist() == [10, 20, 30]  # padded below
    _synthetic_coco(tmp_path, "val2017")
    d = load_dataset("coco", data_dir=str(tmp_path), image_size=20, limit_test=1)
    assert dataset_task("coco") == "detection" and d.class_names == ("three", "seven")
    assert d.train_x.shape == (2, 3, 20, 20) and d.test_x.shape == (1, 3, 20, 20)
    assert d.train_y[0]["boxes"].tolist() == [[1.0, 1.5, 6.0, 3.5], [10.0, 5.0, 12.5, 7.5]]
    bad = _synthetic_coco(tmp_path / "bad", extra_ann={"id": 4, "image_id": 77, "category_id": 3, "bbox": [0, 0, 1, 1]})
    with pytest.raises(ConfigError, match=r"instances_train2017\.json: annotation 3 \(id 4\) has image_id 77"):
        coco_split(str(tmp_path / "bad" / "train2017"), str(bad))
    with pytest.raises(ConfigError, match="annotation file not found"):
        load_dataset("coco", data_dir=str(tmp_path / "train2017"))


def test_fmnist_scenes_det(tmp_path):
    try:
        idx_mod.load_fashion_mnist(None, None, False, None, None)
    except ConfigError:
        pytest.skip("Fashion-MNIST not installed")
    from locallearn.data.scenes import FMNIST_CLASSES, fmnist_scenes

    assert dataset_task("fmnist-scenes-det") == "detection" and dataset_task("fmnist-scenes") == "segmentation"
    d = load_dataset("fmnist-scenes-det", limit_train=16, limit_test=8, image_size=64)
    assert isinstance(d, DetData) and d.num_classes == 10 and d.class_names == FMNIST_CLASSES
    train, test = fmnist_scenes(None, 16, 8, size=64, seed=0, scale=(0.375, 1.25))  # fmnist-scenes' own
    assert torch.equal(d.train_x, train.images) and torch.equal(d.test_x, test.images)
    for ys, sc in ((d.train_y, train), (d.test_y, test)):
        for t, b, lab in zip(ys, sc.boxes, sc.labels):
            assert torch.equal(t["boxes"], b) and torch.equal(t["labels"], lab)
    other = load_dataset("fmnist-scenes-det:seed=2", limit_train=16, limit_test=8, image_size=64)
    assert other.name == "fmnist-scenes-det:seed=2" and not torch.equal(other.train_x, d.train_x)


def test_loader_workers_ignore_sigterm_sent_to_the_group():
    """``kill -TERM -- -PGID`` also reaches the loader workers: they must live on, so the
    trainer can finish its step and checkpoint instead of dying with 'worker killed'."""
    d0, d2 = det_data(n=64, workers=2), det_data(n=64, workers=2)
    full = list(d0.train_batches(4, torch.Generator().manual_seed(3), CPU).iter_from(0))
    it = d2.train_batches(4, torch.Generator().manual_seed(3), CPU).iter_from(0)
    got = [next(it)]
    workers = multiprocessing.active_children()
    assert len(workers) == 2
    for w in workers:
        os.kill(w.pid, signal.SIGTERM)
    time.sleep(0.5)
    assert all(w.is_alive() for w in workers)
    got += list(it)  # without the fix: RuntimeError "DataLoader worker ... killed by signal"
    assert len(got) == 16
    _same(full, got)
