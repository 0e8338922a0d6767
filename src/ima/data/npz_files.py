"""Datasets stored as NumPy ``.npz`` arrays: MedMNIST's files and a generic layout."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import numpy as np

from ima.data.dataset import SPLITS, ArrayDataset, check_class_names
from ima.data.files import as_path, find_file, require_root, to_unit
from ima.data.sampling import split_off, take_train_subset
from ima.validation import check_choice, check_int, check_real

__all__ = ["MEDMNIST_CLASSES", "MEDMNIST_DIRS", "medmnist", "npz", "pathmnist"]


#: Classes of the MedMNIST 2-D multi-class datasets (Yang et al. 2023, MedMNIST v2).
#: ChestMNIST is multi-label and so not a classification dataset here.
MEDMNIST_CLASSES = {
    "pathmnist": 9,
    "dermamnist": 7,
    "octmnist": 4,
    "pneumoniamnist": 2,
    "retinamnist": 5,
    "breastmnist": 2,
    "bloodmnist": 8,
    "tissuemnist": 8,
    "organamnist": 11,
    "organcmnist": 11,
    "organsmnist": 11,
}

#: Folders searched when ``root`` is not given: where the ``medmnist`` package stores
#: the files it downloads.
MEDMNIST_DIRS = (Path("~/.medmnist").expanduser(),)

_MEDMNIST_OBTAIN = "https://medmnist.com (the .npz files of MedMNIST v2, on Zenodo)"
_MEDMNIST_SIZES = (28, 64, 128, 224)


def _open_npz(path: Path, where: str):
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"{where} cannot be read as .npz (damaged or truncated?): {err}") from err


def _array(archive, key: str, where: str) -> np.ndarray:
    if key not in archive.files:
        raise ValueError(f"{where} has no array {key!r}; it holds {sorted(archive.files)}")
    try:
        return archive[key]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(
            f"{where}: array {key!r} cannot be read (damaged, truncated, or an object "
            f"array, which is never loaded): {err}"
        ) from err


def _labels(y: np.ndarray, where: str) -> np.ndarray:
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(
            f"{where}: labels must have shape (N,) or (N, 1), got {y.shape}"
            + ("; multi-label data is not a classification dataset" if y.ndim == 2 else "")
        )
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{where}: labels must be integers, got dtype {y.dtype}")
    y = y.astype(np.int64)
    if y.size and y.min() < 0:
        raise ValueError(f"{where}: labels must be >= 0, got {int(y.min())}")
    return y


def _stored_names(archive, where: str) -> tuple[str, ...] | None:
    """The file's optional ``class_names`` array (1-D strings, label order), or None."""
    if "class_names" not in archive.files:
        return None
    names = _array(archive, "class_names", where)
    if names.ndim != 1 or names.dtype.kind not in "US":
        raise ValueError(
            f"{where}: class_names must be a 1-D array of strings (label order), got "
            f"shape {names.shape} dtype {names.dtype}"
        )
    values = [n.decode() if isinstance(n, bytes) else str(n) for n in names.tolist()]
    return check_class_names(values, key=f"{where}: class_names")


def _agreed_names(given, stored: list[tuple[tuple[str, ...], str]]):
    """The class names: the config's (``given``) and the files' (``stored``: names and
    where) must agree; None when nobody names the classes."""
    names, source = given, "data.class_names"
    for found, where in stored:
        if names is None:
            names, source = found, f"the class_names of {where}"
        elif found != names:
            raise ValueError(
                f"dataset 'npz': {source} {list(names)} disagree with the class_names of "
                f"{where} {list(found)}"
            )
    return names


def _check_labels(y: np.ndarray, num_classes: int, where: str) -> None:
    if y.size and y.max() >= num_classes:
        bad = int((y >= num_classes).sum())
        raise ValueError(
            f"{where}: labels must be in [0, {num_classes}), got {bad} label(s) up to "
            f"{int(y.max())}"
        )


def medmnist(
    split: str,
    *,
    root=None,
    flag: str = "pathmnist",
    size: int = 28,
    n_train: int | None = None,
    seed: int = 0,
) -> ArrayDataset:
    """A MedMNIST 2-D dataset (Yang et al. 2023) from its ``.npz`` file.

    Returns an ``ArrayDataset`` with x (N, C, size, size) float32 (bytes / 255, in
    [0, 1]; C = 3 for RGB sets such as PathMNIST, 1 for grey ones), y (N,) the class,
    ``bounds=(0.0, 1.0)``.

    Files: ``<flag>.npz`` (28x28) or ``<flag>_<size>.npz`` (MedMNIST+ 64, 128, 224) in
    ``root`` (``root`` may also be the file itself); without ``root``, in
    ``~/.medmnist`` (where the ``medmnist`` package saves them). The file holds
    ``train_images``, ``val_images``, ``test_images`` (uint8 (N, H, W) or (N, H, W, 3))
    and ``train_labels``, ... ((N, 1) ints). Nothing is downloaded.

    Splits: MedMNIST's own train/val/test. ``n_train``, when given, keeps a stratified
    subset of that many "train" images, fixed by ``seed``. The number of classes comes
    from ``MEDMNIST_CLASSES``, or for a flag not listed there from the largest label in
    the file. Multi-label sets (ChestMNIST) and 3-D sets are refused.
    """
    check_choice("split", split, SPLITS)
    if not isinstance(flag, str) or not re.fullmatch(r"[a-z0-9_]+", flag):
        raise ValueError(f"flag must be a MedMNIST name such as 'pathmnist', got {flag!r}")
    if flag == "chestmnist":
        raise ValueError("flag 'chestmnist' is multi-label; only multi-class sets are supported")
    size = check_int("size", size)
    check_choice("size", size, _MEDMNIST_SIZES)
    seed = check_int("seed", seed, low=0)
    if n_train is not None:
        n_train = check_int("n_train", n_train, low=1)
    file_name = f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz"
    if root is not None and as_path("root", root).is_file():
        path = as_path("root", root)
    else:
        dirs = [as_path("root", root)] if root is not None else list(MEDMNIST_DIRS)
        path = find_file((file_name,), dirs, dataset=flag, obtain=_MEDMNIST_OBTAIN)
    where = f"MedMNIST file {str(path)!r}"

    with _open_npz(path, where) as archive:
        images = _array(archive, f"{split}_images", where)
        y = _labels(_array(archive, f"{split}_labels", where), f"{where} ({split}_labels)")
        if flag in MEDMNIST_CLASSES:
            num_classes = MEDMNIST_CLASSES[flag]
        else:
            every = [
                _labels(_array(archive, f"{s}_labels", where), f"{where} ({s}_labels)")
                for s in SPLITS
            ]
            num_classes = max(2, 1 + max((int(v.max()) for v in every if v.size), default=0))
    _check_labels(y, num_classes, f"{where} ({split}_labels)")
    if images.ndim == 3:
        images = images[:, None]
    elif images.ndim == 4 and images.shape[3] in (1, 3):
        images = images.transpose(0, 3, 1, 2)
    else:
        raise ValueError(
            f"{where}: {split}_images must be (N, H, W) or (N, H, W, 3), got {images.shape} "
            "(3-D MedMNIST volumes are not supported)"
        )
    if images.shape[2:] != (size, size):
        raise ValueError(
            f"{where}: {split}_images are {images.shape[2]}x{images.shape[3]}, expected "
            f"{size}x{size} (size={size})"
        )
    if images.shape[0] != y.shape[0]:
        raise ValueError(
            f"{where}: {images.shape[0]} {split} images but {y.shape[0]} labels; the counts "
            "must match"
        )
    if split == "train":
        keep = take_train_subset(y, n_train, seed=seed)
        images, y = images[keep], y[keep]
    return ArrayDataset(
        to_unit(np.ascontiguousarray(images), where=where),
        y,
        num_classes=num_classes,
        name=flag,
        split=split,
        bounds=(0.0, 1.0),
    )


def pathmnist(
    split: str,
    *,
    root=None,
    size: int = 28,
    n_train: int | None = None,
    seed: int = 0,
) -> ArrayDataset:
    """PathMNIST: colon-pathology tissue patches, 3x28x28 RGB, nine classes.

    ``medmnist(split, flag="pathmnist", ...)``: reads ``pathmnist.npz`` (89996 train,
    10004 val, 7180 test images); see ``medmnist`` for files and splits.
    """
    return medmnist(split, root=root, flag="pathmnist", size=size, n_train=n_train, seed=seed)


def npz(
    split: str,
    *,
    root=None,
    path=None,
    channels_last: bool = False,
    num_classes: int | None = None,
    class_names: list[str] | None = None,
    val_fraction: float = 0.1,
    n_train: int | None = None,
    seed: int = 0,
) -> ArrayDataset:
    """Your own arrays in ``.npz`` files: images and integer labels.

    Returns an ``ArrayDataset`` with x float32 in [0, 1] and y (N,) int64,
    ``bounds=(0.0, 1.0)``.

    Give exactly one of:

    - ``root``: a folder holding ``train.npz``, ``test.npz`` and optionally ``val.npz``,
      each with arrays ``x`` and ``y``;
    - ``path``: one ``.npz`` file with arrays ``x_train``, ``y_train``, ``x_test``,
      ``y_test`` and optionally ``x_val``, ``y_val``.

    ``x``: uint8 (divided by 255) or floating point already in [0, 1] (anything else is
    an error), shaped (N, C, H, W), or (N, H, W) for grey images (a channel axis is
    added), or (N, H, W, C) with ``channels_last=True``; (N, D) feature vectors are
    kept as they are. ``y``: integers, (N,) or (N, 1). Files are loaded with
    ``allow_pickle=False``.

    Splits: without validation arrays, "val" is a stratified sample of
    ``round(val_fraction * n)`` of the ``n`` training samples, fixed by ``seed``, and
    "train" is the rest. ``n_train``, when given, keeps a stratified subset of that many
    "train" samples.

    Class names: a file may hold an array ``class_names`` (1-D strings, one per class in
    label order; with ``root``, every file that holds one must hold the same), or the
    config gives them (``class_names``); when both do, they must agree. ``num_classes``
    defaults to the number of names, else to one more than the largest label in any
    split (at least 2).
    """
    check_choice("split", split, SPLITS)
    if (root is None) == (path is None):
        raise ValueError(
            "npz needs exactly one of root (a folder of train.npz, val.npz, test.npz with "
            "arrays x, y) or path (one .npz with x_train, y_train, x_test, y_test, ...)"
        )
    if not isinstance(channels_last, bool):
        raise TypeError(f"channels_last must be a bool, got {channels_last!r}")
    val_fraction = check_real("val_fraction", val_fraction, low=0.0, high=1.0, high_open=True)
    seed = check_int("seed", seed, low=0)
    if n_train is not None:
        n_train = check_int("n_train", n_train, low=1)
    if num_classes is not None:
        num_classes = check_int("num_classes", num_classes, low=2)
    class_names = check_class_names(class_names, key="data.class_names")

    stored = []
    if path is not None:
        file = as_path("path", path)
        if not file.is_file():
            raise FileNotFoundError(f"dataset 'npz': file {str(file)!r} not found")
        where = f"npz file {str(file)!r}"
        with _open_npz(file, where) as archive:
            have_val = "x_val" in archive.files

            def read_y(s: str) -> np.ndarray:
                return _labels(_array(archive, f"y_{s}", where), f"{where} (y_{s})")

            source = "train" if split == "val" and not have_val else split
            x = _array(archive, f"x_{source}", where)
            y = read_y(source)
            label_sets = [read_y(s) for s in SPLITS if s != "val" or have_val]
            found = _stored_names(archive, where)
            if found is not None:
                stored.append((found, where))
    else:
        folder = require_root(root, dataset="npz", expects="train.npz and test.npz (val.npz)")
        have_val = (folder / "val.npz").is_file()
        source = "train" if split == "val" and not have_val else split

        def open_split(s: str):
            file = find_file((f"{s}.npz",), [folder], dataset="npz")
            return _open_npz(file, f"npz file {str(file)!r}"), f"npz file {str(file)!r}"

        label_sets = []
        for s in SPLITS:
            if s == "val" and not have_val:
                continue
            archive, where_s = open_split(s)
            with archive:
                label_sets.append(_labels(_array(archive, "y", where_s), f"{where_s} (y)"))
                found = _stored_names(archive, where_s)
                if found is not None:
                    stored.append((found, where_s))
                if s == source:
                    x = _array(archive, "x", where_s)
                    y = label_sets[-1]
                    where = where_s

    names = _agreed_names(class_names, stored)
    if names is not None and num_classes is not None and num_classes != len(names):
        raise ValueError(
            f"dataset 'npz': num_classes={num_classes} but the class names are {len(names)}: "
            f"{list(names)}"
        )
    if num_classes is None:
        num_classes = len(names) if names is not None else max(
            2, 1 + max((int(v.max()) for v in label_sets if v.size), default=0))
    _check_labels(y, num_classes, where)
    if x.ndim < 2:
        raise ValueError(f"{where}: x must have shape (N, ...), got {x.shape}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"{where}: {x.shape[0]} images but {y.shape[0]} labels; the counts must match"
        )
    if channels_last:
        if x.ndim != 4:
            raise ValueError(f"{where}: channels_last needs x of shape (N, H, W, C), got {x.shape}")
        x = x.transpose(0, 3, 1, 2)
    elif x.ndim == 3:
        x = x[:, None]

    if not have_val and split != "test":
        train_idx, val_idx = split_off(y, round(val_fraction * len(y)), seed=seed)
        idx = val_idx if split == "val" else train_idx
        x, y = x[idx], y[idx]
    if split == "train":
        keep = take_train_subset(y, n_train, seed=seed)
        x, y = x[keep], y[keep]
    if split == "val" and len(y) == 0:
        raise ValueError(f"dataset 'npz': split 'val' is empty (val_fraction={val_fraction})")
    return ArrayDataset(
        to_unit(np.ascontiguousarray(x), where=where),
        y,
        num_classes=num_classes,
        name="npz",
        split=split,
        bounds=(0.0, 1.0),
        class_names=names,
    )
