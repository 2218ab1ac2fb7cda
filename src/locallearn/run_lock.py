"""One process at a time in a run directory.

Two trainings writing the same ``--out`` (a resume started while the run is still going,
a benchmark queue started twice) would interleave their checkpoints and metrics and
leave a run that is neither. The training process holds an advisory ``flock`` on
``<out>/.run.lock`` for its whole life; a second one is refused with the holder's pid.
The kernel drops the lock when the holder dies, so a killed run never blocks its
resume. Where ``fcntl`` is missing (Windows) no lock is taken.
"""
from __future__ import annotations

import contextlib
import datetime
import errno
import os
import socket
from pathlib import Path
from typing import Iterator, Optional

from .errors import ConfigError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK = ".run.lock"


def _holder(path: Path) -> str:
    """What the lock file says about its holder (written when it took the lock)."""
    try:
        text = path.read_text().strip()
    except OSError:
        text = ""
    return f" ({text})" if text else ""


def _lock(out: Path) -> int:
    """An fd holding the exclusive lock on ``out``'s lock file; ConfigError if another
    process holds it; OSError if the file cannot be made or locked at all."""
    path = out / LOCK
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise  # no locks on this filesystem (some network mounts): train unlocked
            raise ConfigError(f"run directory {out} is in use by another training "
                              f"process{_holder(path)}; wait for it to end, or stop it "
                              "(SIGTERM or Ctrl-C checkpoints it) and then --resume") from None
        try:  # the holder before us may have unlinked the file we opened: lock the new one
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def holder(out: Path) -> Optional[str]:
    """Who trains in ``out`` now (the lock file's text, e.g. ``pid 12 on host, since ...``),
    or None when no live process holds its lock (a killed holder's file does not count)."""
    path = Path(out) / LOCK
    if fcntl is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:  # a shared lock is refused while the training holds its exclusive one
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return _holder(path).strip(" ()") or "another process"
        return None
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


@contextlib.contextmanager
def hold_run_dir(out: Path, enabled: bool = True) -> Iterator[None]:
    """Hold ``out``'s run lock while the block runs; raise ConfigError if another
    process holds it. ``out`` is made if missing (and removed again if nothing was
    written there: a refused resume leaves nothing behind); the lock file goes at the end."""
    out = Path(out)
    if not enabled or fcntl is None:
        yield
        return
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd = _lock(out)
    except OSError:  # not a place we can write (the run's own checks say why, clearly),
        fd = -1      # or no locks there: train unlocked, and leave no empty lock file
        with contextlib.suppress(OSError):
            if (out / LOCK).stat().st_size == 0:
                (out / LOCK).unlink()
    if fd < 0:
        yield
        return
    path = out / LOCK
    try:
        os.ftruncate(fd, 0)  # a killed holder's text
        os.write(fd, (f"pid {os.getpid()} on {socket.gethostname()}, since "
                      f"{datetime.datetime.now().isoformat(timespec='seconds')}").encode())
        yield
    finally:
        # unlinked while still locked, so that whoever opened it meanwhile sees a stale
        # inode after our unlock (``_lock`` then tries again)
        with contextlib.suppress(OSError):
            path.unlink()
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
        if created:
            with contextlib.suppress(OSError):  # only if nothing was written there
                out.rmdir()
