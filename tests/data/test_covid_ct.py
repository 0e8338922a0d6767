"""COVID-19 CT (section 3.4) from a tiny folder of PNG scans laid out like Soares et al.'s
dataset: COVID/ (label 1) and non-COVID/ (label 0)."""

import numpy as np
import pytest
import torch
from PIL import Image

import ima
from ima.data import build_dataset
from ima.data.folders import covid_ct

N_COVID, N_NON = 9, 8


def write_scans(root, *, covid="COVID", non="non-COVID"):
    """RGB scans of varied sizes; scan k is a flat grey of value k (COVID: 100 + k)."""
    for folder, n, base in ((covid, N_COVID, 100), (non, N_NON, 10)):
        (root / folder).mkdir(parents=True)
        for k in range(n):
            value = base + k
            size = (40 + 3 * k, 30 + k)
            Image.new("RGB", size, (value, value, value)).save(root / folder / f"scan{k}.png")


def _values(d):
    return [round(v) for v in (d.x[:, 0].mean(dim=(1, 2)) * 255).tolist()]


def test_labels_shape_and_split_sizes(tmp_path):
    write_scans(tmp_path)
    splits = {s: covid_ct(s, root=tmp_path, size=16, n_test=2, n_val=1) for s in
              ("train", "val", "test")}
    assert {s: len(d) for s, d in splits.items()} == {
        "train": N_COVID + N_NON - 6, "val": 2, "test": 4,
    }
    for split, d in splits.items():
        assert d.x.shape == (len(d), 1, 16, 16) and d.x.dtype == torch.float32
        assert d.num_classes == 2 and d.bounds == (0.0, 1.0) and d.split == split
        assert float(d.x.min()) >= 0.0 and float(d.x.max()) <= 1.0
        # COVID scans are bright (>= 100) and labelled 1; non-COVID dark and labelled 0.
        for value, label in zip(_values(d), d.y.tolist(), strict=True):
            assert label == int(value >= 100)
        # A flat scan stays flat when resized.
        assert torch.allclose(d.x, d.x[:, :, :1, :1].expand_as(d.x), atol=1e-6)
    assert torch.bincount(splits["test"].y).tolist() == [2, 2]
    assert torch.bincount(splits["val"].y).tolist() == [1, 1]
    every = sorted(v for d in splits.values() for v in _values(d))
    assert every == sorted([*range(100, 100 + N_COVID), *range(10, 10 + N_NON)])


def test_split_is_seeded(tmp_path):
    write_scans(tmp_path)
    test = covid_ct("test", root=tmp_path, size=8, n_test=3, n_val=1)
    assert _values(covid_ct("test", root=tmp_path, size=8, n_test=3, n_val=1)) == _values(test)
    assert _values(covid_ct("test", root=tmp_path, size=8, n_test=3, n_val=1, seed=4)) != (
        _values(test)
    )


def test_default_size_is_the_papers_224_and_n_train(tmp_path):
    write_scans(tmp_path, covid="covid", non="non_covid")
    d = build_dataset("covid_ct", "train", root=str(tmp_path), n_test=2, n_val=1, n_train=4)
    assert d.x.shape == (4, 1, 224, 224) and torch.bincount(d.y).tolist() == [2, 2]
    config = ima.resolve_config({"data": {"name": "covid_ct", "root": str(tmp_path)},
                                 "model": {"name": "resnet18_in"}})
    assert config["data"]["size"] == 224
    assert (config["data"]["n_test"], config["data"]["n_val"]) == (200, 30)


def test_missing_folders_and_too_few_images(tmp_path):
    (tmp_path / "COVID").mkdir()
    with pytest.raises(FileNotFoundError, match=r"folder\(s\) non-COVID not found.*kaggle"):
        covid_ct("test", root=tmp_path)
    with pytest.raises(ValueError, match="needs root"):
        covid_ct("test")
    write_scans(tmp_path / "d")
    with pytest.raises(ValueError, match=r"holds 8 image\(s\); n_test=5 and n_val=3 need more"):
        covid_ct("test", root=tmp_path / "d", n_test=5, n_val=3)


def test_unreadable_scan_named(tmp_path):
    write_scans(tmp_path)
    (tmp_path / "COVID" / "scan0.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"cannot read image .*scan0.png"):
        for split in ("train", "val", "test"):
            covid_ct(split, root=tmp_path, size=8, n_test=2, n_val=1)


def test_grey_conversion_of_colour_scans(tmp_path):
    write_scans(tmp_path)
    Image.new("RGB", (20, 20), (255, 0, 0)).save(tmp_path / "COVID" / "scan0.png")
    d = covid_ct("train", root=tmp_path, size=4, n_test=1, n_val=1, seed=0)
    d_all = [covid_ct(s, root=tmp_path, size=4, n_test=1, n_val=1) for s in ("val", "test")]
    values = np.concatenate([_values(x) for x in (d, *d_all)])
    assert 76 in values  # ITU-R 601 luma of pure red: 0.299 * 255
