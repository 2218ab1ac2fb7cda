"""The test bed of benchmarks/trust_cases.py: fixtures (tiny runs, image folders, IDX
files), the probe every audited process loads, and how one command runs in it.

Everything is made inside one temp dir by the audited code itself (the runs) or by
PIL / struct (the data), so the same fixtures can be rebuilt for any checkout.
"""
import json
import os
import resource
import shlex
import shutil
import signal
import struct
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

# a tiny training config: resnet20, K=2, 4 steps on 8x8 one-channel synthetic images
BASE = ("--model resnet20 --dataset synthetic:1x8x8:4 --epochs 1 --batch-size 16 "
        "--limit-train 64 --limit-test 32 --device cpu --no-progress")
TINY = BASE + " --method dgl --blocks 2"

# finished runs: name -> options that differ from TINY (later options win in argparse)
RUNS: Dict[str, str] = {
    "run_dgl": "",
    "run_manpp": "--method dgl+manpp",
    "run_k3": "--blocks 3",
    "run_r32": "--model resnet32",
    "run_c3": "--dataset synthetic:3x8x8:4",
}

# sitecustomize for every audited process: connections to other hosts fail (as offline)
# and are logged to $TRUST_NET_LOG; an uncaught exception's class chain goes to
# $TRUST_EXC_LOG before the usual traceback
PROBE = '''\
import json, os, socket, sys

_LOCAL = ("", "localhost", "::1", "0.0.0.0", socket.gethostname())


def _remote(host):
    return isinstance(host, (str, bytes)) and not (
        (host.decode() if isinstance(host, bytes) else host) in _LOCAL
        or str(host).startswith(("127.", "b'127.")))


def _blocked(host):
    path = os.environ.get("TRUST_NET_LOG")
    if path:
        with open(path, "a") as f:
            f.write(f"{host}\\n")
    raise OSError(101, f"network unreachable (blocked by the trust audit: {host})")


_getaddrinfo = socket.getaddrinfo


def getaddrinfo(host, *args, **kwargs):
    if _remote(host):
        _blocked(host)
    return _getaddrinfo(host, *args, **kwargs)


_connect = socket.socket.connect


def connect(self, address):
    if isinstance(address, tuple) and _remote(address[0]):
        _blocked(address[0])
    return _connect(self, address)


socket.getaddrinfo, socket.socket.connect = getaddrinfo, connect
_hook = sys.excepthook


def excepthook(kind, value, tb):
    path = os.environ.get("TRUST_EXC_LOG")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"type": kind.__name__, "mro": [c.__name__ for c in kind.__mro__],
                                "msg": str(value)[:1000]}) + "\\n")
    _hook(kind, value, tb)


sys.excepthook = excepthook
'''


def write_probe(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(PROBE)
    return folder


def _png(path: Path, seed: int, size: int = 12, mode: str = "RGB") -> None:
    import random

    from PIL import Image

    rng = random.Random(seed)
    channels = len(mode)
    img = Image.frombytes(mode, (size, size),
                          bytes(rng.randrange(256) for _ in range(size * size * channels)))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def image_folder(root: Path, classes: Sequence[str], train_per: int, val_per: int,
                 seed: int = 0) -> Path:
    """train/<class>/*.png and val/<class>/*.png of random 12x12 RGB noise."""
    for split, per in (("train", train_per), ("val", val_per)):
        for c, name in enumerate(classes):
            for i in range(per):
                _png(root / split / name / f"{name}{i}.png", seed + 1000 * c + 10 * i + len(split))
    return root


def idx_files(root: Path, n_train: int = 64, n_test: int = 32, bad_label: int = -1) -> Path:
    """The four Fashion-MNIST IDX files (random 28x28 images, labels i % 10); with
    ``bad_label`` >= 0 the first training label is that value instead."""
    root.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = bytes((7 * i) % 256 for i in range(n * 28 * 28))
        (root / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, n, 28, 28) + images)
        labels = bytearray(i % 10 for i in range(n))
        if prefix == "train" and bad_label >= 0:
            labels[0] = bad_label
        (root / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, n) + bytes(labels))
    return root


def build_data(f: Path) -> None:
    """Everything that does not need the audited code."""
    (f / "afile").write_text("a regular file, not a directory\n")
    image_folder(f / "folder4", "abcd", train_per=4, val_per=2)
    image_folder(f / "folder1", "a", train_per=4, val_per=2)
    image_folder(f / "folder2x1", "ab", train_per=1, val_per=1, seed=7)
    for bad in ("folder_trunc", "folder_garbage"):
        image_folder(f / bad, "ab", train_per=4, val_per=2)
    good = (f / "folder_trunc/train/b/b1.png").read_bytes()
    (f / "folder_trunc/train/b/b1.png").write_bytes(good[:len(good) // 2])
    (f / "folder_garbage/train/a/a2.png").write_text("this is not a PNG\n")
    idx_files(f / "fmnist_label12", bad_label=12)
    idx_files(f / "fmnist_trunc")
    lbl = f / "fmnist_trunc/train-labels-idx1-ubyte"
    lbl.write_bytes(lbl.read_bytes()[:-5])


def build_runs(f: Path, python: str, env: Dict[str, str], timeout: float = 300) -> Dict[str, str]:
    """Train the RUNS with the audited code (2 at a time); returns name -> error text."""
    def train(item: Tuple[str, str]) -> Tuple[str, str]:
        name, extra = item
        cmd = [python, "-m", "locallearn", "train", *TINY.split(), *extra.split(),
               "--out", str(f / name)]
        try:
            p = subprocess.run(cmd, env=env, cwd=f, capture_output=True, text=True,
                               timeout=timeout)
        except subprocess.TimeoutExpired:
            return name, "timed out"
        ok = p.returncode == 0 and (f / name / "checkpoint.pt").is_file()
        return name, "" if ok else (p.stderr.strip().splitlines() or ["no output"])[-1]

    with ThreadPoolExecutor(2) as pool:
        return {name: err for name, err in pool.map(train, RUNS.items()) if err}


# ---- per-case preparation: each takes the case's work dir and the fixtures dir

def copy(src: str, dst: str = ""):
    """Copy fixture ``src`` (file or folder) into the work dir as ``dst``."""
    def prep(w: Path, f: Path) -> None:
        s, d = f / src, w / (dst or Path(src).name)
        d.parent.mkdir(parents=True, exist_ok=True)
        if s.is_dir():
            shutil.copytree(s, d)
        else:
            shutil.copy2(s, d)
    return prep


def mixed_run(config_of: str, checkpoint_of: str, dst: str = "run"):
    """A run dir holding one fixture run's config.json and another's checkpoint.pt."""
    def prep(w: Path, f: Path) -> None:
        shutil.copytree(f / config_of, w / dst)
        shutil.copy2(f / checkpoint_of / "checkpoint.pt", w / dst / "checkpoint.pt")
    return prep


def write(rel: str, data: bytes):
    def prep(w: Path, f: Path) -> None:
        (w / rel).parent.mkdir(parents=True, exist_ok=True)
        (w / rel).write_bytes(data)
    return prep


def truncate(rel: str, keep: float):
    """Keep the first ``keep`` fraction of the work dir's file ``rel``."""
    def prep(w: Path, f: Path) -> None:
        data = (w / rel).read_bytes()
        (w / rel).write_bytes(data[:int(len(data) * keep)])
    return prep


def remove(rel: str):
    def prep(w: Path, f: Path) -> None:
        os.unlink(w / rel)
    return prep


def old_run(dst: str = "old"):
    """A directory holding an earlier run's metrics / summary / config / curves, no checkpoint."""
    def prep(w: Path, f: Path) -> None:
        shutil.copytree(f / "run_r32", w / dst)
        os.unlink(w / dst / "checkpoint.pt")
    return prep


def edit_config(run: str, **changes: object):
    """Change keys of the work dir's ``run/config.json``."""
    def prep(w: Path, f: Path) -> None:
        path = w / run / "config.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), **changes}, indent=2))
    return prep


# ---- running one command

@dataclass(frozen=True)
class Action:
    """Once ``watch`` (relative to $W) exists, wait ``delay`` s and send ``sig`` to
    ``target``: main (the process), group (Ctrl-C), rank0 / rank1 (a torchrun worker)."""

    watch: str
    sig: int
    target: str = "main"
    delay: float = 1.0


def expand(cmd: str, w: Path, f: Path, python: str) -> List[str]:
    """A command as typed -> argv: $TINY / $BASE, $W / $F, and the program through ``python``."""
    args: List[str] = []
    for a in shlex.split(cmd):
        if a in ("$TINY", "$BASE"):
            args += (TINY if a == "$TINY" else BASE).split()
        else:
            args.append(a.replace("$W", str(w)).replace("$F", str(f)))
    lead = {"locallearn": ["-m", "locallearn"], "torchrun": ["-m", "torch.distributed.run"], "python": []}
    return [python, *lead[args[0]], *args[1:]]


def _children(pid: int) -> List[int]:
    try:
        return [int(c) for t in os.listdir(f"/proc/{pid}/task")
                for c in Path(f"/proc/{pid}/task/{t}/children").read_text().split()]
    except OSError:
        return []


def _environ(pid: int) -> List[bytes]:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return []


def _rank_pid(pid: int, rank: str) -> Optional[int]:
    """The torchrun worker below ``pid`` whose RANK is ``rank``."""
    todo = _children(pid)
    while todo:
        c = todo.pop()
        if f"RANK={rank}".encode() in _environ(c):
            return c
        todo += _children(c)
    return None


def _send_all(marker: bytes, sig: int) -> None:
    """Signal every process a case started (``marker`` in its environment): torchrun starts
    its workers in sessions of their own, out of reach of killpg."""
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        if marker in _environ(pid):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass


def start_beside(argv: List[str], cwd: Path, env: Dict[str, str], log: Path, watch: Path,
                 deadline: float) -> Optional[str]:
    """Start ``argv`` in the background (marked like the case's own processes, so ``run``
    ends it with them) and wait until ``watch`` exists; the reason if it never does."""
    with open(log, "w") as f:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    while not watch.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            return f"the command beside ended (exit {proc.wait()}) before making {watch.name}"
        time.sleep(0.05)
    return None


def run(argv: List[str], cwd: Path, env: Dict[str, str], out: Path, err: Path, deadline: float,
        action: Optional[Action] = None, fsize: Optional[int] = None, hide: Sequence[str] = (),
        empty: Optional[Path] = None) -> Tuple[Optional[int], bool]:
    """Run ``argv`` until it ends or ``deadline`` (monotonic) passes; returns (exit code, None
    for a hang; whether ``action`` was done). ``fsize`` limits the size of files it writes
    (a full disk); each folder of ``hide`` looks like the ``empty`` one (needs root).
    Every process it started (``env["TRUST_CASE"]`` marks them) is gone afterwards."""
    hidden = [p for p in hide if Path(p).is_dir()]
    if hidden and empty is not None:  # a private mount namespace
        mounts = " && ".join(f"mount --bind {shlex.quote(str(empty))} {shlex.quote(p)}" for p in hidden)
        argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", mounts + ' && exec "$@"', "sh", *argv]
    with open(out, "w") as out_f, open(err, "w") as err_f:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out_f, stderr=err_f,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        if fsize is not None:  # set before it has imported torch, long before it writes
            resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (fsize, fsize))
        acted, hang = action is None, False
        while proc.poll() is None:
            if time.monotonic() > deadline:
                hang = True
                break
            if not acted and (cwd / action.watch).exists():
                time.sleep(action.delay)
                if action.target == "group":  # Ctrl-C in a terminal
                    os.killpg(proc.pid, action.sig)
                    acted = True
                else:
                    pid = proc.pid if action.target == "main" else _rank_pid(proc.pid, action.target[-1])
                    if pid is not None and proc.poll() is None:
                        os.kill(pid, action.sig)
                        acted = True
            time.sleep(0.05)
    for sig in (signal.SIGCONT, signal.SIGKILL):  # a hang, or workers a failed job left behind
        _send_all(f"TRUST_CASE={env['TRUST_CASE']}".encode(), sig)
    proc.wait()
    return (None if hang else proc.returncode), acted
