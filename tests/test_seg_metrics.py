"""mIoU / mean accuracy / pixel accuracy against hand counts."""
import math

import pytest
import torch
from torchmetrics.classification import MulticlassJaccardIndex

from locallearn.errors import ConfigError
from locallearn.tasks.seg_metrics import SegmentationMetrics

I = 255  # ignored pixel
# two 2x3 images, 3 classes
TARGET = torch.tensor([[[0, 0, 1], [1, 2, I]],
                       [[2, 2, 0], [0, I, 1]]])
PRED = torch.tensor([[[0, 1, 1], [1, 2, 0]],
                     [[2, 0, 0], [0, 1, 1]]])
# counted by hand over the 10 labelled pixels (rows = target, cols = prediction):
# image 1: (0,0) (0,1) (1,1) (1,1) (2,2); image 2: (2,2) (2,0) (0,0) (0,0) (1,1)
CONFMAT = [[3, 1, 0],
           [0, 3, 0],
           [1, 0, 2]]


def hand_values(cm):
    n = len(cm)
    rows = [sum(cm[i]) for i in range(n)]
    cols = [sum(cm[i][j] for i in range(n)) for j in range(n)]
    ious = [cm[c][c] / (rows[c] + cols[c] - cm[c][c]) for c in range(n)]
    accs = [cm[c][c] / rows[c] for c in range(n)]
    return {"miou": sum(ious) / n, "mean_acc": sum(accs) / n,
            "pixel_acc": sum(cm[c][c] for c in range(n)) / sum(rows)}


def values(pred, target, num_classes=3):
    m = SegmentationMetrics(num_classes)
    m.update(pred, target)
    return m, m.compute()


def test_hand_made_example():
    m, got = values(PRED, TARGET)
    assert m.confmat.tolist() == CONFMAT
    want = hand_values(CONFMAT)
    # IoU 3/5, 3/4, 2/3; accuracy 3/4, 3/3, 2/3; 8 of 10 pixels right
    assert want["miou"] == pytest.approx((3 / 5 + 3 / 4 + 2 / 3) / 3)
    assert want["pixel_acc"] == pytest.approx(0.8)
    for k in want:
        assert got[k] == pytest.approx(want[k], abs=1e-12)


def test_logits_equal_class_ids():
    logits = torch.nn.functional.one_hot(PRED.clamp(max=2), 3).permute(0, 3, 1, 2).float()
    _, got = values(logits, TARGET)
    _, ref = values(PRED, TARGET)
    assert got == ref


def test_ignored_pixels_change_nothing():
    other = PRED.clone()
    other[TARGET == I] = torch.tensor([2, 2])  # was 0 and 1
    assert values(other, TARGET)[1] == values(PRED, TARGET)[1]


def test_batches_accumulate_like_one_big_batch():
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 5, (6, 7, 9), generator=g)
    target[torch.rand(target.shape, generator=g) < 0.1] = I
    pred = torch.where(torch.rand(target.shape, generator=g) < 0.6, target.clamp(max=4),
                       torch.randint(0, 5, target.shape, generator=g))
    whole = SegmentationMetrics(5)
    whole.update(pred, target)
    parts = SegmentationMetrics(5)
    for a, b in ((0, 1), (1, 4), (4, 6)):
        parts.update(pred[a:b], target[a:b])
    assert torch.equal(parts.confmat, whole.confmat)
    assert parts.compute() == whole.compute()
    # not the mean of per-batch mIoUs
    per_batch = []
    for a, b in ((0, 1), (1, 4), (4, 6)):
        per_batch.append(values(pred[a:b], target[a:b], 5)[1]["miou"])
    assert sum(per_batch) / 3 != pytest.approx(whole.compute()["miou"])


def test_perfect_prediction_is_one_and_reset_forgets():
    m, got = values(TARGET.clamp(max=2), TARGET)
    assert got == {"miou": 1.0, "mean_acc": 1.0, "pixel_acc": 1.0}
    m.reset()
    m.update(PRED, TARGET)
    assert m.compute()["pixel_acc"] == pytest.approx(0.8)


def test_absent_classes_are_left_out():
    # a 4th class in neither target nor prediction: undefined, not IoU 0 (nor 1)
    assert values(PRED, TARGET, num_classes=4)[1] == pytest.approx(values(PRED, TARGET)[1])
    pc = values(PRED, TARGET, num_classes=4)[0].per_class()
    assert math.isnan(pc["iou"][3]) and math.isnan(pc["acc"][3])
    # a class only predicted counts as IoU 0, but has no accuracy (no target pixel)
    pred = PRED.clone()
    pred[0, 0, 0] = 3  # a class-0 pixel predicted as 3
    m, got = values(pred, TARGET, num_classes=4)
    pc = m.per_class()
    assert pc["iou"][3] == 0 and math.isnan(pc["acc"][3])
    assert got["miou"] == pytest.approx((2 / 5 + 3 / 4 + 2 / 3 + 0) / 4)
    assert got["mean_acc"] == pytest.approx((2 / 4 + 1 + 2 / 3) / 3)


def test_agrees_with_torchmetrics_macro_jaccard():
    # the installed torchmetrics also drops classes with an empty union (>= 1.0, #1715)
    tm = MulticlassJaccardIndex(6, average="macro", ignore_index=I)
    tm.update(PRED, TARGET)
    assert values(PRED, TARGET, num_classes=6)[1]["miou"] == pytest.approx(tm.compute().item())


def test_nothing_seen_is_nan_and_bad_input_raises():
    assert all(math.isnan(v) for v in SegmentationMetrics(3).compute().values())
    with pytest.raises(ConfigError, match="num_classes"):
        SegmentationMetrics(1)
    m = SegmentationMetrics(3)
    with pytest.raises(ValueError, match="shape"):
        m.update(PRED[:, :1], TARGET)
    with pytest.raises(ValueError, match="channels"):
        m.update(torch.zeros(2, 4, 2, 3), TARGET)


def _dist_worker(rank, world, port, out):
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        m = SegmentationMetrics(3)
        m.update(PRED[rank:rank + 1], TARGET[rank:rank + 1])  # one image per rank
        local = m.confmat.clone()
        got = m.compute()
        torch.save({"got": got, "local_kept": torch.equal(m.confmat, local)}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.mark.dist
def test_compute_sums_the_confusion_matrix_over_ranks(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = str(tmp_path / "r")
    mp.spawn(_dist_worker, args=(2, port, out), nprocs=2, join=True)
    want = hand_values(CONFMAT)
    for rank in range(2):
        res = torch.load(f"{out}.{rank}", weights_only=True)
        assert res["local_kept"]  # the sync does not leave the summed state behind
        assert res["got"] == pytest.approx(want)
