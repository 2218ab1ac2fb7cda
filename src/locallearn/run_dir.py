"""Run directories: what a run owns, and the checks that keep a user's files safe."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import List

from .errors import ConfigError
from .run_lock import LOCK

CHECKPOINT = "checkpoint.pt"
CONFIG = "config.json"
#: the files a run writes (and owns) in its directory
RUN_FILES = (CONFIG, "metrics.csv", "summary.json", "curves.png", CHECKPOINT)


def _is_temp(p: Path) -> bool:
    """A temp file of an atomic write (``.<run file>.<random>``), left by a kill."""
    return p.name.startswith(".") and p.name[1:].rsplit(".", 1)[0] in RUN_FILES


def contents(folder: Path) -> List[str]:
    """Names in ``folder``, leaving out our own temp files."""
    # a write probe may be another rank's, checking the same folder right now; the lock
    # is the training's own (run_lock.py), taken before this check
    return sorted(p.name for p in Path(folder).iterdir()
                  if not _is_temp(p) and not p.name.startswith(".write-probe.") and p.name != LOCK)


def remove_stale_temps(folder: Path) -> List[Path]:
    """Delete the temp files that a kill during an atomic write left in ``folder``
    (``.checkpoint.pt.<random>`` and the like); return what was removed."""
    removed: List[Path] = []
    if Path(folder).is_dir():
        for p in Path(folder).iterdir():
            if p.is_file() and _is_temp(p):
                try:
                    p.unlink()
                    removed.append(p)
                except OSError:  # someone else's; leave it
                    pass
    return removed


def check_writable_dir(folder: Path, what: str = "--out") -> None:
    """Make ``folder`` (and its parents) if needed and prove a file can be written in it;
    raise ConfigError naming the path and the reason otherwise."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{what} {folder} is a file, not a directory")
    for parent in folder.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"{what} {folder} is below {parent}, which is a file")
            break
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-probe.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ConfigError(f"cannot write into {what} {folder}: {e.strerror or e}") from None


def prepare_run_dir(out: Path, *, resume: bool, force: bool, write: bool = True) -> bool:
    """Check ``out`` before a run writes anything there; return whether to resume.

    A new run needs an empty (or new) directory: an earlier run's files are never
    replaced silently. ``force`` starts over there, deleting only the run files
    (``RUN_FILES``) and leaving anything else. ``resume`` needs a directory holding
    ``config.json``; one killed before its first checkpoint restarts from that config.
    ``write=False`` (the other ranks of a job) checks the same but deletes nothing.
    """
    out = Path(out)
    if resume:
        if out.exists() and not out.is_dir():
            raise ConfigError(f"--out {out} is a file, not a run directory")
        if not (out / CONFIG).is_file():
            if (out / CHECKPOINT).is_file():
                raise ConfigError(f"{out} holds a checkpoint but no {CONFIG}: the run cannot "
                                  "be rebuilt (restore config.json, or start a new run)")
            raise ConfigError(f"nothing to resume: {out} is not a run directory (no {CONFIG})")
        check_writable_dir(out)
        return (out / CHECKPOINT).is_file()
    check_writable_dir(out)
    held = contents(out)
    if held and not force:
        if CHECKPOINT in held:
            raise ConfigError(f"run directory {out} already holds a checkpoint; pass --resume "
                              "to continue it, --force to start over, or choose another --out")
        shown = ", ".join(held[:4]) + (", ..." if len(held) > 4 else "")
        raise ConfigError(f"--out {out} is not empty (holds {shown}); choose another "
                          "--out, or pass --force to replace its run files")
    if force and write:
        for name in RUN_FILES:
            if (out / name).is_file():
                (out / name).unlink()
    return False


def owned_by_run(path: Path) -> bool:
    """Whether ``path`` is one of the files a run directory owns (never overwritten by an
    export, even with --force)."""
    path = Path(path)
    return path.name in RUN_FILES and (path.parent / CONFIG).is_file()


def check_new_file(path: Path, *, force: bool, what: str = "--out") -> None:
    """Refuse to write ``path`` where that would lose data: an existing file without
    ``force``, a run's own file ever, a directory, or a place that cannot be written."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{what} {path} is a directory; give a file name, e.g. "
                          f"{path / 'model.safetensors'}")
    if owned_by_run(path):
        raise ConfigError(f"{what} {path} is a file of the run in {path.parent}; write the "
                          "export elsewhere")
    if path.exists() and not force:
        raise ConfigError(f"{what} {path} already exists; pass --force to replace it")
    check_writable_dir(path.parent, what=f"the folder of {what}")
