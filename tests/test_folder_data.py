"""ImageNet-layout folders: loading, transforms, resumable shuffling, a short run."""
import pytest
import torch
from torchvision.datasets import FakeData

from locallearn import ConfigError, TrainConfig, fit
from locallearn.data import load_dataset


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("imnet")
    for split, n in (("train", 24), ("val", 9)):
        fake = FakeData(size=n, image_size=(3, 40, 48), num_classes=3, random_offset=len(split))
        for i in range(n):
            img, label = fake[i]
            d = root / split / f"class{label}"
            d.mkdir(parents=True, exist_ok=True)
            img.save(d / f"{i}.png")
    return root


def test_folder_shapes_and_classes(folder):
    data = load_dataset("imagefolder", data_dir=str(folder), image_size=32)
    assert data.num_classes == 3 and data.in_chans == 3 and data.image_size == (32, 32)
    x, y = next(iter(data.test_batches(4, torch.device("cpu"))))
    assert x.shape == (4, 3, 32, 32) and y.dtype == torch.int64
    g = torch.Generator().manual_seed(0)
    batches = data.train_batches(8, g, torch.device("cpu"))
    assert len(batches) == 3
    state = g.get_state()
    first = [y.tolist() for _, y in batches]
    g.set_state(state)
    assert [y.tolist() for _, y in batches] == first  # same generator state, same epoch
    half = data.train_batches(8, g.set_state(state) or g, torch.device("cpu"), shard=(1, 2))
    assert [len(y) for _, y in half] == [4, 4, 4]


def test_folder_errors(tmp_path, folder):
    with pytest.raises(ConfigError, match="train"):
        load_dataset("imagefolder", data_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="--data-dir"):
        load_dataset("imagefolder")
    with pytest.raises(ConfigError, match="image-size 32 applies to imagefolder only"):
        load_dataset("synthetic", image_size=32)


def test_short_run_on_a_folder(tmp_path, folder):
    s = fit(TrainConfig(model="resnet20", method="infopro+manpp", blocks=3, dataset="imagefolder",
                        data_dir=str(folder), image_size=32, epochs=1, batch_size=8, device="cpu",
                        out=str(tmp_path / "run")), progress=False)
    assert s["epochs"] == 1 and 0.0 <= s["final_test_acc"] <= 1.0 and s["image_size"] == [32, 32]


def test_folder_mid_epoch_resume_is_bit_identical(tmp_path, folder):
    """Killed after batch 2 of 3 (random crops in 2 loader workers), resumed: same weights."""
    from locallearn.checkpoint import load_checkpoint

    def cfg(name):
        return TrainConfig(model="resnet20", method="dgl", blocks=2, dataset="imagefolder",
                           data_dir=str(folder), image_size=16, epochs=2, batch_size=8,
                           device="cpu", out=str(tmp_path / name))

    fit(cfg("full"), progress=False)
    fit(cfg("killed"), progress=False, stop_after_steps=2)
    assert load_checkpoint(tmp_path / "killed" / "checkpoint.pt")["batch"] == 2
    fit(cfg("killed"), resume=True, progress=False)
    a = load_checkpoint(tmp_path / "full" / "checkpoint.pt")["net"]
    b = load_checkpoint(tmp_path / "killed" / "checkpoint.pt")["net"]
    assert all(torch.equal(a[k], b[k]) for k in a)
