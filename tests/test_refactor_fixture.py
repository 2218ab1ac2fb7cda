"""Issue 14's guard: a short fixed-seed classification run gives the same losses and
weights before and after the task-layer refactor. The "before" values were recorded on
main at the start of that work (tests/fixtures/classification_before.json, made by
``python tests/test_refactor_fixture.py --record``); the comparison is bit for bit with
the torch version that recorded them, and to 1e-6 relative otherwise (other kernels)."""
import hashlib
import json
import sys
from pathlib import Path

import pytest
import torch

from locallearn import LocalNet, TrainConfig, create_model
from locallearn.data import load_dataset
from locallearn.optim import BlockOptimizers

FIXTURE = Path(__file__).parent / "fixtures" / "classification_before.json"
METHODS = ("dgl+manpp", "infopro+manpp")


def _run(method: str) -> dict:
    """Six steps of resnet20 K=3 on synthetic 1x8x8 data, one thread, fixed seeds."""
    torch.manual_seed(0)
    data = load_dataset("synthetic:1x8x8:4", limit_train=96, limit_test=32)
    net = LocalNet(create_model("resnet20", num_classes=4, in_chans=1), 3, method,
                   image_size=(8, 8), mean=data.mean, std=data.std)
    opt = BlockOptimizers(net, TrainConfig(lr=0.05))
    batches = data.train_batches(16, torch.Generator().manual_seed(1), torch.device("cpu"))
    losses = []
    for x, y in batches:
        losses.append(net.train_step(x, y, after_block=opt.after_block).tolist())
        opt.finish()
        net.ema_update()
    state = net.state_dict()
    return {"losses": losses,
            "sha256": {k: hashlib.sha256(v.contiguous().numpy().tobytes()).hexdigest()
                       for k, v in state.items()},
            "sums": {k: float(v.double().sum()) for k, v in state.items()
                     if v.is_floating_point()}}


def record() -> None:
    out = {"torch": torch.__version__, **{m: _run(m) for m in METHODS}}
    FIXTURE.write_text(json.dumps(out, indent=1) + "\n")


@pytest.mark.parametrize("method", METHODS)
def test_classification_is_unchanged_by_the_refactor(method):
    want = json.loads(FIXTURE.read_text())
    got = _run(method)
    ref = want[method]
    assert set(got["sha256"]) == set(ref["sha256"])  # the same parameters and buffers
    if want["torch"] == torch.__version__:
        assert got["losses"] == ref["losses"]
        assert got["sha256"] == ref["sha256"]
    else:
        assert got["losses"] == pytest.approx(ref["losses"], rel=1e-6)
        for k, v in ref["sums"].items():
            assert got["sums"][k] == pytest.approx(v, rel=1e-6, abs=1e-8), k


if __name__ == "__main__" and "--record" in sys.argv:
    torch.set_num_threads(1)
    record()
