"""End-to-end: fit, resume, export, and the CLI's handling of bad input."""
import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from locallearn import TrainConfig, fit, load_backbone
from locallearn.checkpoint import load_checkpoint
from locallearn.cli import main
from locallearn.train import load_run

DS = "synthetic:1x12x12:4"


def _cfg(tmp_path, name="run", **kw):
    base = dict(model="resnet20", method="dgl+manpp", blocks=3, dataset=DS, epochs=2,
                batch_size=32, lr=0.05, limit_train=96, limit_test=64, device="cpu",
                out=str(tmp_path / name), seed=3)
    base.update(kw)
    return TrainConfig(**base)


def test_run_directory_contents(tmp_path):
    summary = fit(_cfg(tmp_path), progress=False)
    run = tmp_path / "run"
    for f in ("config.json", "metrics.csv", "summary.json", "curves.png", "checkpoint.pt"):
        assert (run / f).is_file(), f
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert set(rows[0]) == {"epoch", "train_loss", "test_acc", "lr", "seconds"}
    s = json.loads((run / "summary.json").read_text())
    for key in ("model", "method", "blocks", "epochs", "final_test_acc", "best_test_acc",
                "wall_time_s"):
        assert key in s
    assert s["blocks"] == 3 and s["method"] == "dgl+manpp" and s["epochs"] == 2
    assert s["final_test_acc"] == pytest.approx(float(rows[-1]["test_acc"]))
    assert summary["best_test_acc"] == max(float(r["test_acc"]) for r in rows)
    assert json.loads((run / "config.json").read_text())["blocks"] == 3


def test_training_learns_synthetic_data(tmp_path):
    s = fit(_cfg(tmp_path, method="e2e", blocks=1, epochs=4, limit_train=256, lr=0.1,
                 augment=False), progress=False)
    assert s["final_test_acc"] > 0.6  # 4 classes: chance is 0.25


def test_resume_is_bit_identical(tmp_path):
    fit(_cfg(tmp_path, "full"), progress=False)
    fit(_cfg(tmp_path, "killed"), progress=False, stop_after_epochs=1)
    assert load_checkpoint(tmp_path / "killed" / "checkpoint.pt")["epoch"] == 1
    fit(_cfg(tmp_path, "killed"), resume=True, progress=False)
    a = load_checkpoint(tmp_path / "full" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "killed" / "checkpoint.pt")
    assert a["net"].keys() == b["net"].keys()
    for k in a["net"]:
        assert torch.equal(a["net"][k], b["net"][k]), k
    for ra, rb in zip(a["history"], b["history"]):
        assert ra["train_loss"] == rb["train_loss"] and ra["test_acc"] == rb["test_acc"]


def test_resume_runs_on_the_callers_device(tmp_path):
    """A run started on a GPU (saved config says cuda) is finished here on the CPU."""
    fit(_cfg(tmp_path, "full"), progress=False)
    fit(_cfg(tmp_path, "moved"), progress=False, stop_after_epochs=1)
    saved = tmp_path / "moved" / "config.json"
    saved.write_text(json.dumps(dict(json.loads(saved.read_text()), device="cuda:7", lr=0.05)))
    fit(_cfg(tmp_path, "moved", lr=0.5), resume=True, progress=False)  # saved lr still wins
    assert json.loads(saved.read_text())["device"] == "cpu"
    a = load_checkpoint(tmp_path / "full" / "checkpoint.pt")["net"]
    b = load_checkpoint(tmp_path / "moved" / "checkpoint.pt")["net"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_mid_epoch_resume_is_bit_identical(tmp_path):
    """A run killed mid-epoch (3 batches per epoch here) resumes to the same end state."""
    fit(_cfg(tmp_path, "full"), progress=False)
    fit(_cfg(tmp_path, "killed"), progress=False, stop_after_steps=2)
    mid = load_checkpoint(tmp_path / "killed" / "checkpoint.pt")
    assert (mid["epoch"], mid["batch"], mid["step"]) == (0, 2, 2)
    fit(_cfg(tmp_path, "killed"), resume=True, progress=False, stop_after_steps=4)
    mid = load_checkpoint(tmp_path / "killed" / "checkpoint.pt")
    assert (mid["epoch"], mid["batch"], mid["step"]) == (1, 1, 4)
    fit(_cfg(tmp_path, "killed"), resume=True, progress=False)
    a = load_checkpoint(tmp_path / "full" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "killed" / "checkpoint.pt")
    assert b.get("batch", 0) == 0 and b["step"] == a["step"] == 6
    for k in a["net"]:
        assert torch.equal(a["net"][k], b["net"][k]), k
    for ra, rb in zip(a["history"], b["history"], strict=True):
        assert ra["train_loss"] == rb["train_loss"] and ra["test_acc"] == rb["test_acc"]


def test_export_gives_the_same_logits(tmp_path):
    fit(_cfg(tmp_path, epochs=1), progress=False)
    assert main(["export", "--run", str(tmp_path / "run"), "--out", str(tmp_path / "m.safetensors")]) == 0
    _, net, data = load_run(tmp_path / "run")
    model = load_backbone(tmp_path / "m.safetensors")
    x = torch.randn(5, 1, 12, 12)
    net.eval()
    assert torch.equal(model(x), net(x))
    assert not any("bridge" in k or "head" in k for k in model.state_dict())


def test_cli_train_eval_and_list(tmp_path, capsys):
    out = tmp_path / "cli"
    rc = main(["train", "--model", "resnet20", "--method", "infopro+man", "--blocks", "2",
               "--dataset", DS, "--epochs", "1", "--batch-size", "32", "--limit-train", "64",
               "--limit-test", "32", "--device", "cpu", "--out", str(out), "--no-progress",
               "--head-opt", "loss=ce", "--head-opt", "ixx=1,0"])
    assert rc == 0
    cfg = json.loads((out / "config.json").read_text())
    # the resolved objective: the user's options over every default of the family
    from locallearn.heads import head_options
    assert set(cfg["head_opts"]) == set(head_options("infopro"))
    assert cfg["head_opts"]["loss"] == "ce" and cfg["head_opts"]["ixx"] == [1.0, 0.0]
    assert main(["eval", "--run", str(out), "--device", "cpu"]) == 0
    line = capsys.readouterr().out
    assert "test:" in line
    heads_json = tmp_path / "heads.json"
    assert main(["eval", "--run", str(out), "--device", "cpu", "--heads",
                 "--json", str(heads_json)]) == 0
    rows = json.loads(heads_json.read_text())["rows"]
    assert [r["block"] for r in rows] == [0, 1]
    assert rows[0]["bridge_scale"] is None and rows[1]["bridge_scale"] is None  # MAN: no s
    assert 0.0 <= rows[0]["test_acc"] <= 1.0  # loss=ce: the InfoPro head has class scores
    # the last block's row is the network's own accuracy, as plain eval prints it
    assert f"{100 * rows[1]['test_acc']:.2f}%" in line
    capsys.readouterr()
    assert main(["list"]) == 0
    listing = capsys.readouterr().out
    assert "resnet110" in listing and "infopro+manpp" in listing and "fashion-mnist" in listing


BAD = [
    (["--blocks", "0"], "K=0"),
    (["--blocks", "11"], "K=11"),
    (["--model", "resnet7"], "resnet7"),
    (["--method", "dgl+foo"], "dgl+foo"),
    (["--dataset", "mnist9"], "mnist9"),
    (["--device", "tpu"], "tpu"),
    (["--device", "cuda"] if not torch.cuda.is_available() else ["--device", "cuda:99"], "cuda"),
    (["--batch-size", "0"], "batch-size"),
    (["--batch-size", "-3"], "-3"),
    (["--lr", "0"], "lr"),
    (["--lr", "-0.1"], "-0.1"),
    (["--head-opt", "nope=1"], "nope"),
    (["--method", "dgl+manpp", "--bridge-init", "zeros"], "zeros"),
    (["--method", "dgl", "--blocks", None], "--blocks"),
]


@pytest.mark.parametrize("extra,needle", BAD, ids=[b[1] for b in BAD])
def test_bad_input_exits_2(tmp_path, capsys, extra, needle):
    args = {"--model": "resnet20", "--method": "dgl", "--blocks": "2", "--dataset": DS,
            "--epochs": "1", "--device": "cpu", "--out": str(tmp_path / "x")}
    for k, v in zip(extra[::2], extra[1::2]):
        if v is None:
            del args[k]
        else:
            args[k] = v
    argv = ["train", "--no-progress"] + [t for kv in args.items() for t in kv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_bad_data_dir_resume_and_corrupt_checkpoint(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    rc = main(["train", "--dataset", "fashion-mnist", "--data-dir", str(empty), "--out",
               str(tmp_path / "r"), "--device", "cpu", "--no-progress"])
    assert rc == 2 and str(empty) in capsys.readouterr().err
    assert main(["train", "--resume", "--out", str(tmp_path / "none")]) == 2
    assert "nothing to resume" in capsys.readouterr().err
    fit(_cfg(tmp_path, epochs=1), progress=False)
    ckpt = tmp_path / "run" / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:200])
    assert main(["train", "--resume", "--out", str(tmp_path / "run")]) == 2
    assert "corrupt" in capsys.readouterr().err
    assert main(["eval", "--run", str(tmp_path / "run")]) == 2


def test_cli_entry_point_has_no_traceback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "locallearn", "train", "--model", "resnet20",
                        "--method", "nope", "--blocks", "2", "--out", str(tmp_path / "o")],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert "unknown method 'nope'" in r.stderr and "Traceback" not in r.stderr


def test_start_up_leaves_the_heavy_optional_libraries_unloaded():
    """`locallearn --help`, `list` and every rank of a job start without torchmetrics, timm or
    matplotlib (about 3 of the 9 s a process took to start on a 2-core machine); they load
    when a metric, a timm model or a plot is made."""
    code = ("import sys, locallearn, locallearn.cli; "
            "from locallearn import create_model; create_model('resnet20', num_classes=4); "
            "print(sorted(m for m in ('torchmetrics', 'timm', 'matplotlib') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
    from locallearn import list_models
    assert {"timm:vit_tiny_patch16_224", "retinanet_resnet18"} <= set(list_models())


def test_amp_bf16_on_cpu_and_fp16_needs_cuda(tmp_path, capsys):
    s = fit(_cfg(tmp_path, "bf16", amp="bf16", epochs=1), progress=False)
    assert s["epochs"] == 1 and 0.0 <= s["final_test_acc"] <= 1.0
    ckpt = load_checkpoint(tmp_path / "bf16" / "checkpoint.pt")
    assert all(torch.isfinite(v).all() for v in ckpt["net"].values() if v.is_floating_point())
    if not torch.cuda.is_available():
        rc = main(["train", "--model", "resnet20", "--method", "dgl", "--blocks", "2", "--dataset", DS,
                   "--amp", "fp16", "--device", "cpu", "--out", str(tmp_path / "fp16")])
        assert rc == 2 and "fp16" in capsys.readouterr().err
    assert main(["train", "--dataset", DS, "--amp", "fp8", "--device", "cpu",
                 "--out", str(tmp_path / "fp8")]) == 2
