"""Super-resolution from the command line (issue 18): train, eval with the bicubic baseline and
side-by-side crops, export; bad input is one line and exit 2."""
import csv
import json

import pytest
import torch

from locallearn.cli import main
from locallearn.export import load_backbone

from test_sr_data import write_png


@pytest.fixture()
def folder(tmp_path):
    root = tmp_path / "sr"
    for i in range(3):
        write_png(root / "train" / f"t{i}.png", 40, 36, seed=i)
    write_png(root / "test" / "a.png", 40, 40, seed=7)
    write_png(root / "test" / "b.png", 36, 44, seed=8)
    return str(root)


def _train(folder, out, method, blocks, extra=()):
    return main(["train", "--model", "edsr_tiny_x2", "--dataset", "sr-folder:patches=32",
                 "--data-dir", folder, "--image-size", "8", "--method", method, "--blocks",
                 str(blocks), "--epochs", "2", "--batch-size", "8", "--optimizer", "adamw",
                 "--lr", "1e-3", "--weight-decay", "0", "--out", str(out), "--no-progress",
                 "--device", "cpu", *extra])


def test_train_eval_crops_and_export(folder, tmp_path, capsys):
    local, e2e = tmp_path / "local", tmp_path / "e2e"
    assert _train(folder, local, "slm+manpp", 3) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["final_test_psnr"] > 5 and 0 < printed["final_test_ssim"] <= 1
    with open(local / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[:4] == ["epoch", "train_loss", "test_psnr", "test_ssim"]
    assert len(rows) == 2 and float(rows[1]["train_loss"]) < float(rows[0]["train_loss"])
    assert json.loads((local / "summary.json").read_text())["task"] == "super_resolution"
    # trained with other training options (patches, LR patch size): same test set, comparable
    assert _train(folder, e2e, "e2e", 1, ("--dataset", "sr-folder:patches=16",
                                         "--image-size", "12")) == 0
    capsys.readouterr()
    png = tmp_path / "crops.png"
    assert main(["eval", "--run", str(local), "--crops", str(png), "--vs", str(e2e),
                 "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "psnr" in out and " dB" in out and "bicubic upscaling" in out and "wrote" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a run evaluated on fewer test images is another test set: refused in one line
    fewer = tmp_path / "fewer"
    assert _train(folder, fewer, "e2e", 1, ("--epochs", "1", "--limit-test", "1")) == 0
    capsys.readouterr()
    assert main(["eval", "--run", str(local), "--crops", str(tmp_path / "c2.png"), "--vs",
                 str(fewer), "--device", "cpu"]) == 2
    assert "one test set and scale" in capsys.readouterr().err
    assert not (tmp_path / "c2.png").exists()
    # never overwritten silently
    assert main(["eval", "--run", str(local), "--crops", str(png), "--device", "cpu"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["eval", "--run", str(local), "--heads", "--device", "cpu"]) == 0
    assert "test psnr" in capsys.readouterr().out
    assert main(["export", "--run", str(local), "--out", str(tmp_path / "w.safetensors")]) == 0
    model = load_backbone(tmp_path / "w.safetensors")
    assert model.task == "super_resolution" and model.scale == 2
    assert model(torch.zeros(1, 3, 8, 8)).shape == (1, 3, 16, 16)


@pytest.mark.parametrize("args, match", [
    (["--model", "edsr_tiny_x3", "--dataset", "sr-folder"], "upscales x3 but dataset"),
    (["--model", "edsr_tiny_x2", "--dataset", "sr-folder", "--image-size", "64"], "t0.png"),
    (["--model", "edsr_tiny_x2", "--dataset", "sr-folder:scale=5"], "2, 3, 4"),
    (["--model", "edsr_tiny_x2", "--dataset", "sr-folder", "--method", "dgl", "--blocks", "2"],
     "head 'dgl' serves classification only"),
    (["--model", "edsr_tiny_x2", "--dataset", "fashion-mnist"],
     "is a super_resolution model but dataset"),
])
def test_bad_input_is_one_line(args, match, folder, tmp_path, capsys):
    rc = main(["train", *args, "--data-dir", folder, "--out", str(tmp_path / "r"),
               "--epochs", "1", "--no-progress", "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and match in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_folder_without_images(tmp_path, capsys):
    (tmp_path / "sr" / "train").mkdir(parents=True)
    write_png(tmp_path / "sr" / "test" / "a.png", 40, 40)
    rc = main(["train", "--model", "edsr_tiny_x2", "--dataset", "sr-folder", "--data-dir",
               str(tmp_path / "sr"), "--out", str(tmp_path / "r"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "holds no images" in err and "train" in err
