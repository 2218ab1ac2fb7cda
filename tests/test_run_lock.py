"""One training process at a time in a run directory (run_lock.py)."""
import os
import subprocess
import sys
import textwrap

import pytest

from locallearn import TrainConfig, fit
from locallearn.cli import main
from locallearn.errors import ConfigError
from locallearn.run_lock import LOCK, hold_run_dir

TINY = ["--model", "resnet20", "--dataset", "synthetic:1x8x8:4", "--method", "dgl", "--blocks", "2",
        "--epochs", "1", "--limit-train", "64", "--limit-test", "32", "--batch-size", "32",
        "--no-progress"]


def test_a_second_process_in_the_same_run_directory_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(run)]) == 0
    assert not (run / LOCK).exists()  # gone after a clean end
    # another process holds the directory (a run still training there)
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from locallearn.run_lock import hold_run_dir
        with hold_run_dir({str(run)!r}):
            print("held", flush=True)
            sys.stdin.readline()
        """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = (run / "metrics.csv").read_text()
        assert main(["train", "--resume", "--out", str(run), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert f"run directory {run} is in use by another training process (pid {holder.pid} " in err
        assert "Traceback" not in err
        with pytest.raises(ConfigError, match="in use"):  # --force does not get past it either
            fit(TrainConfig.load(run / "config.json"), force=True, progress=False)
        assert (run / "metrics.csv").read_text() == before  # nothing touched
    finally:
        holder.communicate("\n", timeout=60)
    assert holder.returncode == 0 and not (run / LOCK).exists()
    # the holder ended: the resume goes ahead (the run had finished: nothing to train)
    assert main(["train", "--resume", "--out", str(run), "--no-progress"]) == 0


def test_a_killed_holder_does_not_block_and_a_refused_resume_leaves_nothing(tmp_path):
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import os, signal
        from locallearn.run_lock import hold_run_dir
        with hold_run_dir({str(run)!r}):
            os.kill(os.getpid(), signal.SIGKILL)
        """)])
    assert holder.wait(timeout=60) == -9
    assert "pid" in (run / LOCK).read_text()  # left by the kill, but no longer locked
    with hold_run_dir(run):
        assert str(os.getpid()) in (run / LOCK).read_text()
    assert not (run / LOCK).exists()
    missing = tmp_path / "nothing" / "here"
    with pytest.raises(ConfigError, match="nothing to resume"):
        fit(TrainConfig(out=str(missing)), resume=True, progress=False)
    assert not missing.exists()  # the lock's folder went again


def test_a_filesystem_without_locks_trains_unlocked(tmp_path, monkeypatch):
    import errno

    from locallearn import run_lock

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(run_lock.fcntl, "flock", no_locks)
    with hold_run_dir(tmp_path / "run"):  # not "in use": nobody holds it
        (tmp_path / "run" / "metrics.csv").write_text("epoch\n")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["metrics.csv"]


def test_holder_names_a_live_training_only(tmp_path):
    from locallearn.run_lock import holder

    run = tmp_path / "run"
    assert holder(run) is None  # nothing there
    with hold_run_dir(run):
        assert holder(run).startswith(f"pid {os.getpid()} on ")
    (run.mkdir(), (run / LOCK).write_text("pid 1 on gone, since then"))
    assert holder(run) is None  # a killed holder's file: nobody holds its lock
