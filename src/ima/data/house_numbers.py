"""SVHN (section 3.2) from its MATLAB files ``train_32x32.mat`` and ``test_32x32.mat``."""

from __future__ import annotations

import numpy as np

from ima.data.dataset import ArrayDataset
from ima.data.files import as_path, find_file, require_root
from ima.data.sampling import check_split_settings, image_split

__all__ = ["read_svhn_mat", "svhn"]

_OBTAIN = "http://ufldl.stanford.edu/housenumbers/ (format 2: cropped digits)"
_FILES = {"train": "train_32x32.mat", "val": "train_32x32.mat", "test": "test_32x32.mat"}


def _integer_labels(y: np.ndarray, where: str) -> np.ndarray:
    if np.issubdtype(y.dtype, np.integer):
        return y.astype(np.int64)
    # MATLAB writes doubles by default; accept them when they are whole numbers.
    if np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
        return y.astype(np.int64)
    raise ValueError(f"{where}: labels y must be whole numbers, got dtype {y.dtype}")


def read_svhn_mat(path) -> tuple[np.ndarray, np.ndarray]:
    """(x uint8 (N, 3, 32, 32), y int64 (N,) in 0..9) from one SVHN ``*_32x32.mat`` file.

    The file (MATLAB v5) holds ``X``, uint8 (32, 32, 3, N) (height, width, RGB, sample),
    and ``y``, (N, 1) with labels 1..10 where 10 stands for the digit 0; here the label
    is the digit itself (10 becomes 0). Anything else raises ``ValueError`` naming the
    file.
    """
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    path = as_path("path", path)
    where = f"SVHN file {str(path)!r}"
    try:
        mat = loadmat(path, variable_names=["X", "y"])
    except NotImplementedError as err:  # MATLAB v7.3 (HDF5) files
        raise ValueError(
            f"{where} is not a MATLAB v5 file (the format the SVHN site ships): {err}"
        ) from err
    except (MatReadError, ValueError, OSError, EOFError, TypeError) as err:
        raise ValueError(f"{where} cannot be read (damaged or truncated?): {err}") from err
    missing = [k for k in ("X", "y") if k not in mat]
    if missing:
        raise ValueError(f"{where} has no variable(s) {', '.join(missing)}; expected X and y")
    x, y = mat["X"], mat["y"]
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        raise ValueError(
            f"{where}: X must be uint8 of shape (32, 32, 3, N), got {x.dtype} {x.shape}"
        )
    n = x.shape[3]
    if y.size != n or (y.ndim == 2 and y.shape[1] != 1) or y.ndim > 2:
        raise ValueError(f"{where}: y must have shape ({n}, 1) to match X, got {y.shape}")
    y = _integer_labels(y.reshape(n), where)
    if n and (y.min() < 1 or y.max() > 10):
        bad = int(((y < 1) | (y > 10)).sum())
        raise ValueError(
            f"{where}: labels must be 1..10 (10 for the digit 0), got {bad} label(s) in "
            f"[{int(y.min())}, {int(y.max())}]"
        )
    y = np.where(y == 10, 0, y)
    return np.ascontiguousarray(x.transpose(3, 2, 0, 1)), y


def svhn(
    split: str,
    *,
    root=None,
    val_size: int = 5000,
    n_train: int | None = None,
    seed: int = 0,
) -> ArrayDataset:
    """SVHN (Netzer et al. 2011), cropped digits: 32x32 RGB house-number digits.

    Returns an ``ArrayDataset`` with x (N, 3, 32, 32) float32 (bytes / 255, in [0, 1]),
    y (N,) the digit 0..9 (the files' label 10 is the digit 0; class names "0".."9"),
    ``bounds=(0.0, 1.0)``.

    Files: ``train_32x32.mat`` and ``test_32x32.mat`` (MATLAB v5) in ``root``; nothing
    is downloaded. The "extra" set is not used (the paper trains on the standard set).

    Splits: "test" is the 26032 test images. The 73257 training images are split into
    "val", a stratified sample of ``val_size`` images fixed by ``seed``, and "train", the
    other 68257 (the paper does not say how it chose its validation set). ``n_train``,
    when given, keeps a stratified subset of that many "train" images (fixed by
    ``seed``); "val" and "test" are unchanged. Samples keep their order in the files.
    """
    val_size, n_train, seed = check_split_settings(
        split, val_size=val_size, n_train=n_train, seed=seed
    )
    folder = require_root(
        root, dataset="svhn", expects="train_32x32.mat and test_32x32.mat", obtain=_OBTAIN
    )
    path = find_file((_FILES[split],), [folder], dataset="svhn", obtain=_OBTAIN)
    x, y = read_svhn_mat(path)
    return image_split("svhn", split, x, y, val_size=val_size, n_train=n_train, seed=seed,
                       class_names=tuple(str(d) for d in range(10)))
