"""Unfinished benchmark runs parked in the repository, so that a sitting on a fresh clone
resumes them instead of starting over.

A run trains in runs/ (ignored by git: a new checkout has none of it), which was enough
while sittings shared one checkout; a 30-epoch run takes ~8 h at one CPU thread here, more
than one sitting. ``park`` copies an unfinished run's checkpoint and small files to
benchmarks/results/parked/ (committed at a sitting's end), ``unpark`` puts them back
before the run trains again, and ``discard`` drops them once the run has finished.

Every parked copy stays in git's history for good, so only small checkpoints are parked
(``MAX_MB``): ResNet-32 E2E's is ~4 MB, but DGL's K=16 heads (630k parameters each, the
reference's) and their momentum make ~87 MB, which a 18 MB repository should not carry
for every sitting; ``--park --max-mb 100`` parks one anyway, by hand.

    .venv/bin/python benchmarks/parked_runs.py           # where every unfinished run stands
    .venv/bin/python benchmarks/parked_runs.py --park    # park the stopped ones in runs/
"""
from __future__ import annotations

import argparse
import contextlib
import json
import shutil
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

from locallearn.checkpoint import CHECKPOINT, load_checkpoint
from locallearn.run_lock import holder

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "runs"
PARKED = ROOT / "benchmarks" / "results" / "parked"
# a run's lock is its process's, not the run's; nothing else in a run directory is large
LEFT_BEHIND = {".run.lock"}
MAX_MB = 16.0  # the largest checkpoint parked unless asked (git keeps every copy)


def parked_dir(out: Path) -> Optional[Path]:
    """Where the run training in ``out`` is parked; None for a run outside runs/ (a test's)."""
    try:
        return PARKED / Path(out).resolve().relative_to(RUNS)
    except ValueError:
        return None


def progress(run: Optional[Path]) -> Optional[Tuple[int, int]]:
    """(epochs done, batches into the next) of a run's checkpoint; None without one."""
    if run is None or not (run / CHECKPOINT).is_file():
        return None
    state = load_checkpoint(run / CHECKPOINT)
    return int(state["epoch"]), int(state.get("batch") or 0)


def unfinished(run: Path, done: Optional[Tuple[int, int]] = None) -> bool:
    """A checkpoint short of the epochs its config.json asks for (``done``: its
    ``progress``, when the caller has read it already: a DGL checkpoint is 87 MB)."""
    done, cfg = done or progress(run), run / "config.json"
    if done is None or not cfg.is_file():
        return False
    return done[0] < int(json.loads(cfg.read_text())["epochs"])


def _copy_run(src: Path, dst: Path) -> None:
    """Replace ``dst`` by the files of ``src`` (written aside, then renamed: a copy cut short
    leaves the old one whole)."""
    tmp = dst.with_name(dst.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in src.iterdir():
        if f.is_file() and f.name not in LEFT_BEHIND:
            shutil.copy2(f, tmp / f.name)
    shutil.rmtree(dst, ignore_errors=True)
    tmp.rename(dst)


def park(out: Path, max_mb: Optional[float] = None) -> Optional[Path]:
    """Park the unfinished run in ``out``; returns where, or None (finished, no checkpoint,
    or a checkpoint over ``max_mb``, default ``MAX_MB``, which it says)."""
    out, dst = Path(out), parked_dir(out)
    done = progress(out)
    if dst is None or not unfinished(out, done):
        return None
    mb, cap = (out / CHECKPOINT).stat().st_size / 2**20, MAX_MB if max_mb is None else max_mb
    if mb > cap:
        print(f"== not parked: {out.name}'s checkpoint is {mb:.0f} MB, over {cap:g} MB (git would "
              f"keep every copy); it resumes only where runs/ survives, or park it by hand: "
              f"benchmarks/parked_runs.py --park --max-mb {int(mb) + 1}", flush=True)
        return None
    if progress(dst) != done:
        _copy_run(out, dst)
    return dst


def unpark(out: Path) -> bool:
    """Put a parked run back in ``out`` when that has no checkpoint or an older one (a fresh
    clone, or a sitting elsewhere got further); True if it did."""
    out, src = Path(out), parked_dir(out)
    there, here = progress(src), progress(out)
    if there is None or (here is not None and here >= there):
        return False
    _copy_run(src, out)
    print(f"== resuming {out.name} at epoch {there[0]} batch {there[1]}, parked in {src}",
          flush=True)
    return True


def discard(out: Path) -> None:
    """Drop the parked copy of a run that has finished."""
    dst = parked_dir(out)
    if dst is not None:
        shutil.rmtree(dst, ignore_errors=True)


@contextlib.contextmanager
def parking(out: Path) -> Iterator[None]:
    """Around a run's training: resume a parked copy, park the run if training stops short
    (a stop signal checkpoints first), drop the parked copy once it has finished."""
    unpark(out)
    try:
        yield
    except BaseException:
        park(out)
        raise
    if park(out) is None and not unfinished(out):  # parked if still short (a budget's
        discard(out)                                # epochs grew), else done: dropped


def run_dirs(root: Path) -> List[Path]:
    """Every run directory (one holding a checkpoint) under ``root``."""
    return sorted(p.parent for p in root.rglob(CHECKPOINT)) if root.is_dir() else []


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def _epochs(run: Path) -> str:
    cfg = run / "config.json"
    return str(json.loads(cfg.read_text())["epochs"]) if cfg.is_file() else "?"


def _state(run: Path, done: Tuple[int, int]) -> str:
    return f"epoch {done[0]} of {_epochs(run)} batch {done[1]}"


def _status(run: Path, done: Tuple[int, int], who: Optional[str], max_mb: float) -> str:
    """One line on an unfinished run in runs/: how far, how big, who trains it (``who``:
    its ``holder``), and whether a fresh clone would find it parked."""
    mb = (run / CHECKPOINT).stat().st_size / 2**20
    dst = parked_dir(run)
    there = progress(dst)
    if there == done:
        kept = "parked"
    elif there is not None:
        kept = f"parked at {_state(dst, there)}"
    elif mb > max_mb:
        kept = f"not parked: over {max_mb:g} MB (--park --max-mb {int(mb) + 1} parks it)"
    else:
        kept = "not parked (--park parks it)"
    return (f"{_shown(run)}: {_state(run, done)}, {mb:.0f} MB, "
            f"{'training (' + who + ')' if who else 'stopped'}; {kept}")


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--park", action="store_true",
                   help="park every unfinished run in runs/ whose trainer has stopped")
    p.add_argument("--max-mb", type=float, default=MAX_MB,
                   help=f"park only checkpoints up to this size (default {MAX_MB:g})")
    a = p.parse_args(argv)
    shown = 0
    for run in run_dirs(RUNS):
        done = progress(run)
        if not unfinished(run, done):
            continue
        who = holder(run)
        if a.park and who:  # its checkpoint moves on: park it once the trainer has stopped
            print(f"== not parked: {_shown(run)} is still training ({who}); stop it first "
                  f"(kill -TERM checkpoints it)")
        elif a.park and park(run, a.max_mb):
            print(f"parked {_shown(run)}")
        print(_status(run, done, who, a.max_mb))
        shown += 1
    for run in run_dirs(PARKED):
        out = RUNS / run.relative_to(PARKED)
        if not (out / CHECKPOINT).is_file():  # a fresh clone: only the parked copy
            print(f"{_shown(out)}: parked at {_state(run, progress(run))} in {_shown(run)}; "
                  f"its benchmark resumes it")
            shown += 1
    if not shown:
        print(f"no unfinished runs in {_shown(RUNS)} and none parked in {_shown(PARKED)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
