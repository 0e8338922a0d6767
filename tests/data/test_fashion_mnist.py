"""Fashion-MNIST: the IDX reader on tiny files in the real format, splits, bad files, and
the real files of Debian's dataset-fashion-mnist package where installed."""

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

import ima
from ima.data import build_dataset
from ima.data import fashion as fashion_module
from ima.data.fashion import fashion_mnist, read_idx

N_TRAIN, N_TEST = 60, 20


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file: magic (0, 0, 0x08 = uint8, ndim), big-endian uint32 dims, data."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write_idx(path: Path, array: np.ndarray, *, compress: bool = True) -> None:
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data) if compress else data)


def make_files(folder: Path, *, compress: bool = True, seed: int = 0) -> dict:
    """Tiny Fashion-MNIST files: every image distinct (its first byte is its number)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for part, n in (("train", N_TRAIN), ("t10k", N_TEST)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        images[:, 0, 0] = np.arange(n)
        images[0, 5, 5], images[1, 5, 5] = 0, 255
        labels = (np.arange(n) % 10).astype(np.uint8)
        suffix = ".gz" if compress else ""
        write_idx(folder / f"{part}-images-idx3-ubyte{suffix}", images, compress=compress)
        write_idx(folder / f"{part}-labels-idx1-ubyte{suffix}", labels, compress=compress)
        arrays[part] = (images, labels)
    return arrays


@pytest.fixture()
def files(tmp_path):
    return tmp_path, make_files(tmp_path)


def test_header_is_big_endian_and_magic_numbers(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    raw = idx_bytes(images)
    assert int.from_bytes(raw[:4], "big") == 2051
    assert int.from_bytes(idx_bytes(np.zeros(5, np.uint8))[:4], "big") == 2049
    write_idx(tmp_path / "a.gz", images)
    write_idx(tmp_path / "a", images, compress=False)
    for name in ("a.gz", "a"):
        got = read_idx(tmp_path / name, ndim=3)
        assert got.shape == (2, 3, 4) and got.dtype == np.uint8
        assert np.array_equal(got, images)


def test_shapes_range_labels_and_sizes(files):
    root, arrays = files
    splits = {s: fashion_mnist(s, root=root, val_size=10) for s in ("train", "val", "test")}
    assert {s: len(d) for s, d in splits.items()} == {"train": 50, "val": 10, "test": 20}
    for split, d in splits.items():
        assert d.x.shape == (len(d), 1, 28, 28) and d.x.dtype == torch.float32
        assert d.y.dtype == torch.int64 and d.num_classes == 10
        assert d.bounds == (0.0, 1.0) and d.name == "fashion_mnist" and d.split == split
        assert float(d.x.min()) >= 0.0 and float(d.x.max()) <= 1.0
    test = splits["test"]
    images, labels = arrays["t10k"]
    assert torch.equal(test.x, torch.from_numpy(images[:, None]).float() / 255)
    assert test.y.tolist() == labels.tolist()
    assert float(test.x[0, 0, 5, 5]) == 0.0 and float(test.x[1, 0, 5, 5]) == 1.0
    # Stratified: one validation image per class.
    assert torch.bincount(splits["val"].y, minlength=10).tolist() == [1] * 10


def _ids(d):
    return (d.x[:, 0, 0, 0] * 255).round().long().tolist()


def test_train_val_disjoint_deterministic_and_seeded(files):
    root, arrays = files
    train = fashion_mnist("train", root=root, val_size=10)
    val = fashion_mnist("val", root=root, val_size=10)
    assert sorted(_ids(train) + _ids(val)) == list(range(N_TRAIN))
    # Labels follow their images; file order is kept.
    _, labels = arrays["train"]
    assert train.y.tolist() == [int(labels[i]) for i in _ids(train)]
    assert _ids(train) == sorted(_ids(train))
    again = fashion_mnist("val", root=root, val_size=10)
    assert torch.equal(again.x, val.x)
    other = fashion_mnist("val", root=root, val_size=10, seed=1)
    assert _ids(other) != _ids(val)


def test_n_train_is_a_stratified_subset_of_train(files):
    root, _ = files
    train = fashion_mnist("train", root=root, val_size=10)
    small = fashion_mnist("train", root=root, val_size=10, n_train=20)
    assert len(small) == 20 and set(_ids(small)) <= set(_ids(train))
    assert torch.bincount(small.y, minlength=10).tolist() == [2] * 10
    val = fashion_mnist("val", root=root, val_size=10, n_train=20)
    assert _ids(val) == _ids(fashion_mnist("val", root=root, val_size=10))
    with pytest.raises(ValueError, match="n_train must be <= 50"):
        fashion_mnist("train", root=root, val_size=10, n_train=51)


def test_uncompressed_files_accepted(tmp_path):
    make_files(tmp_path, compress=False)
    d = fashion_mnist("test", root=tmp_path)
    assert len(d) == N_TEST


def test_default_folders_searched_when_no_root(files, monkeypatch):
    root, arrays = files
    partial = root / "partial"  # images without labels: skipped, not mixed with root's
    partial.mkdir()
    write_idx(partial / "t10k-images-idx3-ubyte.gz", arrays["t10k"][0][:5])
    monkeypatch.setattr(fashion_module, "FASHION_MNIST_DIRS", (root / "nowhere", partial, root))
    assert len(fashion_mnist("test")) == N_TEST
    (root / "t10k-labels-idx1-ubyte.gz").rename(root / "elsewhere.gz")
    with pytest.raises(FileNotFoundError, match="'t10k-labels-idx1-ubyte.gz' .*not found"):
        fashion_mnist("test")
    write_idx(root / "nowhere.gz", arrays["t10k"][1])
    (root / "nowhere").mkdir()
    (root / "nowhere.gz").rename(root / "nowhere" / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(FileNotFoundError, match="no folder among .* holds both"):
        fashion_mnist("test")


def test_missing_file_names_file_folders_and_source(tmp_path, monkeypatch):
    monkeypatch.setattr(fashion_module, "FASHION_MNIST_DIRS", (tmp_path / "a", tmp_path / "b"))
    with pytest.raises(FileNotFoundError) as info:
        fashion_mnist("test")
    message = str(info.value)
    assert "t10k-images-idx3-ubyte.gz" in message
    assert str(tmp_path / "a") in message and str(tmp_path / "b") in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "zalandoresearch/fashion-mnist" in message


def test_truncated_files_rejected(files):
    root, arrays = files
    raw = idx_bytes(arrays["t10k"][0])
    path = root / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(raw[:-100]))
    with pytest.raises(ValueError, match=r"truncated.*needs 15680 data bytes, found 15580"):
        fashion_mnist("test", root=root)
    path.write_bytes(gzip.compress(raw)[:-30])  # a cut-off download
    with pytest.raises(ValueError, match="damaged or truncated gzip"):
        fashion_mnist("test", root=root)
    path.write_bytes(gzip.compress(raw[:6]))
    with pytest.raises(ValueError, match="truncated inside its header"):
        fashion_mnist("test", root=root)
    path.write_bytes(gzip.compress(raw + b"\x00"))
    with pytest.raises(ValueError, match="longer than its header says"):
        fashion_mnist("test", root=root)


def test_bad_magic_labels_and_counts_rejected(files):
    root, arrays = files
    images, labels = arrays["t10k"]
    # Labels where images belong: wrong number of dimensions.
    write_idx(root / "t10k-images-idx3-ubyte.gz", labels)
    with pytest.raises(ValueError, match=r"1 dimension\(s\) \(magic number 2049\), expected 3"):
        fashion_mnist("test", root=root)
    (root / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\x12\x34" + b"\x00" * 50))
    with pytest.raises(ValueError, match="not an IDX file"):
        fashion_mnist("test", root=root)
    write_idx(root / "t10k-images-idx3-ubyte.gz", images)
    write_idx(root / "t10k-labels-idx1-ubyte.gz", labels[:-1])
    with pytest.raises(ValueError, match="20 images .* but 19 labels"):
        fashion_mnist("test", root=root)
    bad = labels.copy()
    bad[3] = 10
    write_idx(root / "t10k-labels-idx1-ubyte.gz", bad)
    with pytest.raises(ValueError, match=r"labels must be in 0..9, got 1 label\(s\) up to 10"):
        fashion_mnist("test", root=root)
    write_idx(root / "t10k-labels-idx1-ubyte.gz", labels)
    write_idx(root / "t10k-images-idx3-ubyte.gz", images[:, :27])
    with pytest.raises(ValueError, match="must be 28x28"):
        fashion_mnist("test", root=root)


def test_bad_arguments(files):
    root, _ = files
    with pytest.raises(ValueError, match="split must be one of"):
        fashion_mnist("dev", root=root)
    with pytest.raises(ValueError, match="val_size=0 leaves no validation"):
        fashion_mnist("val", root=root, val_size=0)
    assert len(fashion_mnist("train", root=root, val_size=0)) == N_TRAIN
    with pytest.raises(ValueError, match="val_size must be <= 60"):
        fashion_mnist("train", root=root, val_size=61)
    with pytest.raises(TypeError, match="root must be a path"):
        fashion_mnist("test", root=3)


def test_by_name_and_from_a_config(files):
    root, _ = files
    d = build_dataset("fashion_mnist", "train", root=str(root), val_size=10, n_train=10)
    assert len(d) == 10
    config = ima.resolve_config({
        "data": {"name": "fashion_mnist", "root": str(root), "n_train": 10},
        "model": {"name": "fashion_cnn"},
    })
    assert config["data"]["root"] == str(root) and config["data"]["val_size"] == 5000
    with pytest.raises(ValueError, match="unknown key"):
        ima.resolve_config({"data": {"name": "fashion_mnist", "n_trian": 5},
                            "model": {"name": "fashion_cnn"}})


DEBIAN = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="module")
def real():
    if not (DEBIAN / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(
            f"Fashion-MNIST is not installed in {DEBIAN} "
            "(apt-get install dataset-fashion-mnist)"
        )
    return {s: fashion_mnist(s) for s in ("train", "val", "test")}


def test_real_fashion_mnist(real):
    assert {s: len(d) for s, d in real.items()} == {"train": 55000, "val": 5000, "test": 10000}
    per_class = {"train": 5500, "val": 500, "test": 1000}
    for split, d in real.items():
        assert d.x.shape[1:] == (1, 28, 28)
        assert float(d.x.min()) == 0.0 and float(d.x.max()) == 1.0
        assert torch.bincount(d.y, minlength=10).tolist() == [per_class[split]] * 10
    # Fashion-MNIST images are mostly background: mean intensity about 0.29.
    assert 0.25 < float(real["test"].x.mean()) < 0.33


def test_trains_from_a_config_and_reloads(files, tmp_path):
    """data.root and n_train travel through the run folder's config.yaml."""
    root, _ = files
    config = {
        "data": {"name": "fashion_mnist", "root": str(root), "val_size": 10, "n_train": 20,
                 "batch_size": 10},
        "model": {"name": "fashion_cnn"},
        "train": {"epochs": 1, "threads": 1, "seed": 0},
    }
    run = ima.train(config, tmp_path / "run", progress=False)
    again = ima.load_run(tmp_path / "run")
    assert again.config["data"]["root"] == str(root)
    assert len(again.dataset("train")) == 20 and len(again.dataset("test")) == N_TEST
    x, _, _ = again.dataset("test")[0]
    assert again.model(x[None]).shape == (1, 10)
    assert run.config["data"] == again.config["data"]
