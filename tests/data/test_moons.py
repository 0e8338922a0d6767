"""Moons (section 3.1): paper sizes, determinism by seed, disjoint splits."""

import pytest
import torch

from ima.data import ArrayDataset, build_dataset
from ima.data.moons import moons


@pytest.fixture(scope="module")
def splits():
    return {s: moons(s) for s in ("train", "val", "test")}


def test_paper_sizes_shapes_and_types(splits):
    sizes = {s: len(d) for s, d in splits.items()}
    assert sizes == {"train": 20000, "val": 2000, "test": 2000}
    for split, d in splits.items():
        assert isinstance(d, ArrayDataset)
        assert d.x.shape == (len(d), 2) and d.x.dtype == torch.float32
        assert d.y.shape == (len(d),) and d.y.dtype == torch.int64
        assert d.input_shape == (2,)
        assert d.bounds is None and d.num_classes == 2
        assert d.name == "moons" and d.split == split
        assert set(d.y.tolist()) == {0, 1}
        assert torch.isfinite(d.x).all()


def test_splits_are_disjoint(splits):
    points = [tuple(p) for d in splits.values() for p in d.x.tolist()]
    assert len(set(points)) == len(points)


def test_deterministic_by_seed_and_seeds_differ(splits):
    again = moons("test")
    assert torch.equal(again.x, splits["test"].x) and torch.equal(again.y, splits["test"].y)
    other = moons("test", seed=1)
    assert not torch.equal(other.x, splits["test"].x)


def test_split_does_not_depend_on_other_split_sizes(splits):
    small = moons("test", n_train=10, n_val=10)
    assert torch.equal(small.x, splits["test"].x)


def test_getitem_returns_global_index(splits):
    d = splits["val"]
    x, y, i = d[1234]
    assert i == 1234 and isinstance(i, int)
    assert torch.equal(x, d.x[1234]) and int(y) == int(d.y[1234])
    assert d[-1][2] == len(d) - 1
    batch = next(iter(torch.utils.data.DataLoader(d, batch_size=5, shuffle=False)))
    assert batch[2].tolist() == [0, 1, 2, 3, 4]


def test_build_dataset_and_bad_inputs():
    d = build_dataset("moons", "val", n_val=50, seed=3)
    assert len(d) == 50 and d.split == "val"
    with pytest.raises(ValueError, match="split must be one of"):
        build_dataset("moons", "training")
    with pytest.raises(ValueError, match="split must be one of"):
        moons("dev")
    with pytest.raises(ValueError, match="noise"):
        moons("train", noise=-0.1)
    with pytest.raises(ValueError, match="n_test"):
        moons("test", n_test=1)
    with pytest.raises(TypeError, match="seed"):
        moons("test", seed=1.5)
