"""Trust audit (issue 13): misuse and breakage cases against the CLI and the Python API.

Every case runs in a fresh subprocess (``python -m locallearn ...``, ``torchrun`` for DDP,
``python -c`` for the API) with ``--src`` first on PYTHONPATH, in its own empty work dir
``$W``, with a timeout (a case that hits it is a hang); ``$F`` holds the fixtures of
benchmarks/trust_fixtures.py. A sitecustomize probe records network attempts (and blocks
them) and the class of an uncaught exception. Each case is judged by its check. The cases
are listed in trust_case_list.py, their checks in trust_checks.py.

    .venv/bin/python benchmarks/trust_cases.py --src /work/before/src --out benchmarks/results/trust_before.json
    .venv/bin/python benchmarks/trust_cases.py --src src --out after.json --compare before.json --markdown t.md
"""

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Dict, Optional, Sequence

import trust_fixtures as fx
from trust_case_list import CASES
from trust_checks import Case, Outcome


# ---- running

def audit(case: Case, root: Path, env: Dict[str, str], python: str) -> Dict[str, object]:
    """Prepare the case's work dir, run its commands in turn, judge the last one."""
    w, f, logs = root / "cases" / case.id, root / "fixtures", root / "logs"
    w.mkdir(parents=True)
    net_p, exc_p = logs / f"{case.id}.net", logs / f"{case.id}.exc"
    env = dict(env, TRUST_NET_LOG=str(net_p), TRUST_EXC_LOG=str(exc_p), TRUST_CASE=str(w))
    t0 = time.monotonic()
    try:
        for prep in case.prep:
            prep(w, f)
    except (OSError, ValueError) as e:
        return _record(case, Outcome(None, "", "", False, w, f), f"fixture missing: {e}", 0.0)
    if case.beside is not None:
        cmd, watch = case.beside
        why = fx.start_beside(fx.expand(cmd, w, f, python), w, env, logs / f"{case.id}.beside",
                              w / watch, t0 + case.timeout / 2)
        if why:
            return _record(case, Outcome(None, "", "", False, w, f), why, time.monotonic() - t0)
    acted = True
    for i, cmd in enumerate(case.cmd.split(" ;; ")):
        out_p, err_p = logs / f"{case.id}.out", logs / f"{case.id}.err"
        rc, done = fx.run(fx.expand(cmd, w, f, python), w, env, out_p, err_p, t0 + case.timeout,
                          case.action if i == 0 else None, case.fsize, case.hide, root / "empty")
        acted = done if i == 0 else acted
    o = Outcome(rc, out_p.read_text(errors="replace"), err_p.read_text(errors="replace"), rc is None, w, f,
                acted, net_p.read_text().split() if net_p.exists() else [],
                json.loads(exc_p.read_text().splitlines()[-1]) if exc_p.exists() else None)
    try:
        why = case.check(o)
    except Exception as e:  # a check must not stop the audit: whatever broke it is a finding
        why = f"check failed: {type(e).__name__}: {e}"
    return _record(case, o, why, time.monotonic() - t0)


def _record(case: Case, o: Outcome, why: Optional[str], seconds: float) -> Dict[str, object]:
    return dict(id=case.id, cls=case.cls, what=case.what, cmd=case.cmd, rc=o.rc, hang=o.hang,
                traceback=o.traceback, line=o.line, verdict="bad" if why else "ok", why=why or "",
                network=sorted(set(o.net)), exception=o.exc["type"] if o.exc else None,
                seconds=round(seconds, 1))


def git_rev(src: Path) -> str:
    try:
        return subprocess.check_output(["git", "-C", str(src), "describe", "--always", "--dirty"],
                                       text=True, stderr=subprocess.DEVNULL).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def environment(src: Path, python: str) -> Dict[str, str]:
    torch = subprocess.run([python, "-c", "import torch; print(torch.__version__)"], text=True,
                           capture_output=True).stdout.strip()
    return dict(src=str(src), git=git_rev(src), torch=torch, python=platform.python_version(),
                machine=f"{platform.machine()} {os.cpu_count()} CPUs, {platform.platform()}",
                date=datetime.datetime.now().isoformat(timespec="seconds"))


def atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def run_audit(src: Path, only: Sequence[str] = (), workers: int = 2,
              keep: Optional[Path] = None) -> Dict[str, object]:
    """Build the fixtures and run the cases in a temp dir (``keep``: in that new dir)."""
    cases = [c for c in CASES if not only or c.id in only]
    python = sys.executable
    if keep is not None:
        keep.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="trust-") as tmp:
        root = keep.resolve() if keep is not None else Path(tmp)
        probe = fx.write_probe(root / "probe")
        env = {k: v for k, v in os.environ.items() if k not in ("LOCALLEARN_DATA", "PYTHONPATH")}
        env.update(PYTHONPATH=f"{src.resolve()}{os.pathsep}{probe}", OMP_NUM_THREADS="1",
                   HOME=str(root / "home"), XDG_CACHE_HOME=str(root / "cache"), TORCH_HOME=str(root / "cache"),
                   MPLBACKEND="Agg", PYTHONDONTWRITEBYTECODE="1")
        (root / "logs").mkdir()
        fixtures = root / "fixtures"
        fixtures.mkdir()
        (root / "empty").mkdir()
        t0 = time.monotonic()
        fx.build_data(fixtures)
        broken = fx.build_runs(fixtures, python, dict(env, TRUST_NET_LOG=str(root / "logs/fixtures.net")))
        for name, err in broken.items():
            print(f"fixture {name} failed: {err}", file=sys.stderr)
        with ThreadPoolExecutor(workers) as pool:
            futures = [pool.submit(audit, c, root, env, python) for c in cases]
            for done in as_completed(futures):
                r = done.result()
                print(f"{r['verdict']:3s} {r['id']:28s} exit {r['rc']}  {r['why'] or r['line']}"[:200],
                      flush=True)
            results = [fu.result() for fu in futures]
    ok = sum(r["verdict"] == "ok" for r in results)
    return dict(env=environment(src, python), fixtures_failed=broken, tiny=fx.TINY, base=fx.BASE,
                seconds=round(time.monotonic() - t0), ok=ok, total=len(results), cases=results)


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("<", "&lt;").replace("\n", " ")


def markdown(before: Dict, after: Dict) -> str:
    b = {r["id"]: r for r in before["cases"]}
    rows = after["cases"] + [r for r in before["cases"] if r["id"] not in {a["id"] for a in after["cases"]}]
    head = lambda e: f"{e['git']} on {e['machine']}, torch {e['torch']}, {e['date']}"  # noqa: E731
    n_before = sum(r["verdict"] == "ok" for r in before["cases"])
    n_after = sum(r["verdict"] == "ok" for r in after["cases"])
    out = [f"Before: {head(before['env'])}.  ", f"After: {head(after['env'])}.", "",
           f"`$TINY` = `{after['tiny']}`; `$BASE` = the same without `--method`/`--blocks`; `$W` is the "
           "case's empty work dir, `$F` the fixtures (tiny runs, image folders, IDX files); ` ;; ` separates "
           "commands run in turn. Each case ran in a fresh process, network blocked, with a 120 s timeout.", "",
           f"**Handled well: {n_before} of {len(before['cases'])} before, "
           f"{n_after} of {len(after['cases'])} after.**", "",
           "| case | class | command | before: exit | before: line | before | after: exit | after: line | after |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        p = b.get(r["id"], {})
        a = r if r in after["cases"] else {}
        cols = [r["id"], r["cls"], f"`{r['cmd']}`"]
        for side in (p, a):
            rc = "hang" if side.get("hang") else side.get("rc", "")
            verdict = side.get("verdict", "-") + (f": {side['why']}" if side.get("why") else "")
            cols += [rc, side.get("line") or "—", verdict]
        out.append("| " + " | ".join(_cell(c) for c in cols) + " |")
    return "\n".join(out) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", type=Path, required=True, help="the src/ folder to audit")
    ap.add_argument("--out", type=Path, required=True, help="results JSON")
    ap.add_argument("--only", default="", help="comma-separated case ids")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--keep", type=Path, help="run in this new dir and keep it (logs/, cases/)")
    ap.add_argument("--compare", type=Path, help="an earlier results JSON (before)")
    ap.add_argument("--markdown", type=Path, help="with --compare: the before/after table")
    a = ap.parse_args(argv)
    unknown = set(filter(None, a.only.split(","))) - {c.id for c in CASES}
    if unknown:
        ap.error(f"unknown case ids: {', '.join(sorted(unknown))}")
    if a.markdown and not a.compare:
        ap.error("--markdown needs --compare BEFORE.json")
    result = run_audit(a.src, [i for i in a.only.split(",") if i], a.workers, a.keep)
    atomic_write(a.out, json.dumps(result, indent=1) + "\n")
    print(f"handled well: {result['ok']} of {result['total']} ({result['seconds']} s); wrote {a.out}")
    if a.compare:
        md = markdown(json.loads(a.compare.read_text()), result)
        atomic_write(a.markdown or a.out.with_suffix(".md"), md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
