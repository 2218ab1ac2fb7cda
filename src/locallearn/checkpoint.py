"""Atomic writes and safe checkpoint loading (weights_only: a file never runs code)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict

import torch

from .errors import ConfigError
from .run_dir import CHECKPOINT  # noqa: F401  (re-exported)


_UMASK = os.umask(0)
os.umask(_UMASK)


class WriteError(ConfigError):
    """A run file could not be written (disk full, read-only, not a directory): the
    previous version of the file, if any, is intact."""


def _atomic(path: Path, write: Callable[[str], None]) -> None:
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        os.close(fd)
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; a run file is a normal file
        os.replace(tmp, path)  # atomic on POSIX: readers see the old or the new file
    except (OSError, RuntimeError) as e:  # torch.save reports a failed write as RuntimeError
        kept = " (the previous one is intact)" if path.is_file() else ""
        reason = e.strerror if isinstance(e, OSError) and e.strerror else \
            "the write failed (disk full, or a file-size limit?): " + \
            (str(e).strip().splitlines() or [type(e).__name__])[-1][:120]
        raise WriteError(f"cannot write {path}: {reason}{kept}") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temp file + rename."""

    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write(text)

    _atomic(path, write)


def atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` to fill a temp file, then rename it onto ``path``."""
    _atomic(path, write)


def save_checkpoint(path: Path, state: Dict[str, Any]) -> None:
    """``torch.save`` through a temp file + rename, so a kill never leaves half a file."""
    _atomic(path, lambda tmp: torch.save(state, tmp))


def _first_line(e: BaseException) -> str:
    # torch's weights_only failure explains how to unpickle arbitrary code: never repeat
    # that advice; keep the one line that says what is wrong
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    useful = [ln for ln in lines if "weights_only" not in ln and "WeightsUnpickler" not in ln
              and not ln.lower().startswith(("(1)", "(2)", "check the documentation",
                                             "in pytorch 2.6", "please file an issue"))]
    return (useful or [type(e).__name__])[0][:200]


def load_checkpoint(path: Path, map_location: Any = "cpu",
                    merge_pipeline: bool = True) -> Dict[str, Any]:
    """Load with ``weights_only=True``; a missing or corrupt file raises ConfigError.

    A pipeline run's ``checkpoint.pt`` is a manifest of per-rank files: they are merged
    into one checkpoint (unless ``merge_pipeline=False``: the manifest itself)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises several types for truncated / foreign files
        if "weights_only" in str(e) or "Unsupported global" in str(e):
            raise ConfigError(f"checkpoint {path} holds Python objects, not a locallearn "
                              "checkpoint (locallearn never unpickles code)") from None
        raise ConfigError(f"checkpoint {path} is corrupt or unreadable "
                          f"({type(e).__name__}: {_first_line(e)})") from None
    if isinstance(state, dict) and "pipeline" in state and "net" not in state:
        if not merge_pipeline:
            return state
        from .parallel.pipe_ckpt import merged_checkpoint  # (it imports this module)

        return merged_checkpoint(path.parent, state)
    if not isinstance(state, dict) or "net" not in state:
        raise ConfigError(f"checkpoint {path} is not a locallearn checkpoint")
    return state
