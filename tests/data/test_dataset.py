"""ArrayDataset validation and build_dataset's handling of names and user factories."""

import pytest
import torch
from torch.utils.data import Dataset

from ima.data import DATASETS, ArrayDataset, build_dataset


def _ds(x=None, y=None, **kwargs):
    x = torch.rand(6, 1, 2, 2) if x is None else x
    y = torch.tensor([0, 1, 2, 0, 1, 2]) if y is None else y
    kwargs = {"num_classes": 3, "name": "toy", "split": "train", **kwargs}
    return ArrayDataset(x, y, **kwargs)


def test_array_dataset_stores_float32_int64():
    d = _ds(x=torch.rand(6, 1, 2, 2, dtype=torch.float64), y=torch.tensor([0, 1, 2, 0, 1, 2]).int())
    assert d.x.dtype == torch.float32 and d.y.dtype == torch.int64
    assert len(d) == 6 and d.input_shape == (1, 2, 2) and d.bounds is None
    assert d[5][2] == 5


def test_nan_and_inf_rejected_with_name_and_count():
    x = torch.rand(6, 1, 2, 2)
    x[0, 0, 0, 0] = float("nan")
    x[3, 0, 1, 1] = float("inf")
    with pytest.raises(ValueError, match=r"'toy'.*2 NaN or infinite"):
        _ds(x=x)


def test_labels_out_of_range_rejected():
    with pytest.raises(ValueError, match=r"labels y must be in \[0, 3\).*1 label"):
        _ds(y=torch.tensor([0, 1, 2, 3, 0, 1]))
    with pytest.raises(ValueError, match=r"labels y must be in"):
        _ds(y=torch.tensor([0, -1, 2, 0, 0, 1]))
    with pytest.raises(TypeError, match="integer labels"):
        _ds(y=torch.zeros(6))


def test_x_outside_bounds_rejected():
    x = torch.rand(6, 1, 2, 2)
    assert _ds(x=x, bounds=(0.0, 1.0)).bounds == (0.0, 1.0)
    x[2, 0, 0, 0] = 1.5
    with pytest.raises(ValueError, match=r"inside bounds \[0.0, 1.0\].*1 value"):
        _ds(x=x, bounds=(0.0, 1.0))
    with pytest.raises(ValueError, match="low < high"):
        _ds(bounds=(1.0, 0.0))
    with pytest.raises(ValueError, match="bounds"):
        _ds(bounds=(0.0,))


def test_length_mismatch_and_shapes_rejected():
    with pytest.raises(ValueError, match="same length"):
        _ds(y=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="at least 2 dims"):
        _ds(x=torch.rand(6))
    with pytest.raises(ValueError, match="num_classes"):
        _ds(num_classes=1)


def test_registry_names_and_unknown_dataset():
    assert {"moons", "digits"} <= set(DATASETS.names())
    with pytest.raises(ValueError, match=r"unknown dataset 'mnist'.*'digits'.*'moons'"):
        build_dataset("mnist", "train")
    with pytest.raises(ValueError, match="split must be one of 'train', 'val', 'test'"):
        build_dataset("digits", "validation")


def test_user_factory_that_does_not_import():
    with pytest.raises(ValueError, match="no_such_module_abc"):
        build_dataset("no_such_module_abc:make", "train")


_FACTORIES = """
import torch
from torch.utils.data import Dataset
from ima.data import ArrayDataset

def good(*, split, n=4):
    return ArrayDataset(torch.zeros(n, 3), torch.zeros(n, dtype=torch.long), num_classes=2,
                        name="user", split=split)

class Triples(Dataset):
    def __len__(self):
        return 3
    def __getitem__(self, i):
        return torch.zeros(2), torch.tensor(0), i

class Pairs(Triples):
    def __getitem__(self, i):
        return torch.zeros(2), torch.tensor(0)

def triples(*, split):
    return Triples()

def pairs(*, split):
    return Pairs()

def not_a_dataset(*, split):
    return [1, 2, 3]
"""


@pytest.fixture()
def user_module(tmp_path, monkeypatch):
    (tmp_path / "ima_test_user_datasets.py").write_text(_FACTORIES)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "ima_test_user_datasets"


def test_user_factories(user_module):
    d = build_dataset(f"{user_module}:good", "val", n=7)
    assert isinstance(d, ArrayDataset) and len(d) == 7 and d.split == "val"
    t = build_dataset(f"{user_module}:triples", "test")
    assert isinstance(t, Dataset) and t[2][2] == 2
    with pytest.raises(TypeError, match=r"\(x, y, index\).*2-tuple"):
        build_dataset(f"{user_module}:pairs", "train")
    with pytest.raises(TypeError, match="must return a torch.utils.data.Dataset, got list"):
        build_dataset(f"{user_module}:not_a_dataset", "train")
