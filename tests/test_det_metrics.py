"""Detection targets and COCO mAP against hand-made images whose answer is known."""
import math

import pytest
import torch
from torchvision.ops import box_iou

from locallearn.errors import ConfigError
from locallearn.tasks.det_metrics import DetectionMetric, check_boxes, check_targets

# three 100x120 (H x W) images; medium-sized boxes (COCO area 32^2..96^2) so map_medium is set
TARGETS = [
    {"boxes": torch.tensor([[10.0, 10.0, 60.0, 50.0], [70.0, 40.0, 110.0, 90.0]]),
     "labels": torch.tensor([0, 2])},
    {"boxes": torch.tensor([[5.0, 20.0, 55.0, 80.0]]), "labels": torch.tensor([1])},
    {"boxes": torch.tensor([[30.0, 30.0, 90.0, 70.0]]), "labels": torch.tensor([2])},
]


def perfect(target, score=0.9):
    n = len(target["labels"])
    return {"boxes": target["boxes"].clone(), "labels": target["labels"].clone(),
            "scores": torch.full((n,), score)}


def empty_target():
    return {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}


def empty_pred():
    return {**empty_target(), "scores": torch.zeros(0)}


def scores(preds, targets):
    m = DetectionMetric()
    m.update(preds, targets)
    return m.compute()


def test_perfect_predictions_score_one():
    r = scores([perfect(t) for t in TARGETS], TARGETS)
    assert r["map"] == r["map_50"] == r["map_75"] == 1.0
    assert all(isinstance(v, float) for v in r.values())


def test_shifted_box_counts_at_iou_50_not_75():
    gt = TARGETS[1]["boxes"]  # 50 x 60 box
    shifted = gt + torch.tensor([12.0, 0.0, 12.0, 0.0])  # IoU = 38 / 62 = 0.613
    iou = float(box_iou(shifted, gt)[0, 0])
    assert 0.5 < iou < 0.75
    pred = {"boxes": shifted, "labels": TARGETS[1]["labels"], "scores": torch.tensor([0.8])}
    r = scores([pred], [TARGETS[1]])
    assert r["map_50"] == 1.0
    assert r["map_75"] == 0.0
    # IoU 0.613 passes the thresholds 0.50, 0.55, 0.60 of the ten in 0.50:0.95
    assert r["map"] == pytest.approx(0.3, abs=1e-6)


def test_image_without_objects_changes_nothing():
    alone = scores([perfect(TARGETS[0])], [TARGETS[0]])
    with_empty = scores([perfect(TARGETS[0]), empty_pred()], [TARGETS[0], empty_target()])
    assert with_empty["map"] == alone["map"] == 1.0
    assert with_empty.keys() == alone.keys()
    for key, a in alone.items():  # every column the same, NaN (no small / large boxes) included
        b = with_empty[key]
        assert (math.isnan(a) and math.isnan(b)) or a == b, key


def test_no_ground_truth_at_all_is_nan_not_minus_one():
    r = scores([empty_pred()], [empty_target()])
    assert math.isnan(r["map"]) and math.isnan(r["map_50"])
    assert math.isnan(DetectionMetric().compute()["map"])  # nothing seen yet


def test_false_positive_ranked_first_lowers_ap50():
    target = TARGETS[1]
    fp = torch.tensor([[60.0, 5.0, 110.0, 45.0]])  # same class, nowhere near the object
    assert float(box_iou(fp, target["boxes"]).max()) == 0.0
    pred = {"boxes": torch.cat([fp, target["boxes"]]), "labels": torch.tensor([1, 1]),
            "scores": torch.tensor([0.95, 0.5])}
    r = scores([pred], [target])
    assert r["map_50"] < 1.0
    # precision 1/2 at recall 1 (COCO interpolation: the curve is flat at 0.5)
    assert r["map_50"] == pytest.approx(0.5, abs=0.01)
    # the same false positive ranked below the true one costs nothing
    pred["scores"] = torch.tensor([0.3, 0.5])
    assert scores([pred], [target])["map_50"] == 1.0


def test_reset_forgets_and_lengths_must_match():
    m = DetectionMetric()
    m.update([empty_pred()], [TARGETS[1]])  # a missed object: AP 0
    assert m.compute()["map"] == 0.0
    m.reset()
    m.update([perfect(TARGETS[1])], [TARGETS[1]])
    assert m.compute()["map"] == 1.0
    with pytest.raises(ConfigError, match="2 predictions for 1 targets"):
        m.update([empty_pred(), empty_pred()], [TARGETS[1]])


SIZE = (100, 120)  # H, W


def target(boxes, labels=None):
    boxes = torch.tensor(boxes, dtype=torch.float32)
    if labels is None:
        labels = [0] * len(boxes)
    return {"boxes": boxes, "labels": torch.tensor(labels, dtype=torch.int64)}


@pytest.mark.parametrize("bad, match", [
    ({"labels": torch.tensor([0])}, r"image\.png.*no 'boxes'"),
    ({"boxes": torch.zeros(0, 4)}, r"no 'labels'"),
    ([[1.0, 2.0, 3.0, 4.0]], r"must be a dict.*got list"),
    ({"boxes": [[1.0, 2.0, 3.0, 4.0]], "labels": torch.tensor([0])}, r"'boxes'\] must be a torch\.Tensor, got list"),
    ({"boxes": torch.tensor([[1, 2, 3, 4]]), "labels": torch.tensor([0])}, r"float tensor.*torch\.int64"),
    ({"boxes": torch.zeros(2, 5), "labels": torch.zeros(2, dtype=torch.int64)}, r"shape \(2, 5\)"),
    ({"boxes": torch.ones(2, 4), "labels": torch.zeros(3, dtype=torch.int64)}, r"shape \(3,\) but there are 2 boxes"),
    ({"boxes": torch.ones(1, 4), "labels": torch.zeros(1)}, r"integer class ids, got torch\.float32"),
    (target([[10, 10, 20, 20], [10, float("nan"), 20, 20]]), r"box 1 \[10\.0, nan, 20\.0, 20\.0\] has a non-finite"),
    (target([[10, 10, float("inf"), 20]]), r"box 0 .*inf.* non-finite"),
    (target([[30, 10, 20, 20]]), r"box 0 \[30\.0, 10\.0, 20\.0, 20\.0\] has x2 <= x1"),
    (target([[10, 20, 20, 20]]), r"box 0 \[10\.0, 20\.0, 20\.0, 20\.0\] has x2 <= x1 or y2 <= y1"),
    (target([[10, 10, 122, 20]]), r"box 0 \[10\.0, 10\.0, 122\.0, 20\.0\] lies outside the 120x100"),
    (target([[-2, 10, 20, 20]]), r"box 0 \[-2\.0, .*lies outside"),
    (target([[10, 10, 20, 101.5]]), r"101\.5\] lies outside"),
    (target([[120, 10, 120.5, 20]]), r"\[120\.0, 10\.0, 120\.5, 20\.0\] lies outside"),  # only in the margin
    (target([[10, 10, 20, 20]], [3]), r"box 0 .* has label 3, outside the classes 0\.\.2"),
    (target([[10, 10, 20, 20]], [-1]), r"has label -1"),
])
def test_check_boxes_rejects(bad, match):
    with pytest.raises(ConfigError, match=match):
        check_boxes(bad, SIZE, num_classes=3, where="image.png")


def test_check_boxes_accepts_and_converts():
    t = {"boxes": torch.tensor([[0.0, 0.0, 120.0, 100.0], [-0.5, 3.0, 10.0, 100.8]], dtype=torch.float64),
         "labels": torch.tensor([2, 0], dtype=torch.int32), "image_id": 7}
    out = check_boxes(t, SIZE, num_classes=3, where="x")
    assert out["boxes"].dtype == torch.float32 and out["labels"].dtype == torch.int64
    assert out["labels"].tolist() == [2, 0] and out["image_id"] == 7
    # within the 1-pixel tolerance: clamped onto the border, not rejected
    assert out["boxes"].tolist() == [[0.0, 0.0, 120.0, 100.0], [0.0, 3.0, 10.0, 100.0]]


@pytest.mark.parametrize("empty", [
    {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
    {"boxes": torch.tensor([]), "labels": torch.tensor([], dtype=torch.int64)},
])
def test_zero_boxes_pass(empty):
    out = check_boxes(empty, SIZE, num_classes=3, where="x")
    assert out["boxes"].shape == (0, 4) and out["boxes"].dtype == torch.float32
    assert out["labels"].shape == (0,) and out["labels"].dtype == torch.int64


def test_check_targets_names_the_bad_image():
    good = [target([[10, 10, 20, 20]]), empty_target()]
    assert len(check_targets(good, SIZE, 3)) == 2
    with pytest.raises(ConfigError, match=r"^target 2: box 0 .*has label 5"):
        check_targets(good + [target([[10, 10, 20, 20]], [5])], SIZE, 3)
    with pytest.raises(ConfigError, match=r"image_size must be \(H, W\)"):
        check_boxes(good[0], (0, 10), 3, "x")
