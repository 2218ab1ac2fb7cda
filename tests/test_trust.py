"""Issue 13: nothing lost, no hang, no traceback, nothing wrong accepted, runs rebuilt exactly."""
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from locallearn import TrainConfig, fit
from locallearn.checkpoint import load_checkpoint
from locallearn.cli import main
from locallearn.errors import ConfigError
from locallearn.run_dir import remove_stale_temps
from locallearn.stop import NonFiniteLoss

DS = "synthetic:1x8x8:4"
TINY = ["--model", "resnet20", "--method", "dgl", "--blocks", "2", "--dataset", DS,
        "--epochs", "1", "--batch-size", "16", "--limit-train", "64", "--limit-test", "32",
        "--device", "cpu", "--no-progress"]


def _cfg(tmp_path, name="run", **kw):
    base = dict(model="resnet20", method="dgl+manpp", blocks=3, dataset="synthetic:1x12x12:4",
                epochs=2, batch_size=32, lr=0.05, limit_train=96, limit_test=64, device="cpu",
                out=str(tmp_path / name), seed=3)
    base.update(kw)
    return TrainConfig(**base)


def _one_line_error(capsys, needle):
    err = capsys.readouterr().err
    assert needle in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def _run_cli(args, **kw):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "locallearn", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


# 1. never lose a user's data ----------------------------------------------------------

def test_export_never_overwrites_without_force_and_never_a_run_file(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(run)]) == 0
    target = tmp_path / "mine.safetensors"
    target.write_bytes(b"precious")
    assert main(["export", "--run", str(run), "--out", str(target)]) == 2
    _one_line_error(capsys, "--force")
    assert target.read_bytes() == b"precious"
    ckpt = (run / "checkpoint.pt").read_bytes()
    for name in ("checkpoint.pt", "config.json"):  # a run's own files: not even with --force
        assert main(["export", "--run", str(run), "--out", str(run / name), "--force"]) == 2
        _one_line_error(capsys, "file of the run")
    assert (run / "checkpoint.pt").read_bytes() == ckpt
    assert main(["export", "--run", str(run), "--out", str(tmp_path)]) == 2  # a directory
    _one_line_error(capsys, "is a directory")
    assert main(["export", "--run", str(run), "--out", str(target / "x.safetensors")]) == 2
    _one_line_error(capsys, "is a file")
    assert main(["export", "--run", str(run), "--out", str(target), "--force"]) == 0
    assert target.read_bytes() != b"precious"


def test_train_into_an_old_run_directory_keeps_its_files(tmp_path, capsys):
    old = tmp_path / "old"
    old.mkdir()
    files = {"metrics.csv": "epoch,train_loss\n1,0.5\n", "summary.json": '{"a": 1}\n',
             "config.json": '{"model": "resnet56"}\n', "notes.txt": "mine\n"}
    for name, text in files.items():
        (old / name).write_text(text)
    assert main(["train", *TINY, "--out", str(old)]) == 2
    _one_line_error(capsys, "not empty")
    assert {n: (old / n).read_text() for n in files} == files
    assert main(["train", *TINY, "--out", str(old / "notes.txt")]) == 2  # a file
    _one_line_error(capsys, "is a file")
    assert main(["train", *TINY, "--out", str(old / "notes.txt" / "run")]) == 2  # below one
    _one_line_error(capsys, "which is a file")
    assert main(["train", *TINY, "--out", str(old), "--force"]) == 0  # replaces run files only
    assert (old / "notes.txt").read_text() == "mine\n"
    assert json.loads((old / "config.json").read_text())["model"] == "resnet20"


def test_stale_temp_files_of_a_killed_write_are_removed(tmp_path):
    fit(_cfg(tmp_path, epochs=1), progress=False)
    run = tmp_path / "run"
    for name in (".checkpoint.pt.ab12cd_3", ".metrics.csv.zz9"):
        (run / name).write_bytes(b"half")
    (run / ".keep.me").write_text("not ours")
    fit(_cfg(tmp_path, epochs=2), resume=True, progress=False)
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == [".keep.me"]
    assert remove_stale_temps(run) == []


def test_sigterm_checkpoints_and_resume_finishes(tmp_path):
    out = tmp_path / "run"
    args = ["train", "--model", "resnet20", "--method", "greedy", "--blocks", "2", "--dataset",
            "synthetic:1x8x8:4", "--epochs", "1", "--batch-size", "8", "--limit-train",
            "4000", "--limit-test", "16", "--device", "cpu", "--no-progress",
            "--checkpoint-minutes", "0", "--out", str(out)]
    p = _run_cli(args)
    deadline = time.time() + 120
    while not (out / "config.json").exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(3)  # well inside the epoch (500 steps)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 128 + signal.SIGTERM, err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "SIGTERM" in lines[0] and "--resume" in lines[0], err
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["epoch"] == 0 and 0 < state["batch"] < 500  # the work since the start
    p = _run_cli(["train", "--resume", "--out", str(out), "--no-progress", "--epochs", "1"])
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    assert "ignoring --epochs" in err  # a resumed run keeps its recipe, and says so
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 1


# 2. never hang ------------------------------------------------------------------------

def _torchrun():
    exe = os.path.join(os.path.dirname(sys.executable), "torchrun")
    return exe if os.path.exists(exe) else None


def _rank_pids(parent: int):
    """{rank: pid} of torchrun's worker processes (read from their environment)."""
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            env = (d / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent:
            for kv in env:
                if kv.startswith(b"RANK="):
                    out[int(kv[5:])] = int(d.name)
    return out


@pytest.mark.dist
@pytest.mark.skipif(_torchrun() is None or not Path("/proc/self/environ").exists(),
                    reason="needs torchrun and /proc")
@pytest.mark.parametrize("fault", ["stall", "kill"])
def test_ddp_stalled_or_dead_rank_ends_the_job(tmp_path, fault):
    """One rank stops answering (SIGSTOP) or dies (SIGKILL): the job ends non-zero within
    the --dist-timeout (plus torchrun's grace period), with one line naming the cause."""
    from test_ddp import _free_port

    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    p = subprocess.Popen([_torchrun(), "--nproc-per-node", "2", "--master-port",
                          str(_free_port()), "-m", "locallearn", "train", "--model", "resnet20",
                          "--method", "dgl", "--blocks", "2", "--dataset", "synthetic:1x8x8:4",
                          "--epochs", "1000", "--batch-size", "16", "--limit-train", "64",
                          "--limit-test", "16", "--device", "cpu", "--ddp", "--no-progress",
                          "--dist-timeout", "8", "--out", str(out)],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not (out / "metrics.csv").exists() and time.time() < deadline:
            time.sleep(0.2)
        assert (out / "metrics.csv").exists(), "training did not start"
        ranks = _rank_pids(p.pid)
        assert set(ranks) == {0, 1}, ranks
        t0 = time.time()
        os.kill(ranks[1], signal.SIGSTOP if fault == "stall" else signal.SIGKILL)
        _, err = p.communicate(timeout=8 + 60)
        took = time.time() - t0
    finally:
        if p.poll() is None:
            p.kill()
        for pid in _rank_pids(p.pid).values():
            os.kill(pid, signal.SIGKILL)
    assert p.returncode != 0
    assert took < 8 + 45, took
    ours = [ln for ln in err.splitlines() if ln.startswith("locallearn: error: rank 0")]
    assert len(ours) == 1, err[-3000:]
    assert ("stalled" if fault == "stall" else "exited") in ours[0], ours
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] >= 1  # the last one is intact


# 3. one clear line, exit 2 ------------------------------------------------------------

BAD = [
    (["--image-size", "-5"], "image-size"),
    (["--image-size", "0"], "image-size"),
    (["--momentum", "0"], "--no-nesterov"),
    (["--lr", "nan"], "lr"),
    (["--lr", "inf"], "lr"),
    (["--weight-decay", "nan"], "weight-decay"),
    (["--ema-momentum", "1.5", "--method", "dgl+manpp"], "ema-momentum"),
    (["--warmup-epochs", "inf"], "warmup-epochs"),
    (["--nan-patience", "-1"], "nan-patience"),
    (["--dist-timeout", "0"], "dist-timeout"),
    (["--epochs", "0"], "epochs"),
    (["--method", "e2e"], "e2e"),  # with --blocks 2
    (["--lb", "channel"], "--lb"),  # dgl has no bridge
    (["--recompute"], "--recompute"),
    (["--method", "dgl+ema", "--lb", "channel"], "EMA only"),
    (["--boundaries", "1,3", "--blocks", "2"], "--boundaries"),
    (["--boundaries", "2", "--split", "memory"], "--split"),
    (["--resume", "--force"], "--force"),
    (["--blocks", "x"], "invalid int"),
]


@pytest.mark.parametrize("extra,needle", BAD, ids=[" ".join(b[0]) for b in BAD])
def test_mistakes_are_one_line_and_exit_2(tmp_path, capsys, extra, needle):
    argv = ["train", *TINY, "--out", str(tmp_path / "x")]
    i = 0
    while i < len(extra):  # a flag replaces its value in TINY, or is added
        flag = extra[i]
        value = extra[i + 1] if i + 1 < len(extra) and not extra[i + 1].startswith("--") \
            else None
        if value is not None and flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv += [flag] if value is None else [flag, value]
        i += 1 if value is None else 2
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse's own check of types
        rc = e.code
    assert rc == 2
    _one_line_error(capsys, needle)
    assert not (tmp_path / "x" / "config.json").exists()


def test_boundaries_alone_imply_k(tmp_path):
    assert main(["train", *[t for t in TINY if t not in ("--blocks", "2")], "--boundaries",
                 "3,6", "--out", str(tmp_path / "b")]) == 0
    assert json.loads((tmp_path / "b" / "config.json").read_text())["blocks"] == 3


def test_checkpoint_of_another_network_and_missing_config(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["train", *TINY, "--out", str(a)]) == 0
    tiny3 = [t if t != "2" else "3" for t in TINY]  # --blocks 3
    assert main(["train", *tiny3, "--out", str(b), "--epochs", "1"]) == 0
    (b / "checkpoint.pt").write_bytes((a / "checkpoint.pt").read_bytes())
    for argv in (["train", "--resume", "--out", str(b)], ["eval", "--run", str(b)]):
        assert main(argv) == 2
        _one_line_error(capsys, "belongs to another network")
    (a / "config.json").unlink()
    assert main(["train", "--resume", "--out", str(a)]) == 2
    _one_line_error(capsys, "no config.json")
    assert main(["eval", "--run", str(a)]) == 2
    _one_line_error(capsys, "no config.json")


def test_foreign_checkpoint_message_does_not_advise_unsafe_loading(tmp_path, capsys):
    fit(_cfg(tmp_path, epochs=1), progress=False)
    ckpt = tmp_path / "run" / "checkpoint.pt"
    torch.save({"net": {}, "evil": Path("x")}, ckpt)  # a pickled object, not tensors
    assert main(["eval", "--run", str(tmp_path / "run")]) == 2
    err = _one_line_error(capsys, "checkpoint")
    assert "weights_only" not in err


def test_failed_checkpoint_write_is_one_line_and_keeps_the_old_one(tmp_path, capsys,
                                                                   monkeypatch):
    run = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(run), "--epochs", "1"]) == 0
    before = (run / "checkpoint.pt").read_bytes()
    import locallearn.checkpoint as ck

    def full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(ck.torch, "save", full)
    assert main(["train", *TINY, "--out", str(run), "--force"]) == 2
    _one_line_error(capsys, "No space left on device")
    assert not [p for p in run.iterdir() if p.name.startswith(".checkpoint")]


# 4. never accept silently what is wrong -------------------------------------------------

def test_nan_loss_stops_the_run_non_zero(tmp_path, capsys):
    out = tmp_path / "nan"
    rc = main(["train", *TINY, "--epochs", "3", "--lr", "1e8", "--out", str(out)])
    assert rc == 1
    _one_line_error(capsys, "NaN or infinite")
    assert not (out / "metrics.csv").exists()  # no epoch of NaNs recorded as a result
    json.loads((out / "config.json").read_text())  # still valid JSON
    with pytest.raises(NonFiniteLoss):
        fit(_cfg(tmp_path, "api", lr=1e8, method="dgl", blocks=2), progress=False)


def test_nan_patience_tolerates_isolated_non_finite_steps(tmp_path, monkeypatch):
    from locallearn.local_net import LocalNet

    real = LocalNet.train_step
    calls = {"n": 0}

    def flaky(self, x, y, **kw):
        losses = real(self, x, y, **kw)
        calls["n"] += 1
        return losses * float("nan") if calls["n"] == 2 else losses
    monkeypatch.setattr(LocalNet, "train_step", flaky)
    with pytest.raises(NonFiniteLoss, match="1 step"):
        fit(_cfg(tmp_path, "strict", method="dgl", blocks=2), progress=False)
    calls["n"] = 0
    s = fit(_cfg(tmp_path, "patient", method="dgl", blocks=2, nan_patience=1), progress=False)
    assert s["epochs"] == 2
    summary = json.loads((tmp_path / "patient" / "summary.json").read_text())
    assert all(isinstance(r, float) for r in (summary["final_test_acc"],))


def test_eval_json_without_heads_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["eval", "--run", str(run), "--json", str(tmp_path / "h.json")]) == 2
    _one_line_error(capsys, "--heads")
    assert not (tmp_path / "h.json").exists()


# 5. runs that can be rebuilt exactly ----------------------------------------------------

def test_resolved_config_survives_a_changed_library_default(tmp_path, monkeypatch):
    """config.json holds every head option; a resume rebuilds the original objective even
    after a library default changed (here DGL's MLP width, which changes the weights)."""
    from locallearn.heads import HEADS

    full = fit(_cfg(tmp_path, "full", method="dgl+manpp"), progress=False)
    fit(_cfg(tmp_path, "cut", method="dgl+manpp"), progress=False, stop_after_epochs=1)
    saved = json.loads((tmp_path / "cut" / "config.json").read_text())
    assert saved["head_opts"]["mlp_width"] == 512 and saved["version"]
    init = HEADS.get("dgl").__init__  # a class: its options are __init__'s keywords
    names = init.__code__.co_varnames[:init.__code__.co_argcount]
    new = list(init.__defaults__)
    new[names[-len(new):].index("mlp_width")] = 64
    monkeypatch.setattr(init, "__defaults__", tuple(new))
    from locallearn.heads import head_options
    assert head_options("dgl")["mlp_width"] == 64  # the library default did change
    fit(_cfg(tmp_path, "cut"), resume=True, progress=False)
    a = load_checkpoint(tmp_path / "full" / "checkpoint.pt")["net"]
    b = load_checkpoint(tmp_path / "cut" / "checkpoint.pt")["net"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert full["final_test_acc"] == json.loads(
        (tmp_path / "cut" / "summary.json").read_text())["final_test_acc"]


def test_checkpoint_records_what_it_belongs_to_and_run_files_are_normal_files(tmp_path):
    fit(_cfg(tmp_path, epochs=1), progress=False)
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert state["identity"]["blocks"] == 3 and state["identity"]["model"] == "resnet20"
    assert "cuda_rng" in state
    for name in ("config.json", "metrics.csv", "summary.json", "curves.png", "checkpoint.pt"):
        mode = (tmp_path / "run" / name).stat().st_mode & 0o777
        assert mode & 0o044 or os.umask(os.umask(0)) & 0o044, oct(mode)  # readable as umask says


def test_a_bridge_only_method_is_saved_resolved_and_resumes(tmp_path):
    fit(_cfg(tmp_path, method="manpp", epochs=2), progress=False, stop_after_epochs=1)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["method"] == "greedy+manpp"  # resnet20's recipe: greedy heads
    s = fit(TrainConfig(out=str(tmp_path / "run"), device="cpu"), resume=True, progress=False)
    assert s["epochs"] == 2 and s["method"] == "greedy+manpp"


def test_a_run_killed_before_its_first_checkpoint_resumes_from_its_config(tmp_path):
    cfg = _cfg(tmp_path, epochs=1)
    fit(cfg, progress=False)
    (tmp_path / "run" / "checkpoint.pt").unlink()
    s = fit(TrainConfig(out=cfg.out, device="cpu"), resume=True, progress=False)
    assert s["epochs"] == 1 and s["blocks"] == 3


def test_e2e_with_k_blocks_is_refused_by_the_api():
    from locallearn import LocalNet, create_model

    with pytest.raises(ConfigError, match="blocks=4"):
        LocalNet(create_model("resnet20", num_classes=4, in_chans=1), 4, "e2e",
                 image_size=(8, 8))
    assert LocalNet(create_model("resnet20", num_classes=4, in_chans=1), 1, "e2e",
                    image_size=(8, 8)).k == 1


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="lr must be a finite number"):
        TrainConfig(lr=float("nan")).validate()
    with pytest.raises(ConfigError, match="image-size"):
        TrainConfig(image_size=-5).validate()
    with pytest.raises(ConfigError, match="no-nesterov"):
        TrainConfig(momentum=0.0).validate()
    TrainConfig(momentum=0.0, nesterov=False).validate()
