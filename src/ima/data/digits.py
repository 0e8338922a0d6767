"""scikit-learn's 8x8 handwritten digits: small real images that ship with the library."""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from ima.data.dataset import SPLITS, ArrayDataset
from ima.validation import check_choice, check_int, check_real

__all__ = ["digits"]

_NUM_CLASSES = 10


def digits(
    split: str,
    *,
    seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.2,
) -> ArrayDataset:
    """The 1797 UCI handwritten digits as 1x8x8 images in [0, 1], ten classes.

    Returns an ``ArrayDataset`` with x (N, 1, 8, 8) float32 (the 0..16 intensities
    divided by 16), y (N,) in 0..9 (class names "0".."9"), ``bounds=(0.0, 1.0)``.

    Not a dataset of the paper: a fast real-image stand-in for tests and examples.
    The split is stratified by class and fixed by ``seed``: ``round(test_fraction * 1797)``
    test and ``round(val_fraction * 1797)`` validation samples, the rest for training;
    with the defaults 1168 train, 270 val and 359 test images. Every class appears in
    every split.
    """
    check_choice("split", split, SPLITS)
    seed = check_int("seed", seed, low=0)
    val_fraction = check_real(
        "val_fraction", val_fraction, low=0.0, high=1.0, low_open=True, high_open=True
    )
    test_fraction = check_real(
        "test_fraction", test_fraction, low=0.0, high=1.0, low_open=True, high_open=True
    )

    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[:, None, :, :]
    y = bunch.target.astype(np.int64)
    n = len(y)
    n_test = round(test_fraction * n)
    n_val = round(val_fraction * n)
    n_train = n - n_test - n_val
    # Stratification needs at least one sample of each class in every split.
    for what, count in (("test", n_test), ("val", n_val), ("train", n_train)):
        if count < _NUM_CLASSES:
            raise ValueError(
                f"val_fraction={val_fraction} and test_fraction={test_fraction} leave "
                f"{count} {what} sample(s) of {n}; every split needs at least "
                f"{_NUM_CLASSES} (one per class)"
            )

    x_rest, x_test, y_rest, y_test = train_test_split(
        x, y, test_size=n_test, stratify=y, random_state=seed
    )
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=n_val, stratify=y_rest, random_state=seed
    )
    x_split, y_split = {
        "train": (x_train, y_train),
        "val": (x_val, y_val),
        "test": (x_test, y_test),
    }[split]
    return ArrayDataset(
        x_split,
        y_split,
        num_classes=_NUM_CLASSES,
        name="digits",
        class_names=tuple(str(d) for d in range(_NUM_CLASSES)),
        split=split,
        bounds=(0.0, 1.0),
    )
