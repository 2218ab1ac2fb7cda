"""The trust audit's outcome of a case and the checks that judge it (benchmarks/trust_cases.py)."""

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Tuple

import trust_fixtures as fx

Prep = Callable[[Path, Path], None]
TRACEBACK = "Traceback (most recent call last)"
SAID = re.compile(r"(\[rank\d+\]: )?locallearn: ")  # the CLI's own error line, from any rank
RAISED = re.compile(r"\[rank\d+\]: [\w.]+(Error|Exception)\b")  # a worker's exception


@dataclass
class Outcome:
    """What a case's last command did; what its check judges."""

    rc: Optional[int]
    stdout: str
    stderr: str
    hang: bool
    w: Path
    f: Path
    acted: bool = True  # the case's signal was sent while the command ran
    net: List[str] = field(default_factory=list)  # hosts it tried to reach
    exc: Optional[dict] = None  # last uncaught exception: type, mro, msg

    @property
    def traceback(self) -> bool:
        return TRACEBACK in self.stderr

    @property
    def lines(self) -> List[str]:
        """stderr lines a user reads: no progress bars, warnings or argparse usage block."""
        out: List[str] = []
        skip_indented = False
        for ln in (s for row in self.stderr.splitlines() for s in row.split("\r")):
            if not ln.strip() or (skip_indented and ln[:1].isspace()):
                continue
            skip_indented = ln.startswith("usage:") or bool(re.search(r"\w+Warning: ", ln))
            if not skip_indented and not re.search(r"\d+%\||\bit/s\]|s/it\]", ln):
                out.append(ln)
        return out

    @property
    def line(self) -> str:
        """The last line on stderr; under torchrun's failure summary (a ==== rule), the
        last line a worker wrote: a locallearn error or an exception."""
        rows = [s for row in self.stderr.splitlines() for s in row.split("\r") if s.strip()]
        if rows and not rows[-1].strip("= "):
            rows = ([r for r in rows if SAID.match(r)] or [r for r in rows if RAISED.match(r)] or rows)
        return rows[-1].strip()[:160] if rows else ""


Check = Callable[[Outcome], Optional[str]]  # None: handled well; else what is wrong


@dataclass(frozen=True)
class Case:
    id: str
    cls: int  # issue 13's sections: 1 data loss .. 6 python API
    what: str
    cmd: str  # as typed, with $W, $F, $TINY, $BASE; more commands after " ;; "
    check: Check
    prep: Tuple[Prep, ...] = ()
    action: Optional[fx.Action] = None  # applies to the first command
    fsize: Optional[int] = None  # RLIMIT_FSIZE in bytes (a full disk)
    hide: Tuple[str, ...] = ()  # folders that look empty to the case (unshare + bind mount)
    timeout: float = 120.0
    # (command, the file it makes): started first and still running during the case, which
    # starts once that file exists (e.g. a training holding the run directory); ended after
    beside: Optional[Tuple[str, str]] = None


# ---- checks

def user_mistake(o: Outcome) -> Optional[str]:
    """Exit code 2, no traceback, exactly one line (argparse usage, warnings, bars aside)."""
    if o.hang:
        return "hang"
    if o.traceback:
        return f"traceback ({o.exc['type'] if o.exc else 'exit %s' % o.rc})"
    if o.rc != 2:
        return f"exit {o.rc}, not 2"
    return None if len(o.lines) == 1 else f"{len(o.lines)} lines on stderr"


def succeeds(o: Outcome) -> Optional[str]:
    if o.hang:
        return "hang"
    return None if o.rc == 0 and not o.traceback else f"exit {o.rc}: {o.line}"


def all_of(*checks: Check) -> Check:
    def check(o: Outcome) -> Optional[str]:
        return next((why for why in (c(o) for c in checks) if why), None)
    return check


def unchanged(rel: str, data: Optional[bytes] = None, like: str = "") -> Check:
    """$W/rel still holds ``data`` (or the bytes of fixture $F/like)."""
    def check(o: Outcome) -> Optional[str]:
        path, want = o.w / rel, data if data is not None else (o.f / like).read_bytes()
        return None if path.is_file() and path.read_bytes() == want else f"{rel} was changed or removed"
    return check


def replaced(rel: str, old: bytes) -> Check:
    def check(o: Outcome) -> Optional[str]:
        path = o.w / rel
        return None if path.is_file() and path.read_bytes() != old else f"{rel} was not written"
    return check


def config_epochs(rel: str, epochs: int) -> Check:
    """$W/rel/config.json is still the one of a run of ``epochs`` epochs (not replaced)."""
    def check(o: Outcome) -> Optional[str]:
        path = o.w / rel / "config.json"
        ok = path.is_file() and json.loads(path.read_text()).get("epochs") == epochs
        return None if ok else f"{rel}/config.json was replaced or removed"
    return check


def mentions(*words: str) -> Check:
    """The user's line names one of ``words`` (case-insensitive)."""
    def check(o: Outcome) -> Optional[str]:
        ok = any(w.lower() in o.line.lower() for w in words)
        return None if ok else f"the line does not name {' or '.join(words)}"
    return check


def never_mentions(word: str) -> Check:
    def check(o: Outcome) -> Optional[str]:
        return f"the output repeats {word!r}" if word in o.stderr else None
    return check


def refused_or_warned(*words: str) -> Check:
    """Refused as a user mistake, or run with a warning naming the option."""
    def check(o: Outcome) -> Optional[str]:
        if user_mistake(o) is None:
            return None
        warned = any(w.lower() in ln.lower() for ln in o.lines for w in words)
        if o.rc == 0 and not o.traceback and warned:
            return None
        return f"accepted silently (exit {o.rc})" if o.rc == 0 else user_mistake(o)
    return check


def no_network(o: Outcome) -> Optional[str]:
    return f"tried the network ({', '.join(sorted(set(o.net)))})" if o.net else None


def no_temp_files(rel: str) -> Check:
    def check(o: Outcome) -> Optional[str]:
        left = sorted(p.name for p in (o.w / rel).glob(".*.pt.*")) if (o.w / rel).is_dir() else []
        return f"left {', '.join(left)}" if left else None
    return check


def valid_config(rel: str) -> Check:
    """``$W/rel`` (if written) is strict JSON: no NaN / Infinity."""
    def strict(token: str) -> None:
        raise ValueError(token)

    def check(o: Outcome) -> Optional[str]:
        try:
            if (o.w / rel).is_file():
                json.loads((o.w / rel).read_text(), parse_constant=strict)
        except ValueError as e:
            return f"{rel} is not valid JSON ({e})"
        return None
    return check


def stops_on_nan(o: Outcome) -> Optional[str]:
    if o.hang:
        return "hang"
    if o.rc == 0:
        return "trained on a NaN/inf loss and exited 0"
    return None if o.rc and o.rc > 0 and not o.traceback else f"exit {o.rc}, traceback {o.traceback}"


def clean_stop(rc: Optional[int], ckpt: str) -> Check:
    """Signalled mid-run: exit ``rc`` (None: any > 0, not death by the signal), one line,
    no traceback, a checkpoint left."""
    def check(o: Outcome) -> Optional[str]:
        if not o.acted:
            return f"ended before the signal: exit {o.rc}: {o.line}"
        if o.hang or not (o.rc == rc if rc is not None else (o.rc or 0) > 0):
            return "hang" if o.hang else f"exit {o.rc}: {o.line or 'nothing on stderr'}"
        if o.traceback or len(o.lines) != 1:
            return "traceback" if o.traceback else f"{len(o.lines)} lines on stderr"
        return None if (o.w / ckpt).is_file() else f"no {ckpt}"
    return check


def ends_in_time(o: Outcome) -> Optional[str]:
    """A DDP job ends, non-zero, with a locallearn line saying why."""
    if not o.acted:
        return f"ended before the fault was made: exit {o.rc}: {o.line}"
    if o.hang:
        return "hang: still running at the timeout"
    if o.rc == 0:
        return "exit 0"
    if re.search(r'File ".*/locallearn/', o.stderr):  # torchrun's own traceback aside
        return "a worker's traceback"
    said = any(SAID.match(ln) for ln in o.lines)
    return None if said else f"no 'locallearn:' line saying why (exit {o.rc})"


def same_metrics(a: str, b: str) -> Check:
    """Runs $W/a and $W/b logged the same train_loss and test_acc every epoch."""
    def check(o: Outcome) -> Optional[str]:
        if not o.acted:
            return "the kill came after the run ended"
        rows = []
        for rel in (a, b):
            path = o.w / rel / "metrics.csv"
            if not path.is_file():
                return f"no {rel}/metrics.csv"
            rows.append([ln.split(",")[:3] for ln in path.read_text().splitlines()])
        return None if rows[0] == rows[1] else "the resumed run differs from an uninterrupted one"
    return check


def prints(text: str) -> Check:
    def check(o: Outcome) -> Optional[str]:
        return succeeds(o) or (None if text in o.stdout else f"did not print {text}")
    return check


def stdout_is(text: str) -> Check:
    def check(o: Outcome) -> Optional[str]:
        got = (o.stdout.strip().splitlines() or [""])[-1]
        return None if got == text else (succeeds(o) or f"printed {got}, not {text}")
    return check


def config_resolved(o: Outcome) -> Optional[str]:
    """config.json records the library version and the head options actually used."""
    path = o.w / "run" / "config.json"
    if not path.is_file():
        return "no config.json"
    cfg = json.loads(path.read_text())
    if not any("version" in k for k in cfg):
        return "no library version in config.json"
    heads = [v for k, v in cfg.items() if "head" in k and isinstance(v, dict) and v]
    return None if heads else "head options not resolved (empty)"


def api_error(*names: str, may_work: bool = False) -> Check:
    """A ValueError / TypeError subclass whose message names one of ``names`` (or, with
    ``may_work``, no error and no NaN)."""
    def check(o: Outcome) -> Optional[str]:
        if o.hang:
            return "hang"
        if o.exc is None:
            if may_work and o.rc == 0 and "nan" not in o.stdout:
                return None
            return "no error raised" + (" (NaN loss)" if "nan" in o.stdout else "")
        if not {"ValueError", "TypeError"} & set(o.exc["mro"]):
            return f"{o.exc['type']}, not a ValueError/TypeError"
        named = any(re.search(rf"\b{re.escape(n)}\b", o.exc["msg"], re.I) for n in names)
        return None if named else f"{o.exc['type']} does not name {' / '.join(names)}"
    return check
