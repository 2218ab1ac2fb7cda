import json

import pytest
import torch

from locallearn import ConfigError
from locallearn.cli import main
from locallearn.measure.bench import BenchSpec, run_bench

SPEC = dict(model="resnet20", batch_size=4, device="cpu", image_size=12, in_chans=1,
            warmup=1, repeats=2)


def test_memory_rows_and_ratios():
    rows = run_bench("memory", BenchSpec(methods=["e2e", "dgl", "greedy+manpp"], blocks=[2, 10], **SPEC))
    assert [(r["method"], r["blocks"]) for r in rows] == [
        ("e2e", 1), ("dgl", 2), ("dgl", 10), ("greedy+manpp", 2), ("greedy+manpp", 10)]
    e2e = rows[0]
    assert e2e["peak_bytes_ratio"] == 1.0 and e2e["flops_per_step_ratio"] == 1.0
    for r in rows:
        assert r["peak_bytes"] == r["param_bytes"] + r["grad_bytes"] + r["optim_bytes"] + r["activation_bytes"]
        assert r["activation_bytes_ratio"] == pytest.approx(r["activation_bytes"] / e2e["activation_bytes"])
    greedy10 = rows[-1]
    assert greedy10["activation_bytes"] < e2e["activation_bytes"]
    assert greedy10["flops_per_step"] > e2e["flops_per_step"]  # the bridges run two unit copies
    assert "step_time_s" not in greedy10


def test_speed_mode_and_cli_json(tmp_path, capsys):
    out = tmp_path / "b.json"
    rc = main(["bench", "speed", "--model", "resnet20", "--method", "dgl", "--blocks", "4",
               "--batch-size", "4", "--device", "cpu", "--image-size", "12", "--repeats", "2",
               "--warmup", "1", "--json", str(out)])
    assert rc == 0
    data = json.loads(out.read_text())
    assert data["env"]["torch"] and len(data["rows"]) == 2
    row = data["rows"][1]
    assert row["step_time_s"] > 0 and row["flop_efficiency"] > 0
    assert "FLOP eff" in capsys.readouterr().out


def test_bad_bench_input(capsys):
    with pytest.raises(ConfigError, match="bench mode 'size'"):
        run_bench("size", BenchSpec(**SPEC))
    assert main(["bench", "memory", "--model", "resnet20", "--method", "dgl", "--blocks", "11",
                 "--device", "cpu"]) == 2
    assert "K=11" in capsys.readouterr().err


def test_timing_takes_the_steps_in_turns():
    from locallearn.measure.timing import time_interleaved

    calls = []
    times = time_interleaved([lambda: calls.append("a"), lambda: calls.append("b")],
                             torch.device("cpu"), warmup=1, repeats=3)
    assert calls == ["a", "b"] + ["a", "b"] * 3  # warm-up, then alternating
    assert [len(t) for t in times] == [3, 3] and all(x >= 0 for t in times for x in t)
