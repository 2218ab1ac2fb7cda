"""Atomic writes and safe checkpoint loading (weights_only: a file never runs code)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict

import torch

from .errors import ConfigError

CHECKPOINT = "checkpoint.pt"


def _atomic(path: Path, write: Callable[[str], None]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)  # atomic on POSIX: readers see the old or the new file
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temp file + rename."""

    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write(text)

    _atomic(path, write)


def save_checkpoint(path: Path, state: Dict[str, Any]) -> None:
    """``torch.save`` through a temp file + rename, so a kill never leaves half a file."""
    _atomic(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: Path, map_location: Any = "cpu") -> Dict[str, Any]:
    """Load with ``weights_only=True``; a missing or corrupt file raises ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises several types for truncated / foreign files
        raise ConfigError(f"checkpoint {path} is corrupt or unreadable "
                          f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    if not isinstance(state, dict) or "net" not in state:
        raise ConfigError(f"checkpoint {path} is not a locallearn checkpoint")
    return state
