"""MedMNIST (PathMNIST and the other 2-D sets) from tiny .npz files in the real layout:
train_images (N, 28, 28, 3) or (N, 28, 28) uint8, train_labels (N, 1), same for val, test."""

import numpy as np
import pytest
import torch

import ima
from ima.data import build_dataset
from ima.data import npz_files as npz_module
from ima.data.npz_files import medmnist, pathmnist

SIZES = {"train": 36, "val": 9, "test": 18}


def write_medmnist(path, *, classes=9, rgb=True, side=28, labels=None):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in SIZES.items():
        shape = (n, side, side, 3) if rgb else (n, side, side)
        images = rng.integers(0, 256, size=shape, dtype=np.uint8)
        images[:, 0, 0] = np.arange(n)[:, None] if rgb else np.arange(n)
        arrays[f"{split}_images"] = images
        arrays[f"{split}_labels"] = (np.arange(n) % classes).reshape(-1, 1).astype(np.uint8)
    if labels is not None:
        arrays["test_labels"] = labels
    np.savez_compressed(path, **arrays)
    return arrays


def test_pathmnist_layout_splits_and_labels(tmp_path):
    arrays = write_medmnist(tmp_path / "pathmnist.npz")
    splits = {s: pathmnist(s, root=tmp_path) for s in SIZES}
    assert {s: len(d) for s, d in splits.items()} == SIZES
    for split, d in splits.items():
        assert d.x.shape[1:] == (3, 28, 28) and d.num_classes == 9 and d.name == "pathmnist"
        assert d.bounds == (0.0, 1.0) and d.split == split
        images = arrays[f"{split}_images"]
        assert torch.equal(d.x, torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255)
        assert d.y.tolist() == arrays[f"{split}_labels"][:, 0].tolist()
    assert torch.equal(medmnist("val", root=tmp_path).x, splits["val"].x)
    small = build_dataset("pathmnist", "train", root=str(tmp_path), n_train=18)
    assert len(small) == 18 and torch.bincount(small.y).tolist() == [2] * 9


def test_grey_set_other_sizes_and_root_as_file(tmp_path):
    write_medmnist(tmp_path / "breastmnist_64.npz", classes=2, rgb=False, side=64)
    d = medmnist("test", root=tmp_path, flag="breastmnist", size=64)
    assert d.x.shape == (18, 1, 64, 64) and d.num_classes == 2
    file = tmp_path / "breastmnist_64.npz"
    assert len(medmnist("val", root=file, flag="breastmnist", size=64)) == 9
    with pytest.raises(ValueError, match=r"val_images are 64x64, expected 28x28"):
        medmnist("val", root=file, flag="breastmnist")
    write_medmnist(tmp_path / "newmnist.npz", classes=3)
    assert medmnist("train", root=tmp_path, flag="newmnist").num_classes == 3


def test_default_folder_and_missing_file(tmp_path, monkeypatch):
    monkeypatch.setattr(npz_module, "MEDMNIST_DIRS", (tmp_path,))
    with pytest.raises(FileNotFoundError, match=r"'pathmnist.npz' not found in .*medmnist.com"):
        pathmnist("train")
    write_medmnist(tmp_path / "pathmnist.npz")
    assert len(pathmnist("train")) == SIZES["train"]


def test_bad_files_and_flags(tmp_path):
    write_medmnist(tmp_path / "pathmnist.npz", labels=np.full((18, 1), 9))
    with pytest.raises(ValueError, match=r"labels must be in \[0, 9\), got 18 label"):
        pathmnist("test", root=tmp_path)
    write_medmnist(tmp_path / "pathmnist.npz", labels=np.zeros((17, 1), np.uint8))
    with pytest.raises(ValueError, match="18 test images but 17 labels"):
        pathmnist("test", root=tmp_path)
    raw = (tmp_path / "pathmnist.npz").read_bytes()
    (tmp_path / "pathmnist.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match=r"pathmnist.npz.*damaged or truncated"):
        pathmnist("test", root=tmp_path)
    np.savez(tmp_path / "organmnist3d.npz", test_images=np.zeros((2, 28, 28, 28), np.uint8),
             test_labels=np.zeros((2, 1), np.uint8), train_labels=np.zeros((2, 1), np.uint8),
             val_labels=np.zeros((2, 1), np.uint8))
    with pytest.raises(ValueError, match="3-D MedMNIST volumes are not supported"):
        medmnist("test", root=tmp_path, flag="organmnist3d")
    with pytest.raises(ValueError, match="multi-label"):
        medmnist("test", root=tmp_path, flag="chestmnist")
    with pytest.raises(ValueError, match="flag must be a MedMNIST name"):
        medmnist("test", root=tmp_path, flag="../etc")
    with pytest.raises(ValueError, match="size must be one of 28, 64, 128, 224"):
        medmnist("test", root=tmp_path, size=32)


def test_config_keys():
    config = ima.resolve_config({"data": {"name": "medmnist", "flag": "dermamnist"},
                                 "model": {"name": "svhn_cnn", "num_classes": 7}})
    assert config["data"]["flag"] == "dermamnist" and config["data"]["size"] == 28
    with pytest.raises(ValueError, match="unknown key"):
        ima.resolve_config({"data": {"name": "pathmnist", "flag": "dermamnist"},
                            "model": {"name": "svhn_cnn"}})
