"""Train one benchmark run under a claim and keep its small files (shared by the bench scripts).

A run trains in runs/<bench>/<name> (checkpoints, not committed; parked in the repository
when it stops short, see parked_runs.py) and, once finished, its
summary, metrics, config and segments are copied to benchmarks/results/<bench>/<name>
(committed), which is what the tables read and what marks it done for a fresh clone."""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional

import torch

from locallearn.config import TrainConfig
from locallearn.checkpoint import atomic_write_text
from parked_runs import parking
from run_claims import claim, note_segment, release

KEPT_FILES = ("summary.json", "metrics.csv", "config.json", "segments.json")


def train_kept(cfg: TrainConfig, kept: Path, label: str) -> bool:
    """Train ``cfg`` (resuming its checkpoint in ``cfg.out``) unless ``kept`` holds its
    summary or another worker has claimed it; True if this process trained it."""
    from locallearn.train import fit

    out = Path(cfg.out)
    if (kept / "summary.json").is_file() or not claim(out):
        return False
    try:
        print(f"== {label} -> {out}", flush=True)
        with parking(out):  # a fresh clone resumes the run parked by an earlier sitting
            note_segment(out, cfg.device)
            started = (out / "config.json").is_file()
            fit(cfg, resume=started, force=not started, progress=False)
        kept.mkdir(parents=True, exist_ok=True)
        for f in KEPT_FILES:
            if (out / f).is_file():
                shutil.copy2(out / f, kept / f)
    finally:
        release(out)
    return True


def keep_heads(out: Path, kept: Path, device: str = "cpu", *, batch_size: Optional[int] = None,
               layout: Optional[Callable[[List[dict]], Any]] = None) -> Any:
    """Each block's own predictor's test metric, MAN++'s scales and EMA lags
    (``locallearn eval --heads``), kept as ``kept/heads.json``; computed once, from the
    checkpoint of a finished run (None while there is neither). ``layout`` reshapes the
    rows for a bench whose table reads another layout; ``batch_size`` defaults to the run's
    evaluation batch."""
    from locallearn.devices import resolve_device
    from locallearn.train import head_report, load_run

    path = kept / "heads.json"
    if path.is_file():
        return json.loads(path.read_text())
    if not (kept / "summary.json").is_file() or not (out / "checkpoint.pt").is_file():
        return None
    cfg, net, data = load_run(out, device=device)
    dev = resolve_device(device)
    rows = head_report(net, data.test_batches(batch_size or cfg.eval_batch_size, dev), dev)
    keep = layout(rows) if layout else rows
    atomic_write_text(path, json.dumps(keep, indent=1) + "\n")
    return keep


def read_heads(kept_dirs: Mapping[Any, Path]) -> Dict[Any, Any]:
    """The kept ``heads.json`` of each run folder that has one, under the key it came with
    (a seed), in the layout its bench wrote."""
    return {key: json.loads((d / "heads.json").read_text())
            for key, d in kept_dirs.items() if (d / "heads.json").is_file()}


def stoppable(work: Callable[[], None]) -> int:
    """Run ``work``; a signal that stopped its run (which checkpointed first) is one line and
    its exit code, not a traceback."""
    from locallearn.stop import Stopped

    try:
        work()
    except Stopped as e:
        print(f"== {e}", flush=True)
        return e.exit_code
    return 0


def in_workers(n: int, work: Callable[[], None]) -> None:
    """Run ``work`` in ``n`` forked processes of one CPU thread each (they share the run list
    through claims), or here when ``n`` <= 1; returns when all are done."""
    if n <= 1:
        code = stoppable(work)
        if code:
            raise SystemExit(code)
        return
    pids = []
    for _ in range(n):
        pid = os.fork()
        if pid == 0:
            torch.set_num_threads(1)
            os._exit(stoppable(work))
        pids.append(pid)
        time.sleep(2)  # let each claim its first run in turn
    for pid in pids:
        os.waitpid(pid, 0)
