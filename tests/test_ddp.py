"""Data parallel local learning over two gloo processes on CPU."""
import os
import shutil
import socket
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from locallearn import ConfigError, TrainConfig, wrap
from locallearn.cli import main
from locallearn.optim import BlockOptimizers
from locallearn.parallel import allreduce_grads, init_distributed

pytestmark = pytest.mark.dist


def _net():
    torch.manual_seed(0)  # no BatchNorm: per-rank batch statistics would differ by design
    seq = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                        nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
                        nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4)))
    return wrap(seq, blocks=3, method="greedy+manpp", image_size=8)


def _data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(8, 1, 8, 8, generator=g), torch.randint(0, 4, (8,), generator=g)


def _step(net, x, y, world):
    opt = BlockOptimizers(net, TrainConfig(lr=0.1))
    net.train_step(x, y)
    allreduce_grads([p for p in net.parameters() if p.requires_grad], world)
    for j in range(net.k):
        opt.after_block(j)
    net.ema_update()


def _worker(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    ctx = init_distributed("cpu")
    x, y = _data()
    per = len(y) // world
    net = _net()
    _step(net, x[rank * per:(rank + 1) * per], y[rank * per:(rank + 1) * per], world)
    if ctx.is_main:
        torch.save({k: v.clone() for k, v in net.state_dict().items()}, out)
    dist.barrier()
    dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_with_half_batches_equal_one_with_the_whole(tmp_path):
    out = str(tmp_path / "ddp.pt")
    mp.spawn(_worker, args=(2, _free_port(), out), nprocs=2, join=True)
    ddp_state = torch.load(out, weights_only=True)
    ref = _net()
    x, y = _data()
    _step(ref, x, y, 1)
    changed = 0
    for k, v in ref.state_dict().items():
        assert torch.allclose(ddp_state[k], v, atol=1e-5), k
        changed += not torch.equal(v, _net().state_dict()[k])
    assert changed > 0  # the step did move the parameters


def test_ddp_without_torchrun_exits_2(tmp_path, capsys, monkeypatch):
    for var in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ConfigError, match="torchrun"):
        init_distributed("cpu")
    rc = main(["train", "--model", "resnet20", "--method", "dgl", "--blocks", "2", "--dataset",
               "synthetic:1x8x8:4", "--ddp", "--device", "cpu", "--out", str(tmp_path / "r")])
    assert rc == 2 and "torchrun" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("torchrun") is None and not os.path.exists(
    os.path.join(os.path.dirname(sys.executable), "torchrun")), reason="torchrun not installed")
def test_torchrun_cli_two_processes(tmp_path):
    torchrun = shutil.which("torchrun") or os.path.join(os.path.dirname(sys.executable), "torchrun")
    out = tmp_path / "run"
    r = subprocess.run([torchrun, "--nproc-per-node", "2", "--master-port", str(_free_port()),
                        "-m", "locallearn", "train", "--model", "resnet20", "--method", "dgl+manpp",
                        "--blocks", "3", "--dataset", "synthetic:1x8x8:4", "--epochs", "1",
                        "--batch-size", "16", "--limit-train", "64", "--limit-test", "32",
                        "--device", "cpu", "--ddp", "--no-progress", "--out", str(out)],
                       capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count('"final_test_acc"') == 1  # rank 0 alone reports
    assert (out / "checkpoint.pt").is_file() and (out / "metrics.csv").is_file()
