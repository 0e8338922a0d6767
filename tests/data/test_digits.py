"""Digits: real 8x8 images in [0, 1], stratified, deterministic, disjoint splits."""

import pytest
import torch

from ima.data import build_dataset
from ima.data.digits import digits


@pytest.fixture(scope="module")
def splits():
    return {s: digits(s) for s in ("train", "val", "test")}


def test_shapes_range_and_sizes(splits):
    assert {s: len(d) for s, d in splits.items()} == {"train": 1168, "val": 270, "test": 359}
    assert sum(len(d) for d in splits.values()) == 1797
    for split, d in splits.items():
        assert d.x.shape == (len(d), 1, 8, 8) and d.x.dtype == torch.float32
        assert d.input_shape == (1, 8, 8)
        assert d.y.dtype == torch.int64
        assert float(d.x.min()) >= 0.0 and float(d.x.max()) <= 1.0
        assert float(d.x.max()) == 1.0
        assert d.bounds == (0.0, 1.0) and d.num_classes == 10
        assert d.name == "digits" and d.split == split


def test_stratified_every_class_in_every_split(splits):
    for d in splits.values():
        counts = torch.bincount(d.y, minlength=10)
        assert (counts > 0).all()
        # Stratified: class proportions within one sample of the whole set's.
        assert (counts.float() / len(d)).max() < 0.12


def test_splits_disjoint_and_deterministic(splits):
    rows = [tuple(r) for d in splits.values() for r in d.x.flatten(1).tolist()]
    assert len(set(rows)) == len(rows) == 1797
    again = digits("val")
    assert torch.equal(again.x, splits["val"].x) and torch.equal(again.y, splits["val"].y)
    other = digits("val", seed=1)
    assert not torch.equal(other.x, splits["val"].x)


def test_getitem_returns_global_index(splits):
    d = splits["test"]
    x, y, i = d[300]
    assert i == 300 and isinstance(i, int)
    assert x.shape == (1, 8, 8) and torch.equal(x, d.x[300]) and int(y) == int(d.y[300])
    with pytest.raises(IndexError):
        d[len(d)]


def test_build_dataset_and_bad_fractions():
    d = build_dataset("digits", "train", seed=2, val_fraction=0.1, test_fraction=0.1)
    assert len(d) == 1797 - 180 - 180
    with pytest.raises(ValueError, match="val_fraction"):
        digits("train", val_fraction=0.0)
    with pytest.raises(ValueError, match="test_fraction"):
        digits("train", test_fraction=1.0)
    with pytest.raises(ValueError, match="train sample"):
        digits("train", val_fraction=0.5, test_fraction=0.5)
    with pytest.raises(ValueError, match="at least 10"):
        digits("train", test_fraction=0.003)
