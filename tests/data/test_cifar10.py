"""CIFAR-10 from tiny batches pickled exactly as the real files are (Python 2 cPickle,
protocol 2), and refusal of pickles that would run code."""

import pickle
import struct

import numpy as np
import pytest
import torch

from helpers import Payload
from ima.data import build_dataset
from ima.data.cifar import cifar10, read_cifar_batch

PER_BATCH, N_TEST = 12, 10


def _str(b: bytes) -> bytes:
    """SHORT_BINSTRING / BINSTRING: a Python 2 str, read back as bytes."""
    if len(b) < 256:
        return b"U" + bytes([len(b)]) + b
    return b"T" + struct.pack("<I", len(b)) + b


def _int(v: int) -> bytes:
    return b"K" + bytes([v]) if 0 <= v < 256 else b"M" + struct.pack("<H", v)


def py2_batch_pickle(batch: dict) -> bytes:
    """The byte stream Python 2's cPickle (protocol 2) writes for a CIFAR-10 batch dict:
    bytes keys, an uint8 array rebuilt by numpy.core.multiarray._reconstruct, int lists."""
    out = [b"\x80\x02}("]
    for key, value in batch.items():
        out.append(_str(key))
        if isinstance(value, np.ndarray):
            rows, cols = value.shape
            out += [
                b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n",
                _int(0), b"\x85", _str(b"b"), b"\x87R(",
                _int(1), _int(rows), _int(cols), b"\x86",
                b"cnumpy\ndtype\n", _str(b"u1"), _int(0), _int(1), b"\x87R(",
                _int(3), _str(b"|"), b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xff", _int(0), b"tb",
                b"\x89", _str(value.tobytes()), b"tb",
            ]  # fmt: skip
        elif isinstance(value, list):
            out.append(b"](")
            out += [_int(v) if isinstance(v, int) else _str(v) for v in value]
            out.append(b"e")
        else:
            out.append(_str(value))
    out.append(b"u.")
    return b"".join(out)


def make_batch(n: int, first: int, *, labels=None) -> dict:
    rng = np.random.default_rng(first)
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    data[:, 0] = np.arange(first, first + n)  # sample number: red channel, pixel (0, 0)
    return {
        b"batch_label": b"training batch",
        b"labels": [int(v) for v in np.arange(first, first + n) % 10] if labels is None else labels,
        b"data": data,
        b"filenames": [b"img_%d.png" % i for i in range(n)],
    }


def write_batches(folder) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    batches = {}
    for i in range(1, 6):
        batches[f"data_batch_{i}"] = make_batch(PER_BATCH, (i - 1) * PER_BATCH)
    batches["test_batch"] = make_batch(N_TEST, 200)
    for name, batch in batches.items():
        (folder / name).write_bytes(py2_batch_pickle(batch))
    return batches


def _ids(d):
    return (d.x[:, 0, 0, 0] * 255).round().long().tolist()


def test_writer_matches_the_real_format(tmp_path):
    raw = py2_batch_pickle(make_batch(2, 0))
    assert raw.startswith(b"\x80\x02}(U\x0bbatch_label")
    assert b"cnumpy.core.multiarray\n_reconstruct\n" in raw
    loaded = pickle.loads(raw, encoding="bytes")
    assert set(loaded) == {b"batch_label", b"labels", b"data", b"filenames"}


def test_layout_range_labels(tmp_path):
    batches = write_batches(tmp_path)
    d = cifar10("test", root=tmp_path)
    assert d.x.shape == (N_TEST, 3, 32, 32) and d.x.dtype == torch.float32
    assert d.bounds == (0.0, 1.0) and d.num_classes == 10 and d.name == "cifar10"
    data = batches["test_batch"][b"data"]
    # Each row: 1024 red, then 1024 green, then 1024 blue values, row-major.
    assert round(float(d.x[3, 1, 2, 5]) * 255) == data[3, 1024 + 2 * 32 + 5]
    assert round(float(d.x[4, 2, 31, 31]) * 255) == data[4, 3071]
    assert torch.equal(d.x, torch.from_numpy(data).float().div(255).reshape(-1, 3, 32, 32))
    assert d.y.tolist() == batches["test_batch"][b"labels"]


def test_splits_from_the_nested_folder(tmp_path):
    write_batches(tmp_path / "cifar-10-batches-py")
    train = cifar10("train", root=tmp_path, val_size=10)
    val = cifar10("val", root=tmp_path, val_size=10)
    assert (len(train), len(val)) == (50, 10)
    assert sorted(_ids(train) + _ids(val)) == list(range(5 * PER_BATCH))
    assert torch.bincount(val.y, minlength=10).tolist() == [1] * 10
    assert torch.equal(cifar10("val", root=tmp_path, val_size=10).x, val.x)
    small = build_dataset("cifar10", "train", root=str(tmp_path), val_size=10, n_train=20)
    assert len(small) == 20 and set(_ids(small)) <= set(_ids(train))


def test_python3_pickles_accepted(tmp_path):
    batch = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [1, 2]}
    for protocol in (2, 4):
        (tmp_path / "b").write_bytes(pickle.dumps(batch, protocol=protocol))
        x, y = read_cifar_batch(tmp_path / "b")
        assert x.shape == (2, 3, 32, 32) and y.tolist() == [1, 2]


def test_malicious_pickle_refused(tmp_path):
    marker = tmp_path / "pwned"
    batch = {b"data": np.zeros((1, 3072), np.uint8), b"labels": [0], b"x": Payload(marker)}
    (tmp_path / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(ValueError, match=r"refused.*global helpers.touch"):
        cifar10("test", root=tmp_path)
    assert not marker.exists()
    (tmp_path / "test_batch").write_bytes(b"\x80\x02cos\nsystem\nU\x04trueR.")
    with pytest.raises(ValueError, match=r"refused.*os.system"):
        cifar10("test", root=tmp_path)


def test_bad_batches_rejected(tmp_path):
    write_batches(tmp_path)
    path = tmp_path / "test_batch"
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="test_batch.*damaged or truncated"):
        cifar10("test", root=tmp_path)
    path.write_bytes(py2_batch_pickle(make_batch(N_TEST, 0, labels=[3] * (N_TEST - 1))))
    with pytest.raises(ValueError, match="10 images but 9 labels"):
        cifar10("test", root=tmp_path)
    path.write_bytes(py2_batch_pickle(make_batch(N_TEST, 0, labels=[10] + [0] * (N_TEST - 1))))
    with pytest.raises(ValueError, match=r"labels must be in 0..9, got 1 label"):
        cifar10("test", root=tmp_path)
    path.write_bytes(pickle.dumps({b"labels": [1]}, protocol=2))
    with pytest.raises(ValueError, match="no key.*'data'"):
        cifar10("test", root=tmp_path)
    path.write_bytes(pickle.dumps([1, 2], protocol=2))
    with pytest.raises(ValueError, match="must hold a dict"):
        cifar10("test", root=tmp_path)
    path.write_bytes(pickle.dumps({b"data": np.zeros((1, 3072)), b"labels": [1]}, protocol=2))
    with pytest.raises(ValueError, match=r"uint8 array of shape \(N, 3072\)"):
        cifar10("test", root=tmp_path)


def test_missing_files(tmp_path):
    write_batches(tmp_path)
    (tmp_path / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match=r"'data_batch_3' not found.*cs.toronto.edu"):
        cifar10("train", root=tmp_path)
    with pytest.raises(ValueError, match="needs root"):
        cifar10("test")
