"""VOC and Cityscapes readers on tiny layouts written here, and on real VOC files from Debian."""
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2

from locallearn.data.seg_sets import (CITYSCAPES_CLASSES, CITYSCAPES_TRAIN_LABEL_IDS, VOC_CLASSES, cityscapes,
                                      cityscapes_lut, voc_segmentation)
from locallearn.errors import ConfigError

# Debian package labelme-examples: three VOC 2011 photos with labelme's VOC segmentation export
LABELME_VOC = Path("/usr/share/doc/labelme-examples/examples/semantic_segmentation/data_dataset_voc")


def _photo(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _palette_png(ids, path):
    im = Image.fromarray(np.asarray(ids, dtype=np.uint8))  # 'L'; the palette makes it 'P', indices kept
    im.putpalette([v for c in range(256) for v in (c, 255 - c, (7 * c) % 256)])
    assert im.mode == "P"
    im.save(path)


def make_voc(root, masks, split="train", sizes=None):
    """VOCdevkit/VOC2012 with one JPEG + palette PNG per entry of ``masks`` (name -> ids array)."""
    voc = Path(root) / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    for i, (name, ids) in enumerate(masks.items()):
        h, w = (sizes or {}).get(name, np.asarray(ids).shape)
        Image.fromarray(_photo(h, w, i)).save(voc / "JPEGImages" / f"{name}.jpg", quality=95)
        _palette_png(ids, voc / "SegmentationClass" / f"{name}.png")
    (voc / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("".join(f"{n}\n" for n in masks))
    return voc


def make_cityscapes(root, masks, split="train", city="aachen"):
    """leftImg8bit/<split>/<city>/*_leftImg8bit.png and gtFine/.../*_gtFine_labelIds.png (grey labelIds)."""
    img_dir = Path(root) / "leftImg8bit" / split / city
    gt_dir = Path(root) / "gtFine" / split / city
    img_dir.mkdir(parents=True, exist_ok=True)
    gt_dir.mkdir(parents=True, exist_ok=True)
    for i, (stem, ids) in enumerate(masks.items()):
        ids = np.asarray(ids, dtype=np.uint8)
        Image.fromarray(_photo(*ids.shape, i)).save(img_dir / f"{city}_{stem}_leftImg8bit.png")
        Image.fromarray(ids).save(gt_dir / f"{city}_{stem}_gtFine_labelIds.png")
    return Path(root)


VOC_IDS = np.array([[0, 0, 15, 15, 255], [0, 20, 20, 255, 1], [5, 5, 0, 0, 0], [0, 0, 0, 7, 7]])


def test_voc_reads_ids_and_ignore(tmp_path):
    make_voc(tmp_path, {"2008_000001": VOC_IDS, "2008_000002": VOC_IDS[::-1]})
    ds = voc_segmentation(str(tmp_path), image_set="train")
    assert len(ds) == 2 and ds.num_classes == 21 and ds.class_names == VOC_CLASSES
    img, mask = ds[0]
    assert isinstance(img, tv_tensors.Image) and img.dtype == torch.uint8 and img.shape == (3, 4, 5)
    assert isinstance(mask, tv_tensors.Mask) and mask.dtype == torch.int64
    assert mask.tolist() == VOC_IDS.tolist()  # palette indices are the class ids, 255 kept as ignore
    assert ds[1][1].tolist() == VOC_IDS[::-1].tolist()


def test_voc_transforms_move_the_mask_with_the_image(tmp_path):
    make_voc(tmp_path, {"a": VOC_IDS})
    ds = voc_segmentation(tmp_path, transforms=v2.RandomHorizontalFlip(p=1.0))
    plain = voc_segmentation(tmp_path)
    img, mask = ds[0]
    assert torch.equal(mask, plain[0][1].flip(-1)) and torch.equal(img, plain[0][0].flip(-1))


def test_voc_errors_name_the_path(tmp_path):
    with pytest.raises(ConfigError, match=str(tmp_path / "nowhere")):
        voc_segmentation(str(tmp_path / "nowhere"))
    voc = make_voc(tmp_path, {"a": VOC_IDS})
    with pytest.raises(ConfigError, match="split list not found: .*val.txt"):
        voc_segmentation(tmp_path, image_set="val")
    with pytest.raises(ConfigError, match="image_set"):
        voc_segmentation(tmp_path, image_set="test")
    os.remove(voc / "SegmentationClass" / "a.png")
    with pytest.raises(ConfigError, match=r"VOC mask missing: .*SegmentationClass/a\.png"):
        voc_segmentation(tmp_path)
    shutil.rmtree(voc / "SegmentationClass")
    with pytest.raises(ConfigError, match=r"SegmentationClass folder not found: " + str(voc / "SegmentationClass")):
        voc_segmentation(tmp_path)


def test_voc_bad_masks_fail_when_read(tmp_path):
    bad = VOC_IDS.copy()
    bad[0, 0] = 21  # one past the last class, and not the ignore value
    make_voc(tmp_path, {"ok": VOC_IDS, "bad": bad, "big": VOC_IDS}, sizes={"big": (6, 5)})
    ds = voc_segmentation(tmp_path)
    ds[0]
    with pytest.raises(ConfigError, match=r"mask .*bad\.png has class ids \[21\] outside the 21 classes"):
        ds[1]
    with pytest.raises(ConfigError, match=r"image .*big\.jpg is 5x6 but its mask .*big\.png is 5x4"):
        ds[2]


def test_voc_colour_and_corrupt_masks(tmp_path):
    voc = make_voc(tmp_path, {"rgb": VOC_IDS, "junk": VOC_IDS})
    Image.fromarray(_photo(4, 5)).save(voc / "SegmentationClass" / "rgb.png")
    (voc / "SegmentationClass" / "junk.png").write_bytes(b"not a png")
    ds = voc_segmentation(tmp_path)
    with pytest.raises(ConfigError, match=r"mask .*rgb\.png is a RGB image"):
        ds[0]
    with pytest.raises(ConfigError, match=r"cannot read sample 1: .*junk\.png"):
        ds[1]


def test_cityscapes_table_matches_torchvision():
    from torchvision.datasets import Cityscapes

    tv = {c.id: c.train_id for c in Cityscapes.classes if c.id >= 0}
    lut = cityscapes_lut()
    for label_id in range(34):
        assert lut[label_id] == tv[label_id], label_id
    assert [c.name for c in sorted(Cityscapes.classes, key=lambda c: c.train_id)
            if 0 <= c.train_id < 255] == list(CITYSCAPES_CLASSES)
    assert len(CITYSCAPES_TRAIN_LABEL_IDS) == 19


def test_cityscapes_maps_label_ids_to_train_ids(tmp_path):
    ids = np.array([[0, 7, 8, 26], [33, 4, 255, 24], [23, 31, 9, 1]])
    make_cityscapes(tmp_path, {"000001_000019": ids, "000000_000019": np.full((3, 4), 7)})
    make_cityscapes(tmp_path, {"000002_000019": np.full((3, 4), 26)}, city="bremen")
    ds = cityscapes(str(tmp_path), "train")
    assert len(ds) == 3 and ds.num_classes == 19 and ds.class_names[13] == "car"
    assert [os.path.basename(p) for p in ds.images] == sorted(os.path.basename(p) for p in ds.images)
    img, mask = ds[1]  # aachen_000001 after the sort
    assert img.shape == (3, 3, 4) and img.dtype == torch.uint8 and mask.dtype == torch.int64
    # unlabeled 0, static 4, 255, parking 9, ego vehicle 1 -> ignore; road 0, sidewalk 1, car 13, ...
    assert mask.tolist() == [[255, 0, 1, 13], [18, 255, 255, 11], [10, 16, 255, 255]]
    assert ds[0][1].unique().tolist() == [0] and ds[2][1].unique().tolist() == [13]


def test_cityscapes_errors(tmp_path):
    with pytest.raises(ConfigError, match="Cityscapes root not found: " + str(tmp_path / "cs")):
        cityscapes(tmp_path / "cs", "val")
    with pytest.raises(ConfigError, match="split"):
        cityscapes(tmp_path, "test")
    bad = np.full((3, 4), 7)
    bad[1, 1] = 40  # no Cityscapes label has id 40
    make_cityscapes(tmp_path, {"000000_000019": bad})
    with pytest.raises(ConfigError, match=r"gtFine_labelIds\.png has class ids \[40\]"):
        cityscapes(tmp_path, "train")[0]
    with pytest.raises(ConfigError, match="Cityscapes image folder not found: .*leftImg8bit/val"):
        cityscapes(tmp_path, "val")
    shutil.rmtree(tmp_path / "gtFine")
    with pytest.raises(ConfigError, match="Cityscapes gtFine folder not found: .*gtFine/train"):
        cityscapes(tmp_path, "train")


def test_cityscapes_missing_mask_file(tmp_path):
    make_cityscapes(tmp_path, {"000000_000019": np.full((3, 4), 7)})
    for f in (tmp_path / "gtFine" / "train" / "aachen").iterdir():
        f.unlink()
    with pytest.raises(ConfigError, match=r"labelIds mask missing: .*aachen_000000_000019_gtFine_labelIds\.png"):
        cityscapes(tmp_path, "train")


@pytest.mark.skipif(not LABELME_VOC.is_dir(), reason="Debian package labelme-examples not installed")
def test_real_voc_files_from_labelme_examples(tmp_path):
    names = sorted(p.stem for p in (LABELME_VOC / "SegmentationClassPNG").glob("*.png"))
    assert names, LABELME_VOC
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True)
    for n in names:  # labelme names its PNG folder SegmentationClassPNG; VOC calls it SegmentationClass
        (voc / "JPEGImages" / f"{n}.jpg").symlink_to(LABELME_VOC / "JPEGImages" / f"{n}.jpg")
        (voc / "SegmentationClass" / f"{n}.png").symlink_to(LABELME_VOC / "SegmentationClassPNG" / f"{n}.png")
    (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(names) + "\n")
    ds = voc_segmentation(tmp_path, image_set="val")
    assert len(ds) == len(names)
    seen = set()
    for i, n in enumerate(names):
        img, mask = ds[i]
        with Image.open(LABELME_VOC / "JPEGImages" / f"{n}.jpg") as photo:
            assert img.shape == (3, photo.height, photo.width) and img.dtype == torch.uint8
        # labelme also saved the label array as .npy, with -1 for its __ignore__ class
        ref = np.load(LABELME_VOC / "SegmentationClass" / f"{n}.npy", allow_pickle=False)
        assert mask.tolist() == np.where(ref < 0, 255, ref).tolist()
        seen |= set(mask.unique().tolist())
    assert 255 in seen and 15 in seen  # VOC borders and 'person' are in the real masks
    assert seen <= set(range(21)) | {255}
