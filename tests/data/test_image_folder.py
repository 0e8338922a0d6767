"""image_folder: a user's PNG/JPEG files in class folders, one tree or already split."""

import numpy as np
import pytest
import torch
from PIL import Image

from ima.data import build_dataset
from ima.data.folders import image_folder


def write_class(folder, n, base, *, size=(12, 10), ext="png"):
    folder.mkdir(parents=True)
    for k in range(n):
        v = base + k
        Image.new("RGB", size, (v, 255 - v, 7)).save(folder / f"img{k}.{ext}")


def _ids(d):
    return [round(v) for v in (d.x[:, 0, 0, 0] * 255).tolist()]


def test_one_tree_split_per_class(tmp_path):
    write_class(tmp_path / "cat", 10, 0)
    write_class(tmp_path / "dog", 20, 100)
    splits = {s: image_folder(s, root=tmp_path) for s in ("train", "val", "test")}
    # Per class round(0.2 n) test and round(0.1 n) val images.
    assert {s: len(d) for s, d in splits.items()} == {"train": 21, "val": 3, "test": 6}
    assert torch.bincount(splits["test"].y).tolist() == [2, 4]
    for d in splits.values():
        assert d.x.shape[1:] == (3, 10, 12) and d.num_classes == 2
        assert d.y.tolist() == [int(i >= 100) for i in _ids(d)]  # cat 0, dog 1 (sorted)
        # RGB order kept: the green channel holds 255 - red.
        assert torch.allclose(d.x[:, 1, 0, 0], 1 - d.x[:, 0, 0, 0])
    ids = sorted(i for d in splits.values() for i in _ids(d))
    assert ids == [*range(10), *range(100, 120)]
    assert _ids(image_folder("val", root=tmp_path)) == _ids(splits["val"])
    assert _ids(image_folder("val", root=tmp_path, seed=3)) != _ids(splits["val"])


def test_grey_size_classes_and_n_train(tmp_path):
    write_class(tmp_path / "a", 6, 0, ext="jpg")
    write_class(tmp_path / "b" / "deeper", 6, 100, size=(5, 9))
    d = image_folder("train", root=tmp_path, grey=True, size=[8, 6], classes=["b", "a"],
                     val_fraction=0.0, test_fraction=0.0, n_train=4)
    assert d.x.shape == (4, 1, 8, 6) and torch.bincount(d.y).tolist() == [2, 2]
    with pytest.raises(ValueError, match=r"image .* is 9x5 but .* is 10x12; set size"):
        image_folder("train", root=tmp_path)
    with pytest.raises(ValueError, match=r"class folder\(s\) \['b'\] .* are not in classes"):
        image_folder("train", root=tmp_path, classes=["a", "c"], size=4)


def test_presplit_layout(tmp_path):
    for split, n in (("train", 10), ("test", 4)):
        write_class(tmp_path / split / "no", n, 0)
        write_class(tmp_path / split / "yes", n, 100)
    train = image_folder("train", root=tmp_path, val_fraction=0.2)
    val = image_folder("val", root=tmp_path, val_fraction=0.2)
    test = build_dataset("image_folder", "test", root=str(tmp_path))
    assert (len(train), len(val), len(test)) == (16, 4, 8)
    assert torch.bincount(val.y).tolist() == [2, 2]
    assert not set(_ids(train)) & set(_ids(val))
    write_class(tmp_path / "val" / "yes", 3, 50)
    assert len(image_folder("train", root=tmp_path)) == 20
    val = image_folder("val", root=tmp_path)
    assert val.y.tolist() == [1, 1, 1] and val.num_classes == 2  # labels agree with train


def test_sixteen_bit_images_scaled_by_65535(tmp_path):
    for name, value in (("a", 0), ("b", 65535), ("c", 32768)):
        (tmp_path / name).mkdir()
        for k in range(5):
            Image.fromarray(np.full((4, 4), value, np.uint16)).save(tmp_path / name / f"{k}.png")
    d = image_folder("train", root=tmp_path, grey=True, val_fraction=0.0, test_fraction=0.0)
    assert sorted({round(float(v), 4) for v in d.x[:, 0, 0, 0]}) == [0.0, 0.5, 1.0]


def test_bad_folders(tmp_path):
    with pytest.raises(ValueError, match="needs root"):
        image_folder("train")
    write_class(tmp_path / "only", 3, 0)
    with pytest.raises(ValueError, match="at least 2 class folders"):
        image_folder("train", root=tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"\['empty'\] .* hold no image"):
        image_folder("train", root=tmp_path)
