"""How a run ends early: signals turned into a flag the loop reads between steps, and
the failures that end a run with one line and a non-zero exit code."""
from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any, Dict, Optional


class RunError(RuntimeError):
    """A run could not go on (not a user mistake): the CLI prints one line, exit code 1."""


class NonFiniteLoss(RunError):
    """The loss became NaN or infinite; the last checkpoint (of finite weights) is kept."""


class PeerError(RunError):
    """Another rank of a distributed job failed or stalled (a collective timed out)."""


class Stopped(Exception):
    """The run stopped on a signal after checkpointing; ``signum`` says which."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


class StopSignals:
    """While active, SIGINT and SIGTERM set ``self.signum`` instead of killing the
    process, so the loop can finish the step, checkpoint and stop cleanly. A second
    signal of the same kind interrupts at once (KeyboardInterrupt / SystemExit)."""

    def __init__(self) -> None:
        self.signum: Optional[int] = None
        self._old: Dict[int, Any] = {}

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        if self.signum is not None:  # asked twice: the user means it
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            raise SystemExit(128 + signum)
        self.signum = signum

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():  # handlers live there only
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)
        self._old.clear()

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""
