"""PPLL benchmarks (issue 17): throughput of the pipeline against single-process, DDP and
E2E training on this machine, the cost model's predictions beside them, the accuracy of
streaming vs lock-step, and the model's predictions at ResNet-101 ImageNet shapes.

    python benchmarks/bench_pipeline.py throughput   # images/s of every configuration (quiet CPU!)
    python benchmarks/bench_pipeline.py costs        # per-block times, link speed -> predictions
    python benchmarks/bench_pipeline.py accuracy     # streaming vs lock-step, 3 seeds (resumable)
    python benchmarks/bench_pipeline.py paper        # ResNet-101 224x224 block times -> N = 4, 8
    python benchmarks/bench_pipeline.py faults       # kill rank 1: how fast rank 0 ends
    python benchmarks/bench_pipeline.py table        # rewrite results/section_pipeline.md

Each part writes its own json under results/pipeline/ and skips what is already there.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import torch

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "pipeline"
RUNS = ROOT / "runs" / "pipeline"
sys.path.insert(0, str(ROOT / "src"))

from locallearn.measure.bench import environment  # noqa: E402

PY = str(ROOT / ".venv" / "bin" / "python")
TORCHRUN = str(ROOT / ".venv" / "bin" / "torchrun")
MODEL, METHOD, BATCH, LIMIT, EPOCHS = "resnet32", "infopro+manpp", 128, 2560, 3
#: name -> (processes, method, K, extra CLI options)
CONFIGS = {
    "E2E, 1 process x 2 threads": (1, "e2e", 1, []),
    "E2E DDP, 2 x 1": (2, "e2e", 1, ["--ddp"]),
    "local K=2, 1 process x 2 threads": (1, METHOD, 2, []),
    "local K=8, 1 process x 2 threads": (1, METHOD, 8, []),
    "local K=2 DDP, 2 x 1": (2, METHOD, 2, ["--ddp"]),
    "local K=8 DDP, 2 x 1": (2, METHOD, 8, ["--ddp"]),
    "PPLL K=2, 2 x 1 (stream)": (2, METHOD, 2, ["--pipeline"]),
    "PPLL K=8 on 2 ranks (stream)": (2, METHOD, 8, ["--pipeline"]),
    "PPLL K=8 --split time on 2 ranks (stream)": (2, METHOD, 8, ["--pipeline", "--split", "time"]),
    "PPLL K=2, 2 x 1 (lockstep)": (2, METHOD, 2, ["--pipeline", "--pipeline-mode", "lockstep"]),
}
#: the MAN++ paper's Table VIII, ResNet-101 on ImageNet, 4 A100s: seconds per epoch
TABLE_VIII = {"ppll": 726, "e2e_ddp": 795, "local_ddp": 973}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _save(name: str, data: Dict[str, Any]) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    data = {**data, "environment": environment(), "date": datetime.date.today().isoformat()}
    (OUT / name).write_text(json.dumps(data, indent=2) + "\n")


def _load(name: str) -> Dict[str, Any]:
    p = OUT / name
    return json.loads(p.read_text()) if p.is_file() else {}


def _train_cmd(procs: int, method: str, k: int, extra: List[str], out: Path,
               seed: int = 0, epochs: int = EPOCHS, limit: int = LIMIT,
               limit_test: int = 256) -> List[str]:
    launch = [PY] if procs == 1 else [TORCHRUN, "--nproc-per-node", str(procs),
                                      "--master-port", str(_port())]
    blocks = [] if method == "e2e" else ["--blocks", str(k)]
    return [*launch, "-m", "locallearn", "train", "--model", MODEL, "--method", method,
            *blocks, "--dataset", "fashion-mnist", "--epochs", str(epochs), "--batch-size",
            str(BATCH), "--limit-train", str(limit), "--limit-test", str(limit_test),
            "--device", "cpu", "--seed", str(seed), "--no-progress", "--force",
            "--out", str(out), *extra]


def throughput() -> None:
    """Images per second (median over epochs 2..EPOCHS) of every configuration."""
    done = _load("throughput.json").get("rows", {})
    for name, (procs, method, k, extra) in CONFIGS.items():
        if name in done:
            continue
        out = RUNS / "throughput" / name.replace(" ", "_").replace(",", "").replace("=", "")
        threads = "2" if procs == 1 else "1"
        t0 = time.time()
        r = subprocess.run(_train_cmd(procs, method, k, extra, out), capture_output=True,
                           text=True, env=dict(os.environ, OMP_NUM_THREADS=threads))
        if r.returncode != 0:
            raise SystemExit(f"{name} failed:\n{r.stderr[-3000:]}")
        rows = [ln.split(",") for ln in (out / "metrics.csv").read_text().splitlines()]
        col = rows[0].index("seconds")
        secs = statistics.median(float(row[col]) for row in rows[2:])
        done[name] = {"procs": procs, "method": method, "blocks": k, "options": extra,
                      "epoch_s": secs, "images_per_s": LIMIT / secs,
                      "command": " ".join(_train_cmd(procs, method, k, extra, Path("OUT"))),
                      "wall_s": time.time() - t0}
        print(f"{name}: {LIMIT / secs:.0f} images/s", flush=True)
        _save("throughput.json", {"rows": done, "limit_train": LIMIT, "batch": BATCH,
                                  "epochs": EPOCHS})


def _link_worker(rank: int, port: int, q: Any) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    res = {}
    for nbytes in (8, 4 << 20):
        t = torch.zeros(nbytes // 4)
        times = []
        for _ in range(30):
            t0 = time.perf_counter()
            if rank == 0:
                dist.send(t, 1)
                dist.recv(t, 1)
            else:
                dist.recv(t, 0)
                dist.send(t, 0)
            times.append((time.perf_counter() - t0) / 2)
        res[nbytes] = statistics.median(times[5:])
    if rank == 0:
        q.put(res)
    dist.destroy_process_group()


def link_speed() -> Dict[str, float]:
    """gloo on this machine: one-way latency (8 bytes) and bandwidth (4 MiB)."""
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    port = _port()
    procs = [ctx.Process(target=_link_worker, args=(r, port, q)) for r in range(2)]
    for p in procs:
        p.start()
    res = q.get(timeout=120)
    for p in procs:
        p.join()
    lat = res[8]
    return {"latency_s": lat, "bytes_per_s": (4 << 20) / max(res[4 << 20] - lat, 1e-9)}


def _step_costs(model: str, method: str, k: int, batch: int, size: int, chans: int,
                classes: int, split: str = "equal", repeats: int = 5) -> Dict[str, Any]:
    from locallearn import TrainConfig, create_model
    from locallearn.local_net import LocalNet
    from locallearn.measure.pipeline_cost import block_seconds, message_bytes
    from locallearn.optim import BlockOptimizers

    torch.manual_seed(0)
    x = torch.randn(batch, chans, size, size)
    y = torch.randint(0, classes, (batch,))
    cfg = TrainConfig(lr=0.01)
    nets = {}
    for m, kk in ((method, k), ("e2e", 1)):
        mdl = create_model(model, num_classes=classes, in_chans=chans, image_size=(size, size))
        nets[m] = LocalNet(mdl, kk, m, image_size=(size, size),
                           split_by=split if kk > 1 else "equal")
    local, e2e = nets[method], nets["e2e"]
    out = {"block_s": block_seconds(local, BlockOptimizers(local, cfg), x, y, repeats),
           "e2e_s": block_seconds(e2e, BlockOptimizers(e2e, cfg), x, y, repeats)[0],
           "message_bytes": message_bytes(local, x, y),
           "local_param_bytes": sum(p.numel() * 4 for p in local.parameters() if p.requires_grad),
           "e2e_param_bytes": sum(p.numel() * 4 for p in e2e.parameters() if p.requires_grad),
           "ranges": [list(r) for r in local.ranges]}
    return out


def costs() -> None:
    """Per-block step times (1 thread: one rank's share of the cores; at batch 128 and at
    the DDP shard 64; 2 threads: the single process), and the link speed."""
    res = _load("costs.json")
    if "link" not in res:
        res["link"] = link_speed()
    for k, split in ((2, "equal"), (8, "equal"), (8, "time")):
        key = f"K={k} {split}"
        if key in res.get("blocks", {}):
            continue
        row = {}
        for threads, batch in ((1, BATCH), (1, BATCH // 2), (2, BATCH)):
            torch.set_num_threads(threads)
            row[f"{threads}t_b{batch}"] = _step_costs(MODEL, METHOD, k, batch, 28, 1, 10, split)
        res.setdefault("blocks", {})[key] = row
        print(key, {n: [round(t, 4) for t in v["block_s"]] for n, v in row.items()}, flush=True)
        _save("costs.json", res)
    _save("costs.json", res)


def paper() -> None:
    """Block times of tv:resnet101 at 224x224 (K=4 and K=8 at the stages / by time) on this
    CPU; predictions at N = 4 and 8 devices, in ratios to E2E DDP."""
    res = _load("paper.json")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    batch = 16
    for k, split in ((4, "stages"), (8, "time"), (4, "time")):
        key = f"K={k} {split}"
        if key in res:
            continue
        row = {}
        for b in (batch, batch // 4, batch // 8):
            row[f"b{b}"] = _step_costs("tv:resnet101", "infopro+manpp", k, b, 224, 3, 1000,
                                       split, repeats=2)
            print(key, b, [round(t, 3) for t in row[f"b{b}"]["block_s"]], flush=True)
        res[key] = row
        _save("paper.json", res)


SEEDS = (0, 1, 2)
ACC_LIMIT = 6000
ACCURACY = {"lockstep": ["--pipeline-mode", "lockstep"], "stream depth 2": [],
            "stream depth 2, EMA sync every 8": ["--ema-sync-every", "8"]}


def accuracy() -> None:
    """ResNet-32 infopro+manpp K=4 on 2 ranks, Fashion-MNIST 6k/2k, 3 epochs, 3 seeds."""
    for seed in SEEDS:
        for name, extra in ACCURACY.items():
            out = RUNS / "accuracy" / f"{name.replace(' ', '_').replace(',', '')}_s{seed}"
            if (out / "summary.json").is_file() or (
                    OUT / "accuracy" / out.name / "summary.json").is_file():
                continue
            resume = ["--resume"] if (out / "checkpoint.pt").is_file() else []
            cmd = _train_cmd(2, METHOD, 4, ["--pipeline", "--checkpoint-minutes", "2",
                                            *extra, *resume],
                             out, seed=seed, epochs=3, limit=ACC_LIMIT, limit_test=2000)
            if resume:
                cmd.remove("--force")
            r = subprocess.run(cmd, capture_output=True, text=True,
                               env=dict(os.environ, OMP_NUM_THREADS="1"))
            if r.returncode != 0:
                raise SystemExit(f"{name} seed {seed} failed:\n{r.stderr[-3000:]}")
            keep = OUT / "accuracy" / out.name
            keep.mkdir(parents=True, exist_ok=True)
            for f in ("summary.json", "metrics.csv", "config.json"):
                (keep / f).write_text((out / f).read_text())
            print(name, seed, json.loads((out / "summary.json").read_text())["final_test_acc"],
                  flush=True)
    if not (OUT / "accuracy.json").is_file():  # when and where the runs were made
        _save("accuracy.json", {"limit_train": ACC_LIMIT, "seeds": list(SEEDS)})


def faults() -> None:
    """Kill rank 1 of a 2-rank pipeline mid-epoch; time how long rank 0 takes to exit."""
    import signal

    from locallearn.checkpoint import load_checkpoint

    out, port = RUNS / "faults", _port()
    env = dict(os.environ, OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
               WORLD_SIZE="2")
    cmd = _train_cmd(1, "dgl+manpp", 2, ["--pipeline"], out, epochs=50, limit=1024)
    procs = [subprocess.Popen(cmd, env=dict(env, RANK=str(r), LOCAL_RANK=str(r)),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for r in range(2)]
    deadline = time.time() + 300
    while not (out / "checkpoint.pt").is_file() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)  # into epoch 2
    procs[1].send_signal(signal.SIGKILL)
    t0 = time.time()
    _, err = procs[0].communicate(timeout=120)
    seconds = time.time() - t0
    lines = [ln for ln in err.splitlines() if ln.strip()]
    net = load_checkpoint(out / "checkpoint.pt")["net"]
    _save("faults.json", {"rank0_exit": procs[0].returncode, "seconds": seconds,
                          "message": lines[-1] if lines else "", "checkpoint_entries": len(net)})
    print(f"rank 0 exited {procs[0].returncode} after {seconds:.1f} s: {lines[-1] if lines else ''}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("part", choices=["throughput", "costs", "accuracy", "paper", "faults", "table"])
    a = p.parse_args()
    if a.part == "table":
        import pipeline_table

        pipeline_table.write_section()
    else:
        globals()[a.part]()


if __name__ == "__main__":
    main()
