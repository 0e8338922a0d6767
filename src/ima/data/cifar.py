"""CIFAR-10 (section 3.2) from its python-pickle batches, read without running code."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from ima.data.dataset import ArrayDataset
from ima.data.files import as_path, require_root
from ima.data.sampling import check_split_settings, image_split

__all__ = ["CLASS_NAMES", "cifar10", "read_cifar_batch"]

_OBTAIN = (
    "https://www.cs.toronto.edu/~kriz/cifar.html (the python version, "
    "cifar-10-python.tar.gz, extracted)"
)
_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
_TEST_FILES = ("test_batch",)
_FOLDER = "cifar-10-batches-py"

#: CIFAR-10's class names, by label (the ``label_names`` of ``batches.meta``).
CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
               "ship", "truck")

# The only globals a CIFAR batch needs: the real files (Python 2 cPickle, protocol 2)
# rebuild their uint8 array with numpy's _reconstruct, ndarray and dtype. Files pickled
# again under Python 3 also name _codecs.encode (how protocol 2 writes bytes), and
# NumPy 2 names the array module numpy._core. The objects are taken from live values,
# so that no numpy.core import (deprecated in NumPy 2) is needed.
_RECONSTRUCT = np.ndarray.__reduce__(np.zeros(1))[0]
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): __import__("codecs").encode,
}


class _Refused(pickle.UnpicklingError):
    """A global outside ``_ALLOWED`` was named."""


class _SafeUnpickler(pickle.Unpickler):
    """An unpickler that builds numpy arrays and plain containers, and nothing else.

    Unpickling can call any importable function; this one refuses every global that is
    not in ``_ALLOWED``, so a malicious file fails to load instead of running code.
    """

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise _Refused(
                f"refused to load global {module}.{name}: a CIFAR-10 batch only holds "
                "numpy arrays, lists, strings and numbers"
            ) from None


def read_cifar_batch(path) -> tuple[np.ndarray, np.ndarray]:
    """(x uint8 (N, 3, 32, 32), y int64 (N,) in 0..9) from one CIFAR-10 python batch.

    The file is a pickled dict (loaded with ``encoding="bytes"``, so its keys are
    bytes) with ``b"data"``, uint8 (N, 3072), each row the 1024 red, then green, then
    blue values of a 32x32 image in row-major order, and ``b"labels"``, N ints in 0..9.
    Only numpy arrays and plain Python values may appear in it (a restricted
    unpickler); anything else, or a malformed batch, raises ``ValueError`` naming the file.
    """
    path = as_path("path", path)
    where = f"CIFAR-10 batch {str(path)!r}"
    try:
        with open(path, "rb") as f:
            batch = _SafeUnpickler(f, encoding="bytes").load()
    except _Refused as err:
        raise ValueError(f"{where} was refused: {err}") from err
    except (
        pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
        KeyError,
    ) as err:
        raise ValueError(f"{where} cannot be read (damaged or truncated?): {err}") from err
    if not isinstance(batch, dict):
        raise ValueError(f"{where} must hold a dict, got {type(batch).__name__}")
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    missing = [k for k in ("data", "labels") if k not in batch]
    if missing:
        raise ValueError(
            f"{where} has no key(s) {', '.join(repr(k) for k in missing)}; "
            f"found {sorted(map(str, batch))}"
        )
    data, labels = batch["data"], batch["labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or (
        data.shape[1] != 3072
    ):
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise ValueError(f"{where}: data must be a uint8 array of shape (N, 3072), got {got}")
    if not isinstance(labels, list | tuple | np.ndarray) or not all(
        isinstance(v, int | np.integer) and not isinstance(v, bool) for v in labels
    ):
        raise ValueError(f"{where}: labels must be a list of ints")
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    if len(y) != data.shape[0]:
        raise ValueError(
            f"{where}: {data.shape[0]} images but {len(y)} labels; the counts must match"
        )
    if len(y) and (y.min() < 0 or y.max() > 9):
        bad = int(((y < 0) | (y > 9)).sum())
        raise ValueError(
            f"{where}: labels must be in 0..9, got {bad} label(s) in [{y.min()}, {y.max()}]"
        )
    return data.reshape(-1, 3, 32, 32), y


def _batch_folder(root) -> Path:
    folder = require_root(
        root,
        dataset="cifar10",
        expects=f"data_batch_1..5 and test_batch (or a {_FOLDER}/ folder holding them)",
        obtain=_OBTAIN,
    )
    nested = folder / _FOLDER
    if not (folder / "test_batch").is_file() and nested.is_dir():
        return nested
    return folder


def cifar10(
    split: str,
    *,
    root=None,
    val_size: int = 5000,
    n_train: int | None = None,
    seed: int = 0,
) -> ArrayDataset:
    """CIFAR-10 (Krizhevsky 2009): 32x32 RGB images of ten object classes.

    Returns an ``ArrayDataset`` with x (N, 3, 32, 32) float32 (bytes / 255, in [0, 1]),
    y (N,) in 0..9, ``bounds=(0.0, 1.0)``, class names ``CLASS_NAMES`` (airplane,
    automobile, bird, cat, deer, dog, frog, horse, ship, truck).

    Files: the python version's pickled batches ``data_batch_1`` ... ``data_batch_5``
    and ``test_batch``, in ``root`` or in ``root/cifar-10-batches-py/`` (the folder the
    archive extracts to). They are read with a restricted unpickler that builds numpy
    arrays and plain values only (a pickle can otherwise run code). Nothing is
    downloaded.

    Splits: "test" is the 10000 images of ``test_batch``. The 50000 training images
    (batches 1 to 5, in order) are split into "val", a stratified sample of
    ``val_size`` images (500 per class by default) fixed by ``seed``, and "train", the
    other 45000 (the paper does not say how it chose its validation set). ``n_train``,
    when given, keeps a stratified subset of that many "train" images (fixed by
    ``seed``); "val" and "test" are unchanged.
    """
    val_size, n_train, seed = check_split_settings(
        split, val_size=val_size, n_train=n_train, seed=seed
    )
    folder = _batch_folder(root)
    names = _TEST_FILES if split == "test" else _TRAIN_FILES
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f"dataset 'cifar10': file(s) {', '.join(repr(n) for n in missing)} not found in "
            f"{str(folder)!r}. Obtain them from {_OBTAIN}."
        )
    parts = [read_cifar_batch(folder / n) for n in names]
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    return image_split("cifar10", split, x, y, val_size=val_size, n_train=n_train, seed=seed,
                       class_names=CLASS_NAMES)
