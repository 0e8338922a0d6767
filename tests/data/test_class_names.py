"""Class names travel with the data: from the folders, from a .npz's ``class_names`` array,
from the config (``data.class_names``, which must agree with what the data says), and the
built-in datasets' real names; image folders detect grey files."""

import logging
import struct

import numpy as np
import pytest
from PIL import Image

from ima.config import resolve_config
from ima.data import build_dataset
from ima.data.fashion import fashion_mnist
from ima.data.folders import image_folder
from ima.data.npz_files import npz


def write_images(folder, n, mode, value=100, size=(6, 5)):
    folder.mkdir(parents=True)
    for k in range(n):
        if mode == "RGB":
            image = Image.new("RGB", size, (value + k, 30, 200))
        elif mode == "I;16":
            image = Image.fromarray(np.full(size[::-1], 256 * (value + k), np.uint16))
        else:
            image = Image.new(mode, size, value + k)
        image.save(folder / f"{k}.png")


def test_image_folder_names_its_classes_after_its_folders(tmp_path):
    write_images(tmp_path / "normal", 5, "L", 10)
    write_images(tmp_path / "lesion", 5, "L", 150)
    found = image_folder("test", root=tmp_path)
    assert found.class_names == ("lesion", "normal")  # sorted folder names
    assert found.y.tolist() == [0, 1]
    named = image_folder("test", root=tmp_path, class_names=["normal", "lesion"])
    assert named.class_names == ("normal", "lesion") and named.y.tolist() == [0, 1]
    assert named.x[0, 0, 0, 0] < named.x[1, 0, 0, 0]  # the normal scan (dark) is label 0
    # classes, the older key, still orders the folders; both keys must agree
    assert image_folder("test", root=tmp_path, classes=["normal", "lesion"]).class_names == (
        "normal", "lesion")
    with pytest.raises(ValueError, match=r"class_names \['normal', 'lesion'\] and classes "
                       r"\['lesion', 'normal'\] differ; give class_names only"):
        image_folder("test", root=tmp_path, class_names=["normal", "lesion"],
                     classes=["lesion", "normal"])
    with pytest.raises(ValueError, match=r"class_names=\['normal', 'tumour'\] disagree with "
                       r"the class folders \['lesion', 'normal'\] under .*: class folder\(s\) "
                       r"\['lesion'\] under it are not in class_names; no folder for "
                       r"\['tumour'\]$"):
        image_folder("test", root=tmp_path, class_names=["normal", "tumour"])
    # through build_dataset (data.class_names of a config) the folder order is chosen too
    built = build_dataset("image_folder", "test", root=str(tmp_path),
                          class_names=["normal", "lesion"])
    assert built.class_names == ("normal", "lesion")


@pytest.mark.parametrize("mode", ["L", "I;16", "1"])
def test_grey_files_load_as_one_channel(tmp_path, mode):
    write_images(tmp_path / "a", 4, mode, 1 if mode == "1" else 10)
    write_images(tmp_path / "b", 4, mode, 0 if mode == "1" else 100)
    data = image_folder("train", root=tmp_path, val_fraction=0.0, test_fraction=0.0)
    assert data.x.shape[1:] == (1, 5, 6)


def test_mixed_and_contradicted_channels_are_logged(tmp_path, caplog):
    write_images(tmp_path / "a", 4, "L", 10)
    write_images(tmp_path / "b", 4, "L", 100)
    flat = {"val_fraction": 0.0, "test_fraction": 0.0}
    with caplog.at_level(logging.INFO, logger="ima.data.folders"):
        rgb = image_folder("train", root=tmp_path, grey=False, **flat)
    assert rgb.x.shape[1] == 3 and "data.grey is false: the 8 images are all grey" in caplog.text
    Image.new("RGB", (6, 5), (200, 10, 10)).save(tmp_path / "b" / "colour.png")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ima.data.folders"):
        mixed = image_folder("train", root=tmp_path, **flat)
    assert mixed.x.shape[1] == 3
    assert "8 grey and 1 colour image(s)" in caplog.text and "loaded as RGB" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ima.data.folders"):
        grey = image_folder("train", root=tmp_path, grey=True, **flat)
    assert grey.x.shape[1] == 1
    assert "data.grey is true: 1 colour image(s)" in caplog.text


def test_every_split_gets_the_channels_of_all_files(tmp_path):
    write_images(tmp_path / "train" / "a", 3, "L", 10)
    write_images(tmp_path / "train" / "b", 3, "L", 100)
    write_images(tmp_path / "test" / "a", 1, "L", 10)
    write_images(tmp_path / "test" / "b", 1, "L", 100)
    assert image_folder("train", root=tmp_path, val_fraction=0.0).x.shape[1] == 1
    assert image_folder("test", root=tmp_path).x.shape[1] == 1
    # one colour file in test/ makes every split RGB: a model fits all splits or none
    Image.new("RGB", (6, 5), (200, 10, 10)).save(tmp_path / "test" / "a" / "colour.png")
    assert image_folder("train", root=tmp_path, val_fraction=0.0).x.shape[1] == 3
    assert image_folder("test", root=tmp_path).x.shape[1] == 3


def _arrays(n, classes=2):
    return np.zeros((n, 1, 4, 4), np.uint8), np.arange(n) % classes


def test_npz_names_from_the_file_and_the_config(tmp_path):
    x, y = _arrays(10)
    x_test, y_test = _arrays(4)
    path = tmp_path / "one.npz"
    np.savez(path, x_train=x, y_train=y, x_test=x_test, y_test=y_test,
             class_names=np.array(["benign", "malignant"]))
    assert npz("test", path=path).class_names == ("benign", "malignant")
    assert npz("test", path=path, class_names=["benign", "malignant"]).num_classes == 2
    with pytest.raises(ValueError, match=r"data.class_names \['malignant', 'benign'\] "
                       r"disagree with the class_names of npz file .* \['benign', 'malignant'\]"):
        npz("test", path=path, class_names=["malignant", "benign"])
    with pytest.raises(ValueError, match=r"num_classes=3 but the class names are 2"):
        npz("test", path=path, num_classes=3)
    # a file without names takes the config's (bytes names are decoded)
    plain = tmp_path / "plain.npz"
    np.savez(plain, x_train=x, y_train=y, x_test=x_test, y_test=y_test)
    assert npz("test", path=plain).class_names is None
    assert build_dataset("npz", "test", path=str(plain), class_names=["no", "yes"]).class_names \
        == ("no", "yes")
    np.savez(plain, x_train=x, y_train=y, x_test=x_test, y_test=y_test,
             class_names=np.array([b"no", b"yes"]))
    assert npz("test", path=plain).class_names == ("no", "yes")
    np.savez(plain, x_train=x, y_train=y, x_test=x_test, y_test=y_test,
             class_names=np.array([["no", "yes"]]))
    with pytest.raises(ValueError, match="class_names must be a 1-D array of strings"):
        npz("test", path=plain)


def test_npz_files_of_one_folder_must_agree_on_names(tmp_path):
    for split, names in (("train", ["a", "b"]), ("test", ["a", "c"])):
        x, y = _arrays(6)
        np.savez(tmp_path / f"{split}.npz", x=x, y=y, class_names=np.array(names))
    with pytest.raises(ValueError, match=r"the class_names of npz file .*train.npz' "
                       r"\['a', 'b'\] disagree with the class_names of npz file .*test.npz' "
                       r"\['a', 'c'\]"):
        npz("train", root=tmp_path)


def _write_idx(folder, prefix, n):
    images = np.arange(n * 28 * 28, dtype=np.uint32).astype(np.uint8)
    (folder / f"{prefix}-images-idx3-ubyte").write_bytes(
        struct.pack(">iiii", 2051, n, 28, 28) + images.tobytes())
    (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(
        struct.pack(">ii", 2049, n) + (np.arange(n) % 10).astype(np.uint8).tobytes())


def test_built_in_datasets_name_their_classes(tmp_path):
    assert build_dataset("moons", "test", n_test=4).class_names == ("0", "1")
    assert build_dataset("digits", "test").class_names == tuple("0123456789")
    assert build_dataset("shapes", "test", n_test=2).class_names == ("background", "shape")
    _write_idx(tmp_path, "train", 20)
    _write_idx(tmp_path, "t10k", 10)
    fashion = fashion_mnist("test", root=tmp_path, val_size=10)
    assert fashion.class_names[0] == "T-shirt/top" and fashion.class_names[9] == "Ankle boot"
    # data.class_names must agree with a dataset's own names
    assert build_dataset("moons", "test", n_test=4, class_names=["0", "1"]).num_classes == 2
    with pytest.raises(ValueError, match=r"data.class_names \['left', 'right'\] disagree with "
                       r"the names dataset 'moons' gives its classes, \['0', '1'\]"):
        build_dataset("moons", "test", n_test=4, class_names=["left", "right"])


def test_nameless_datasets_take_the_config_names(tmp_path):
    images = np.zeros((4, 28, 28), np.uint8)
    labels = np.array([[0], [1], [0], [1]])
    np.savez(tmp_path / "breastmnist.npz", **{f"{s}_images": images for s in
                                              ("train", "val", "test")},
             **{f"{s}_labels": labels for s in ("train", "val", "test")})
    data = build_dataset("medmnist", "test", root=str(tmp_path), flag="breastmnist",
                         class_names=["malignant", "normal or benign"])
    assert data.class_names == ("malignant", "normal or benign")
    with pytest.raises(ValueError, match=r"data.class_names names 3 class\(es\) .* but the "
                       r"data has 2"):
        build_dataset("medmnist", "test", root=str(tmp_path), flag="breastmnist",
                      class_names=["a", "b", "c"])


def test_config_checks_class_names_and_positive_class():
    base = {"data": {"name": "moons"}, "model": {"name": "moons_mlp"}}
    resolved = resolve_config(base)
    assert resolved["data"]["class_names"] is None and resolved["eval"]["positive_class"] is None
    named = resolve_config({**base, "data": {"name": "moons", "class_names": ["0", "1"]},
                            "eval": {"positive_class": "1"}})
    assert named["data"]["class_names"] == ["0", "1"] and named["eval"]["positive_class"] == "1"
    with pytest.raises(TypeError, match=r"data.class_names must hold non-empty strings "
                       r"\(quote numbers"):
        resolve_config({**base, "data": {"name": "moons", "class_names": [0, 1]}})
    with pytest.raises(ValueError, match=r"data.class_names must not repeat a name, got \['a'\]"):
        resolve_config({**base, "data": {"name": "moons", "class_names": ["a", "a"]}})
    with pytest.raises(ValueError, match="eval.positive_class must be a class name"):
        resolve_config({**base, "eval": {"positive_class": True}})
