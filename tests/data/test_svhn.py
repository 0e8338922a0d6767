"""SVHN from tiny MATLAB v5 files in the real layout: X (32, 32, 3, N) uint8, y (N, 1)
with 10 for the digit 0."""

import numpy as np
import pytest
import torch
from scipy.io import savemat

from ima.data import build_dataset
from ima.data.house_numbers import svhn

N_TRAIN, N_TEST = 40, 12


def make_mat(path, n, *, seed=0, labels=None):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
    x[0, 0, 0, :] = np.arange(n)  # sample number in the red channel's first pixel
    y = (np.arange(n) % 10 + 1).astype(np.uint8) if labels is None else labels
    savemat(path, {"X": x, "y": y.reshape(-1, 1)})
    return x, y


@pytest.fixture()
def root(tmp_path):
    make_mat(tmp_path / "train_32x32.mat", N_TRAIN)
    make_mat(tmp_path / "test_32x32.mat", N_TEST, seed=1)
    return tmp_path


def _ids(d):
    return (d.x[:, 0, 0, 0] * 255).round().long().tolist()


def test_layout_range_and_label_10_is_digit_0(tmp_path):
    x, y = make_mat(tmp_path / "test_32x32.mat", N_TEST, seed=1)
    make_mat(tmp_path / "train_32x32.mat", N_TRAIN)
    d = svhn("test", root=tmp_path)
    assert d.x.shape == (N_TEST, 3, 32, 32) and d.x.dtype == torch.float32
    assert d.bounds == (0.0, 1.0) and d.num_classes == 10 and d.name == "svhn"
    # X[h, w, c, n] is pixel (h, w) of channel c of image n.
    expected = torch.from_numpy(x.transpose(3, 2, 0, 1).copy()).float() / 255
    assert torch.equal(d.x, expected)
    assert y.tolist()[:10] == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    assert d.y.tolist()[:10] == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0]


def test_splits_sizes_disjoint_deterministic(root):
    train = svhn("train", root=root, val_size=10)
    val = svhn("val", root=root, val_size=10)
    assert (len(train), len(val), len(svhn("test", root=root))) == (30, 10, N_TEST)
    assert sorted(_ids(train) + _ids(val)) == list(range(N_TRAIN))
    assert torch.bincount(val.y, minlength=10).tolist() == [1] * 10
    assert torch.equal(svhn("val", root=root, val_size=10).x, val.x)
    assert _ids(svhn("val", root=root, val_size=10, seed=5)) != _ids(val)
    small = svhn("train", root=root, val_size=10, n_train=10)
    assert len(small) == 10 and set(_ids(small)) <= set(_ids(train))
    assert len(build_dataset("svhn", "train", root=str(root), val_size=0)) == N_TRAIN


def test_bad_labels_and_counts_rejected(tmp_path):
    labels = (np.arange(N_TEST) % 10 + 1).astype(np.uint8)
    labels[2] = 0
    make_mat(tmp_path / "test_32x32.mat", N_TEST, labels=labels)
    with pytest.raises(ValueError, match=r"labels must be 1..10 \(10 for the digit 0\)"):
        svhn("test", root=tmp_path)
    labels[2] = 11
    make_mat(tmp_path / "test_32x32.mat", N_TEST, labels=labels)
    with pytest.raises(ValueError, match="labels must be 1..10"):
        svhn("test", root=tmp_path)
    make_mat(tmp_path / "test_32x32.mat", N_TEST, labels=labels[:-1] * 0 + 1)
    with pytest.raises(ValueError, match=r"y must have shape \(12, 1\) to match X"):
        svhn("test", root=tmp_path)
    savemat(tmp_path / "test_32x32.mat", {"X": np.zeros((32, 32, 3, 2)), "y": np.ones((2, 1))})
    with pytest.raises(ValueError, match=r"X must be uint8 of shape \(32, 32, 3, N\)"):
        svhn("test", root=tmp_path)
    savemat(tmp_path / "test_32x32.mat", {"images": np.zeros((2, 2), np.uint8)})
    with pytest.raises(ValueError, match="no variable"):
        svhn("test", root=tmp_path)


def test_doubles_from_matlab_accepted(tmp_path):
    x = np.zeros((32, 32, 3, 3), np.uint8)
    savemat(tmp_path / "test_32x32.mat", {"X": x, "y": np.array([[10.0], [1.0], [5.0]])})
    assert svhn("test", root=tmp_path).y.tolist() == [0, 1, 5]


def test_truncated_file_rejected(root):
    path = root / "test_32x32.mat"
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(ValueError, match=r"test_32x32.mat.*cannot be read"):
        svhn("test", root=root)


def test_missing_root_and_file(tmp_path):
    with pytest.raises(ValueError, match=r"needs root.*train_32x32.mat.*ufldl.stanford.edu"):
        svhn("train")
    with pytest.raises(FileNotFoundError, match=r"'test_32x32.mat' not found in .*housenumbers"):
        svhn("test", root=tmp_path)
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        svhn("test", root=tmp_path / "nope")
