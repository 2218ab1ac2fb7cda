"""The pipeline's cost model, --split time, and the pipeline options' checks."""
import pytest
import torch

from locallearn import TrainConfig, create_model
from locallearn.cli import main
from locallearn.local_net import LocalNet
from locallearn.measure.pipeline_cost import (LinkSpeed, StepCosts, block_seconds,
                                              message_bytes, predict, unit_seconds)
from locallearn.optim import BlockOptimizers
from locallearn.train import build_net


def _costs(block_s, e2e_s, msg=(1000, 1000, 1000)):
    return StepCosts(block_s=list(block_s), message_bytes=list(msg), local_param_bytes=4000,
                     e2e_s=e2e_s, e2e_param_bytes=2000)


def test_prediction_by_hand():
    link = LinkSpeed(latency_s=0.001, bytes_per_s=1e6)  # 1 ms per message, 1 ms per kB
    full = _costs([0.1, 0.2, 0.3, 0.4], 0.8)
    half = _costs([0.06, 0.11, 0.16, 0.21], 0.45)
    p = predict(full, half, n=2, steps=10, link=link)
    # ring all-reduce over 2: 2 steps of (1 ms + bytes/2 at 1 MB/s)
    assert p["e2e_ddp_s"] == pytest.approx(10 * (0.45 + 2 * (0.001 + 0.001)))
    assert p["local_ddp_s"] == pytest.approx(10 * (0.54 + 2 * (0.001 + 0.002)))
    # balanced by time: [0.1 0.2 0.3] [0.4]; stage 0 sends 1 kB: 0.6 + 0.002
    assert p["groups"] == [[0, 3], [3, 4]]
    assert p["stage_s"] == pytest.approx([0.602, 0.4])
    assert p["bottleneck_stage"] == 0
    assert p["ppll_s"] == pytest.approx(10 * 0.602 + 0.4)  # + one fill
    forced = predict(full, half, n=2, steps=10, link=link, groups=[(0, 2), (2, 4)])
    assert forced["stage_s"] == pytest.approx([0.302, 0.7]) and forced["bottleneck_stage"] == 1
    assert "ppll_s" not in predict(full, half, n=8, steps=10, link=link)  # N > K: no pipeline


def test_block_seconds_and_messages_measure_the_step():
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=4, in_chans=1, image_size=(8, 8))
    net = LocalNet(model, 3, "dgl+manpp", image_size=(8, 8))
    opt = BlockOptimizers(net, TrainConfig(lr=0.01))
    x, y = torch.randn(4, 1, 8, 8), torch.randint(0, 4, (4,))
    secs = block_seconds(net, opt, x, y, repeats=2, warmup=1)
    assert len(secs) == 3 and all(0 < s < 5 for s in secs)
    sizes = message_bytes(net, x, y)
    # block 0 sends its output [4, 16, 8, 8] fp32, the image and the int64 labels
    h0 = net._walk(x, cut=False).__next__()[1]
    assert sizes[0] == h0.numel() * 4 + x.numel() * 4 + 4 * 8 and len(sizes) == 2


def test_split_time_balances_measured_times_and_is_saved():
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=4, in_chans=1, image_size=(8, 8))
    times = unit_seconds(model, torch.zeros(4, 1, 8, 8))
    assert len(times) == model.num_body_units and all(t > 0 for t in times)
    cfg = TrainConfig(model="resnet20", method="dgl", blocks=3, split="time")
    data = type("D", (), dict(num_classes=4, in_chans=1, image_size=(8, 8), mean=(0.5,),
                              std=(0.5,), task="classification"))()
    net = build_net(cfg, data)
    assert cfg.boundaries == [net.ranges[1][0], net.ranges[2][0]]
    again = build_net(cfg, data)  # a resume rebuilds the same blocks without timing
    assert again.ranges == net.ranges


@pytest.mark.parametrize("args,msg", [
    (["--pipeline-depth", "3"], "apply to --pipeline jobs"),
    (["--pipeline", "--pipeline-mode", "lockstep", "--pipeline-depth", "3"], "lockstep keeps"),
    (["--pipeline", "--pipeline-mode", "fast"], "pipeline-mode"),
    (["--pipeline", "--ema-sync-every", "0"], "ema-sync-every must be an integer >= 1"),
    (["--pipeline", "--ddp"], "pick one"),
    (["--pipeline"], "needs torchrun"),
])
def test_pipeline_options_are_checked(tmp_path, capsys, monkeypatch, args, msg):
    for var in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    rc = main(["train", "--model", "resnet20", "--method", "dgl", "--blocks", "2", "--dataset",
               "synthetic:1x8x8:4", "--device", "cpu", "--out", str(tmp_path / "r"), *args])
    assert rc == 2 and msg in capsys.readouterr().err
