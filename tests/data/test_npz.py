"""npz: a user's arrays, as train.npz/val.npz/test.npz with x, y or one file with
x_train, y_train, ...; uint8 scaled, floats in [0, 1] kept, anything else refused."""

import numpy as np
import pytest
import torch

from ima.data import build_dataset
from ima.data.npz_files import npz


def arrays(n, first=0, *, classes=3, dtype=np.uint8):
    x = np.zeros((n, 2, 4, 4), dtype=dtype)
    x[:, 0, 0, 0] = np.arange(first, first + n)
    if np.issubdtype(dtype, np.floating):
        x /= 255.0
    return x, np.arange(n) % classes


def _ids(d):
    return [round(v) for v in (d.x[:, 0, 0, 0] * 255).tolist()]


def test_folder_layout_with_val(tmp_path):
    for split, n, first in (("train", 12, 0), ("val", 6, 100), ("test", 9, 200)):
        x, y = arrays(n, first)
        np.savez(tmp_path / f"{split}.npz", x=x, y=y)
    splits = {s: npz(s, root=tmp_path) for s in ("train", "val", "test")}
    assert {s: len(d) for s, d in splits.items()} == {"train": 12, "val": 6, "test": 9}
    assert _ids(splits["val"]) == list(range(100, 106))
    for d in splits.values():
        assert d.x.shape[1:] == (2, 4, 4) and d.num_classes == 3 and d.bounds == (0.0, 1.0)
    assert len(npz("train", root=tmp_path, n_train=6)) == 6


def test_one_file_without_val_floats_and_grey(tmp_path):
    x, y = arrays(20, dtype=np.float32)
    x_test, y_test = arrays(5, 50, dtype=np.float64)
    np.savez(tmp_path / "d.npz", x_train=x[:, 0], y_train=y.reshape(-1, 1), x_test=x_test[:, 0],
             y_test=y_test)
    train = npz("train", path=tmp_path / "d.npz", val_fraction=0.3)
    val = build_dataset("npz", "val", path=str(tmp_path / "d.npz"), val_fraction=0.3)
    test = npz("test", path=tmp_path / "d.npz", num_classes=5)
    assert (len(train), len(val), len(test)) == (14, 6, 5)
    assert train.x.shape[1:] == (1, 4, 4) and test.num_classes == 5
    assert sorted(_ids(train) + _ids(val)) == list(range(20))
    assert torch.bincount(val.y).tolist() == [2, 2, 2]
    assert torch.equal(test.x[:, 0], torch.from_numpy(x_test[:, 0]).float())


def test_channels_last(tmp_path):
    x, y = arrays(4)
    np.savez(tmp_path / "d.npz", x_train=x.transpose(0, 2, 3, 1), y_train=y, x_test=x[:2],
             y_test=y[:2])
    d = npz("train", path=tmp_path / "d.npz", channels_last=True, val_fraction=0.0)
    assert torch.equal(d.x, torch.from_numpy(x).float() / 255)


def test_bad_arrays_rejected(tmp_path):
    x, y = arrays(6)
    f = tmp_path / "d.npz"
    np.savez(f, x_train=x.astype(np.float32), y_train=y, x_test=x, y_test=y)
    with pytest.raises(ValueError, match=r"floating-point images must lie in \[0, 1\]"):
        npz("train", path=f)
    np.savez(f, x_train=x.astype(np.int16), y_train=y, x_test=x, y_test=y)
    with pytest.raises(ValueError, match="must be uint8.*got dtype int16"):
        npz("train", path=f)
    np.savez(f, x_train=x, y_train=y[:5], x_test=x, y_test=y)
    with pytest.raises(ValueError, match="6 images but 5 labels"):
        npz("train", path=f)
    np.savez(f, x_train=x, y_train=y.astype(np.float32), x_test=x, y_test=y)
    with pytest.raises(ValueError, match="labels must be integers"):
        npz("train", path=f)
    np.savez(f, x_train=x, y_train=y, x_test=x, y_test=np.array([0, 1, 2, 0, 1, 7]))
    with pytest.raises(ValueError, match=r"labels must be in \[0, 4\)"):
        npz("test", path=f, num_classes=4)
    np.savez(f, x_train=np.array([object()] * 6), y_train=y, x_test=x, y_test=y)
    with pytest.raises(ValueError, match="object array, which is never loaded"):
        npz("train", path=f)
    np.savez(f, x_train=x, y_train=y)
    with pytest.raises(ValueError, match=r"has no array 'y_test'"):
        npz("train", path=f)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="exactly one of root"):
        npz("train")
    with pytest.raises(ValueError, match="exactly one of root"):
        npz("train", root=tmp_path, path=tmp_path / "d.npz")
    with pytest.raises(FileNotFoundError, match="'train.npz' not found"):
        npz("train", root=tmp_path)
    with pytest.raises(FileNotFoundError, match="d.npz' not found"):
        npz("train", path=tmp_path / "d.npz")
