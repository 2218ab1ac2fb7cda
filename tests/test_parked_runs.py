"""benchmarks/parked_runs.py: an unfinished run parked in the repository resumes, bit for
bit, on a fresh clone (which has no runs/), and its parked copy goes once it finishes."""
import os
import shutil

import torch

from locallearn import TrainConfig, fit
from locallearn.checkpoint import load_checkpoint


def _cfg(out, **kw):
    return TrainConfig(model="resnet20", method="dgl+manpp", blocks=3, dataset="synthetic:1x12x12:4",
                       epochs=2, batch_size=32, lr=0.05, limit_train=96, limit_test=64,
                       device="cpu", out=str(out), seed=3, **kw)


def _parked(bench_script, tmp_path, monkeypatch):
    parked = bench_script("parked_runs")
    monkeypatch.setattr(parked, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(parked, "PARKED", tmp_path / "repo" / "parked")
    return parked


def test_a_parked_run_resumes_on_a_fresh_clone_bit_identically(bench_script, tmp_path, monkeypatch):
    parked = _parked(bench_script, tmp_path, monkeypatch)
    fit(_cfg(tmp_path / "full"), progress=False)
    out = tmp_path / "runs" / "bench" / "r_s3"
    with parked.parking(out):  # a sitting ends mid-epoch (3 batches an epoch here)
        fit(_cfg(out), progress=False, stop_after_steps=4)
    kept = parked.parked_dir(out)
    assert kept == tmp_path / "repo" / "parked" / "bench" / "r_s3"
    assert parked.progress(kept) == (1, 1) and (kept / "config.json").is_file()
    assert not (kept / ".run.lock").exists()  # the process's lock stays behind
    shutil.rmtree(tmp_path / "runs")  # the next sitting's checkout has no runs/
    with parked.parking(out):
        assert parked.progress(out) == (1, 1)  # put back before training
        fit(_cfg(out), resume=True, progress=False)
    assert not kept.exists()  # finished: nothing left parked
    a = load_checkpoint(tmp_path / "full" / "checkpoint.pt")
    b = load_checkpoint(out / "checkpoint.pt")
    assert b["step"] == a["step"] == 6
    assert all(torch.equal(a["net"][k], b["net"][k]) for k in a["net"])
    assert [r["test_acc"] for r in a["history"]] == [r["test_acc"] for r in b["history"]]


def test_park_keeps_the_furthest_copy_and_a_stop_parks(bench_script, tmp_path, monkeypatch, capsys):
    parked = _parked(bench_script, tmp_path, monkeypatch)
    out = tmp_path / "runs" / "bench" / "r"
    fit(_cfg(out), progress=False, stop_after_steps=4)
    assert parked.main(["--park"]) == 0
    said = capsys.readouterr().out
    assert "bench/r: epoch 1 of 2 batch 1, " in said and " MB, stopped; parked\n" in said
    fit(_cfg(out), resume=True, progress=False, stop_after_steps=5)  # one batch further here
    assert not parked.unpark(out)  # an older parked copy never replaces a newer run
    assert parked.progress(out) == (1, 2)

    class Stop(Exception):
        pass
    try:
        with parked.parking(out):
            raise Stop  # a stop signal once the run has checkpointed
    except Stop:
        pass
    assert parked.progress(parked.parked_dir(out)) == (1, 2)
    fit(_cfg(out), resume=True, progress=False)
    assert parked.park(out) is None  # finished: nothing to park
    assert parked.park(tmp_path / "elsewhere") is None  # a run outside runs/: not parked


def test_a_large_checkpoint_is_not_parked_unless_asked(bench_script, tmp_path, monkeypatch, capsys):
    parked = _parked(bench_script, tmp_path, monkeypatch)
    out = tmp_path / "runs" / "bench" / "big"
    fit(_cfg(out), progress=False, stop_after_steps=2)
    mb = (out / "checkpoint.pt").stat().st_size / 2**20
    assert parked.park(out, max_mb=mb / 2) is None and not parked.parked_dir(out).exists()
    assert f"over {mb / 2:g} MB" in capsys.readouterr().out
    assert parked.main(["--park", "--max-mb", str(mb + 1)]) == 0
    assert parked.progress(parked.parked_dir(out)) == (0, 2)


def test_a_fresh_clone_still_shows_where_a_parked_run_stands(bench_script, tmp_path, monkeypatch):
    import sys

    rep = bench_script("reproduce")
    plan, parked = sys.modules["reproduce_plan"], sys.modules["parked_runs"]
    monkeypatch.setattr(plan, "RESULTS", tmp_path / "kept")
    monkeypatch.setattr(plan, "ROOT", tmp_path)
    monkeypatch.setattr(parked, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(parked, "PARKED", tmp_path / "parked")
    there = parked.parked_dir(rep.run_dir("long30", "dgl+manpp", 16, 0))
    there.mkdir(parents=True)  # no runs/ at all: only the parked copy
    (there / "metrics.csv").write_text("epoch,train_loss,test_acc,lr,seconds\n1,0.3,0.9264,0.1,900\n")
    (line,) = [ln for ln in rep.training_lines("long30") if ln]
    assert "`dgl+manpp` seed 0: epoch 1 of 30, 92.64%, ~7.2 h left at its last epoch's pace." in line
    (there / "checkpoint.pt").write_bytes(b"")  # said only when a checkpoint is parked too
    (line,) = [ln for ln in rep.training_lines("long30") if ln]
    assert "~7.2 h left at its last epoch's pace, parked." in line


def test_the_listing_says_where_each_run_stands_and_park_waits_for_its_trainer(
        bench_script, tmp_path, monkeypatch, capsys):
    from locallearn.run_lock import hold_run_dir

    parked = _parked(bench_script, tmp_path, monkeypatch)
    assert parked.main([]) == 0 and "no unfinished runs" in capsys.readouterr().out
    out = tmp_path / "runs" / "bench" / "r"
    fit(_cfg(out), progress=False, stop_after_steps=4)
    assert parked.main([]) == 0
    said = capsys.readouterr().out
    assert "bench/r: epoch 1 of 2 batch 1" in said and "stopped; not parked (--park" in said
    with hold_run_dir(out):  # its trainer is still going: its checkpoint would move on
        assert parked.main(["--park"]) == 0
        said = capsys.readouterr().out
        assert f"still training (pid {os.getpid()}" in said and "training (pid" in said
        assert not parked.parked_dir(out).exists()
    assert parked.main(["--park"]) == 0 and "stopped; parked\n" in capsys.readouterr().out
    shutil.rmtree(out)  # a fresh clone: only the parked copy
    assert parked.main([]) == 0
    assert "bench/r: parked at epoch 1 of 2 batch 1" in capsys.readouterr().out
