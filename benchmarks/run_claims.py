"""Claims and segments of a resumable benchmark run, shared by every bench: workers (any
number, started or killed at will) claim runs through ``<run>.claim`` files, and each
(re)start of a run notes in its segments.json where it trained."""
from __future__ import annotations

import datetime
import json
import os
from pathlib import Path

from locallearn.checkpoint import CHECKPOINT, atomic_write_text, load_checkpoint
from locallearn.devices import resolve_device
from locallearn.measure.bench import environment


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed worker not yet reaped by its parent is a zombie: dead for our purpose
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def claim(out: Path) -> bool:
    """Atomically claim a run for this process; a claim left by a dead process is taken over."""
    path = out.parent / f"{out.name}.claim"
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                owner = int(path.read_text() or 0)
            except (OSError, ValueError):
                owner = 0
            if owner and owner != os.getpid() and _alive(owner):
                return False
            path.unlink(missing_ok=True)  # stale: its process was killed
            continue
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        return True
    return False


def release(out: Path) -> None:
    (out.parent / f"{out.name}.claim").unlink(missing_ok=True)


SEGMENTS = "segments.json"


def note_segment(out: Path, device: str) -> None:
    """Append where this (re)start trains to <run>/segments.json: a run may be started on
    a GPU and finished on a CPU (it resumes bit-exactly only on the same kind of device)."""
    path, ckpt = out / SEGMENTS, out / CHECKPOINT
    segments = json.loads(path.read_text()) if path.is_file() else []
    env, dev = environment(), resolve_device(device)
    segments.append(dict(from_epoch=load_checkpoint(ckpt)["epoch"] if ckpt.is_file() else 0,
                         device=dev.type, machine=env.get("gpu", "") if dev.type == "cuda"
                         else f"{env['machine']} CPU, {env['cpu_threads']} thread(s)",
                         torch=env["torch"], date=str(datetime.date.today())))
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(segments, indent=1) + "\n")
