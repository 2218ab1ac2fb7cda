"""Detection from the command line (issue 16): train, eval (+ heads), export on the real
VOC files of Debian's labelme-examples; bad input exits 2 with one line."""
import csv
import json

import pytest
from safetensors.torch import load_file

from locallearn.cli import main
from locallearn.nets.retinanet import retinanet_source

from test_det_data import _voc_layout


def test_train_eval_export_a_detector(tmp_path, capsys):
    root = _voc_layout(tmp_path)[0]
    out = tmp_path / "run"
    rc = main(["train", "--model", "retinanet_resnet18_w64", "--dataset", "voc-det",
               "--data-dir", str(root), "--image-size", "64", "--method", "greedy+manpp",
               "--blocks", "4", "--split", "stages", "--epochs", "1", "--batch-size", "2",
               "--optimizer", "adamw", "--lr", "1e-4", "--clip-grad-norm", "1.0",
               "--out", str(out), "--no-progress", "--device", "cpu"])
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    assert 0.0 <= printed["final_test_map"] <= 1.0 and "final_test_map_50" in printed
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["epoch", "train_loss", "test_map", "test_map_50", "test_map_75",
                             "lr", "seconds"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "detection"
    config = json.loads((out / "config.json").read_text())
    assert config["split"] == "stages" and config["head_opts"] == {"width": 64}
    assert main(["eval", "--run", str(out), "--data-dir", str(root), "--heads",
                 "--device", "cpu"]) == 0
    assert "test map" in capsys.readouterr().out
    w = tmp_path / "w.safetensors"
    assert main(["export", "--run", str(out), "--data-dir", str(root), "--out", str(w)]) == 0
    fresh = retinanet_source(18, 20, 3, width=64)
    fresh.load_state_dict(load_file(str(w)), strict=True)


@pytest.mark.parametrize("args, message", [
    (["--dataset", "fmnist-scenes"], "detection model but dataset 'fmnist-scenes'"),
    (["--method", "dgl", "--blocks", "4"], "serves classification only"),
    (["--blocks", "3", "--method", "greedy", "--split", "stages"], "K must be 4"),
])
def test_bad_detection_input_exits_2(tmp_path, capsys, args, message):
    root = _voc_layout(tmp_path)[0]
    base = ["train", "--model", "retinanet_resnet18_w64", "--dataset", "voc-det",
            "--data-dir", str(root), "--image-size", "64", "--epochs", "1",
            "--out", str(tmp_path / "r"), "--no-progress"]
    assert main(base + args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
