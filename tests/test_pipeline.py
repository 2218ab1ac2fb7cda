"""PPLL: pipeline-parallel local learning over gloo processes on CPU."""
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
import torch.multiprocessing as mp

from locallearn import ConfigError, TrainConfig
from locallearn.checkpoint import load_checkpoint
from locallearn.parallel.messages import decode, encode
from locallearn.parallel.stage import assign_blocks
from locallearn.train import fit

pytestmark = pytest.mark.dist


def _port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cfg(out, method, blocks, pipeline, epochs=2, **kw):
    return TrainConfig(model="resnet20", method=method, blocks=blocks,
                       dataset=kw.pop("dataset", "synthetic:1x8x8:4"), epochs=epochs,
                       batch_size=16, limit_train=kw.pop("limit_train", 64), limit_test=32,
                       device="cpu", out=str(out), pipeline=pipeline, checkpoint_minutes=0,
                       **kw)


def _worker(rank, world, port, cfg, resume, stop_after_steps):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    fit(cfg, progress=False, resume=resume, stop_after_steps=stop_after_steps)


def _pipeline(cfg, world, resume=False, stop_after_steps=None):
    mp.spawn(_worker, args=(world, _port(), cfg, resume, stop_after_steps), nprocs=world,
             join=True)


def _net(out):
    return load_checkpoint(out / "checkpoint.pt")["net"]


def _metrics(out):
    # the seconds differ, the rest must not
    return [line.rsplit(",", 2)[0] for line in (out / "metrics.csv").read_text().splitlines()]


# ---- messages --------------------------------------------------------------------------
def test_targets_of_every_task_survive_the_trip():
    g = torch.Generator().manual_seed(0)
    tree = {"h": torch.randn(2, 3, 4, 4, generator=g), "image": torch.rand(2, 1, 5, 5),
            "y_cls": torch.tensor([3, 1]), "mask": torch.randint(0, 255, (2, 5, 5)).to(torch.uint8),
            "boxes": [{"boxes": torch.tensor([[1.0, 2.0, 3.0, 4.0]]), "labels": torch.tensor([2])},
                      {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}],
            "bank": {"c3": torch.randn(2, 2, 3, 3).to(torch.bfloat16)},
            "flags": torch.tensor([True, False]), "scalar": torch.tensor(1.5, dtype=torch.float64)}
    info = {"kind": "batch", "step": 7, "flag": None}
    got_info, got = decode(*encode(info, tree, torch.device("cpu")))
    assert got_info == info

    def same(a, b):
        if isinstance(a, torch.Tensor):
            assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
        elif isinstance(a, dict):
            assert a.keys() == b.keys()
            for k in a:
                same(a[k], b[k])
        else:
            assert len(a) == len(b)
            for x, y in zip(a, b):
                same(x, y)
    same(tree, got)
    with pytest.raises(TypeError, match="object"):
        encode(info, {"x": object()}, torch.device("cpu"))


def test_blocks_are_assigned_contiguously():
    assert assign_blocks(4, 2) == [(0, 2), (2, 4)]
    assert assign_blocks(5, 2) == [(0, 3), (3, 5)]
    assert assign_blocks(4, 2, costs=[5.0, 1.0, 1.0, 1.0]) == [(0, 1), (1, 4)]
    with pytest.raises(ConfigError, match="at least 3 blocks"):
        assign_blocks(2, 3)


# ---- lock-step = single process -------------------------------------------------------
@pytest.mark.parametrize("method,blocks,world", [("dgl", 2, 2), ("infopro+manpp", 3, 2)])
def test_lockstep_pipeline_equals_single_process(tmp_path, method, blocks, world):
    torch.set_num_threads(1)
    fit(_cfg(tmp_path / "one", method, blocks, False), progress=False)
    _pipeline(_cfg(tmp_path / "pipe", method, blocks, True, pipeline_mode="lockstep"), world)
    one, pipe = _net(tmp_path / "one"), _net(tmp_path / "pipe")
    assert set(one) == set(pipe)
    for k in one:
        assert torch.allclose(one[k].float(), pipe[k].float(), atol=1e-6, rtol=0), k
    assert _metrics(tmp_path / "one") == _metrics(tmp_path / "pipe")
    # training did happen (the epochs differ): the equality is not that of two idle nets
    assert _metrics(tmp_path / "one")[1] != _metrics(tmp_path / "one")[2]
    # each rank's file holds its own blocks only
    files = sorted((tmp_path / "pipe" / "pipeline").glob("rank*.pt"))
    assert len(files) == world
    shares = [set(load_checkpoint(f)["net"]) for f in files]
    assert not shares[0] & shares[1] and shares[0] | shares[1] == set(one)


# ---- streaming -------------------------------------------------------------------------
def test_streaming_trains_and_resumes_exactly(tmp_path):
    kw = dict(pipeline_depth=2, limit_train=128, lr=0.05)
    full = _cfg(tmp_path / "full", "dgl+manpp", 3, True, epochs=3, **kw)
    _pipeline(full, 3)
    rows = [line.split(",") for line in (tmp_path / "full" / "metrics.csv").read_text()
            .splitlines()[1:]]
    losses = [float(r[1]) for r in rows]
    assert len(rows) == 3 and losses[-1] < losses[0]
    assert all(0.0 <= float(r[2]) <= 1.0 for r in rows)
    # killed mid-epoch 2 (a checkpoint there), then resumed: the same run, bit for bit
    part = _cfg(tmp_path / "part", "dgl+manpp", 3, True, epochs=3, **kw)
    _pipeline(part, 3, stop_after_steps=11)
    assert load_checkpoint(tmp_path / "part" / "checkpoint.pt",
                           merge_pipeline=False)["pipeline"]["step"] == 11
    _pipeline(part, 3, resume=True)
    a, b = _net(tmp_path / "full"), _net(tmp_path / "part")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert _metrics(tmp_path / "full") == _metrics(tmp_path / "part")


# ---- the CLI under torchrun and faults ------------------------------------------------
def _torchrun():
    found = shutil.which("torchrun") or os.path.join(os.path.dirname(sys.executable), "torchrun")
    if not os.path.exists(found):
        pytest.skip("torchrun not installed")
    return found


TRAIN = ["-m", "locallearn", "train", "--model", "resnet20", "--dataset", "synthetic:1x8x8:4",
         "--batch-size", "16", "--device", "cpu", "--no-progress", "--pipeline"]


def test_a_bad_argument_ends_every_rank_with_exit_2_and_one_message(tmp_path):
    bad = [*TRAIN, "--method", "dgl", "--blocks", "2", "--epochs", "1", "--limit-train", "32",
           "--out", str(tmp_path / "r")]
    message = "error: a pipeline of 3 ranks needs at least 3 blocks"
    # the ranks as torchrun starts them, each watched: all exit 2, one says why
    port = _port()
    procs = [subprocess.Popen([sys.executable, *bad], stderr=subprocess.PIPE, text=True,
                              env=dict(os.environ, OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1",
                                       MASTER_PORT=str(port), RANK=str(r), WORLD_SIZE="3",
                                       LOCAL_RANK=str(r)))
             for r in range(3)]
    errs = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [2, 2, 2]
    assert sum(e.count(message) for e in errs) == 1 and not any("Traceback" in e for e in errs)
    # under torchrun itself: a failed job, the message once, no traceback from our code
    r = subprocess.run([_torchrun(), "--nproc-per-node", "3", "--master-port", str(_port()),
                        *bad], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.returncode != 0 and r.stderr.count(message) == 1
    assert "exitcode  : 2" in r.stderr and "locallearn/" not in r.stderr


def _rank_proc(rank, world, port, out, extra=()):
    env = dict(os.environ, OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
               RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
               PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, *TRAIN, "--method", "dgl+manpp", "--blocks", "2",
                             "--epochs", "50", "--limit-train", "4096", "--out", str(out),
                             "--dist-timeout", "120", *extra],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_killing_one_rank_ends_the_others_quickly_and_keeps_the_checkpoint(tmp_path):
    out, port = tmp_path / "run", _port()
    procs = [_rank_proc(r, 2, port, out) for r in range(2)]
    try:
        deadline = time.time() + 120
        while not (out / "curves.png").is_file() and time.time() < deadline:
            time.sleep(0.2)  # (the last file written at the end of epoch 1)
        assert (out / "curves.png").is_file(), procs[0].stderr.read() if procs[0].poll() else ""
        time.sleep(1.5)  # mid-epoch 2: the ranks talk P2P, so rank 0 can name its lost peer
        procs[1].send_signal(signal.SIGKILL)
        t0 = time.time()
        _, err = procs[0].communicate(timeout=60)
        took = time.time() - t0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert procs[0].returncode == 1 and took < 60
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines[-1].startswith("locallearn: error: rank 0:") and "rank 1" in lines[-1], err[-800:]
    assert "Traceback" not in err
    net = load_checkpoint(out / "checkpoint.pt")["net"]  # the last checkpoint is whole
    assert any(k.startswith("model.units.") for k in net) and len(net) > 10


@pytest.mark.parametrize("task", ["segmentation", "detection", "super_resolution"])
def test_dense_targets_and_bank_travel_through_the_pipe(tmp_path, task):
    """Masks, box lists, HR images and the bank's skip features (the FPN's C3/C4, the
    decoder's stride-4 map, EDSR's shallow features) cross the ranks: lock-step = one
    process, for dense tasks too."""
    if task == "super_resolution":
        from test_sr_data import write_png

        root = tmp_path / "data"
        for i in range(3):
            write_png(root / "train" / f"t{i}.png", 24, 24, seed=i)
        write_png(root / "test" / "a.png", 24, 24, seed=9)
        kw = dict(model="edsr_tiny_x2", dataset="sr-folder:patches=8", method="slm+manpp",
                  blocks=3, image_size=8, optimizer="adamw", lr=1e-3)
    elif task == "segmentation":
        from test_dense_data import make_voc

        names = [f"i{i}" for i in range(6)]
        make_voc(tmp_path / "data", {"train": names[:4], "val": names[4:]},
                 {n: (24, 24) for n in names})
        root = tmp_path / "data"
        kw = dict(model="deeplabv3_resnet20", dataset="voc-seg", method="slm+manpp", blocks=3,
                  image_size=32)
    else:
        from test_det_data import _voc_layout

        root = _voc_layout(tmp_path)[0]
        kw = dict(model="retinanet_resnet18_w64", dataset="voc-det", method="greedy+manpp",
                  blocks=4, split="stages", image_size=64, optimizer="adamw", lr=1e-4)
    common = dict(data_dir=str(root), epochs=1, batch_size=2, device="cpu",
                  checkpoint_minutes=0, **kw)
    # DeepLab's dropout draws random numbers: each rank draws from its own generator, so
    # after step 1 only rank 0's blocks (whose draws come first) still match one process
    steps = 1 if task == "segmentation" else None
    torch.set_num_threads(1)
    fit(TrainConfig(out=str(tmp_path / "one"), **common), progress=False,
        stop_after_steps=steps)
    _pipeline(TrainConfig(out=str(tmp_path / "pipe"), pipeline=True, pipeline_mode="lockstep",
                          **common), 2, stop_after_steps=steps)
    one, pipe = _net(tmp_path / "one"), _net(tmp_path / "pipe")
    compared = set(one)
    if steps:
        compared = set(load_checkpoint(next((tmp_path / "pipe" / "pipeline").glob("rank0-*")))
                       ["net"])
        # ... except the EMA copy tracking rank 1's unit (moved by rank 1's dropout draws)
        compared = {k for k in compared if not k.startswith("bridges.1.ema.")}
        assert len(compared) > 10
    for k in compared:
        assert torch.allclose(one[k].float(), pipe[k].float(), atol=1e-6, rtol=0), k
    if not steps:
        assert _metrics(tmp_path / "one") == _metrics(tmp_path / "pipe")
    assert set(one) == set(pipe)
