"""Segmentation from the command line (issue 14): train, eval, export, list; bad input."""
import csv
import json

import pytest
import torch

from locallearn.cli import main
from locallearn.export import load_backbone

from test_dense_data import make_voc


@pytest.fixture()
def voc(tmp_path):
    names = [f"i{i}" for i in range(6)]
    make_voc(tmp_path / "data", {"train": names[:4], "val": names[4:]},
             {n: (24, 24) for n in names})
    return str(tmp_path / "data")


def test_train_eval_export_a_segmenter(voc, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", "--model", "deeplabv3_resnet20", "--dataset", "voc-seg", "--data-dir",
               voc, "--image-size", "32", "--method", "slm+manpp", "--blocks", "3",
               "--epochs", "2", "--batch-size", "2", "--lr", "0.01", "--out", str(out),
               "--no-progress", "--device", "cpu"])
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    assert 0.0 <= printed["final_test_miou"] <= 1.0 and "final_test_pixel_acc" in printed
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["epoch", "train_loss", "test_miou", "test_mean_acc",
                             "test_pixel_acc", "lr", "seconds"] and len(rows) == 2
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "segmentation"
    assert summary["final_test_miou"] == pytest.approx(float(rows[-1]["test_miou"]))
    assert main(["eval", "--run", str(out), "--data-dir", voc, "--device", "cpu"]) == 0
    line = capsys.readouterr().out
    assert "miou" in line and "pixel_acc" in line
    assert main(["eval", "--run", str(out), "--data-dir", voc, "--heads", "--device",
                 "cpu"]) == 0
    assert "test miou" in capsys.readouterr().out
    assert main(["export", "--run", str(out), "--data-dir", voc,
                 "--out", str(tmp_path / "w.safetensors")]) == 0
    model = load_backbone(tmp_path / "w.safetensors")
    assert model.task == "segmentation" and model(torch.zeros(1, 3, 32, 32)).shape[1] == 21


@pytest.mark.parametrize("args, match", [
    (["--model", "resnet20", "--dataset", "voc-seg"], "is a classification model but dataset"),
    (["--model", "deeplabv3_resnet20", "--dataset", "fashion-mnist"],
     "is a segmentation model but dataset"),
    (["--model", "deeplabv3_resnet20", "--dataset", "voc-seg", "--method", "dgl", "--blocks",
      "2"], "head 'dgl' serves classification only"),
])
def test_mismatches_are_one_line_before_any_work(args, match, tmp_path, capsys):
    out = tmp_path / "old"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    assert main(["train", *args, "--out", str(out), "--force", "--data-dir",
                 str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert (out / "keep.txt").read_text() == "x"


def test_list_shows_tasks_recipes_and_methods_per_task(capsys):
    assert main(["list"]) == 0
    text = capsys.readouterr().out
    assert "deeplabv3plus_resnet50" in text and "segmentation" in text
    seg = next(ln for ln in text.splitlines() if ln.strip().startswith("segmentation:"))
    assert "slm+manpp" in seg and "dgl" not in seg and "predsim" not in seg
    assert "infopro recipe: ixx=(5.0, 5.0)" in text
