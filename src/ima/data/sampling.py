"""Seeded, stratified selection of samples: validation splits and reduced training sets.

Written out here rather than borrowed from scikit-learn so that a split depends only on
the labels and the seed, never on a library version: a run's config (``seed``,
``val_size``, ``n_train``) then names its samples exactly.
"""

from __future__ import annotations

import numpy as np

from ima.data.dataset import SPLITS, ArrayDataset
from ima.data.files import to_unit
from ima.validation import check_choice, check_int

__all__ = [
    "check_split_settings",
    "image_split",
    "split_off",
    "stratified_subset",
    "take_train_subset",
    "train_val_indices",
]

# Separate random streams for separate purposes, so that (say) the n_train subset is not
# correlated with the validation split drawn from the same seed.
_VAL_STREAM = 1
_SUBSET_STREAM = 2


def stratified_subset(y, k: int, *, seed: int, stream: int = 0) -> np.ndarray:
    """Indices (sorted) of ``k`` samples of labels ``y`` drawn per class, fixed by ``seed``.

    Each class gets ``k * n_c / n`` samples rounded by the largest-remainder rule (ties
    go to the smaller label), so class proportions are kept to within one sample and
    the counts add up to ``k`` exactly; within a class the samples are a uniform random
    draw. ``y``: (N,) integer labels; ``0 <= k <= N``.
    """
    y = np.asarray(y)
    n = int(y.shape[0])
    k = check_int("k", k, low=0, high=n)
    classes, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    exact = k * counts / max(n, 1)
    quota = np.floor(exact).astype(np.int64)
    short = k - int(quota.sum())
    if short:
        # Largest remainders first; a stable sort breaks ties by class order.
        order = np.argsort(-(exact - quota), kind="stable")
        quota[order[:short]] += 1
    rng = np.random.default_rng(np.random.SeedSequence([seed, stream]))
    chosen = []
    for c in range(len(classes)):
        members = np.flatnonzero(inverse == c)
        if quota[c]:
            chosen.append(rng.permutation(members)[: quota[c]])
    if not chosen:
        return np.zeros(0, dtype=np.int64)
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def split_off(y, n_val: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, val indices): a stratified validation set of ``n_val`` samples.

    Both index arrays are sorted (file order is kept) and together cover ``range(N)``.
    """
    y = np.asarray(y)
    val = stratified_subset(y, n_val, seed=seed, stream=_VAL_STREAM)
    keep = np.ones(y.shape[0], dtype=bool)
    keep[val] = False
    return np.flatnonzero(keep).astype(np.int64), val


def take_train_subset(y, n_train: int | None, *, seed: int, name: str = "n_train"):
    """Indices of the reduced training set: all when ``n_train`` is None, else a
    stratified subset of ``n_train`` samples fixed by ``seed`` (sorted, in file order)."""
    y = np.asarray(y)
    n = int(y.shape[0])
    if n_train is None:
        return np.arange(n, dtype=np.int64)
    n_train = check_int(name, n_train, low=1)
    if n_train > n:
        raise ValueError(f"{name} must be <= {n} (the size of the training split), got {n_train}")
    return stratified_subset(y, n_train, seed=seed, stream=_SUBSET_STREAM)


def train_val_indices(
    split: str, y, *, val_size: int, n_train: int | None, seed: int
) -> np.ndarray:
    """Indices of ``split`` ("train" or "val") within a training set with labels ``y``.

    "val" is a stratified sample of ``val_size`` samples (``split_off``); "train" is the
    rest, reduced to a stratified subset of ``n_train`` samples when ``n_train`` is given
    (``take_train_subset``). Both are fixed by ``seed`` and keep file order.
    """
    y = np.asarray(y)
    if val_size > y.shape[0]:
        raise ValueError(
            f"val_size must be <= {y.shape[0]} (the training samples), got {val_size}"
        )
    if split == "val" and val_size == 0:
        raise ValueError("val_size=0 leaves no validation split; set val_size > 0")
    train_idx, val_idx = split_off(y, val_size, seed=seed)
    if split == "val":
        return val_idx
    return train_idx[take_train_subset(y[train_idx], n_train, seed=seed)]


def check_split_settings(
    split: str, *, val_size, n_train, seed, max_val_size: int | None = None
) -> tuple[int, int | None, int]:
    """Validate the settings of a dataset whose "val" split is drawn from its training
    files, before any file is read; return ``(val_size, n_train, seed)``."""
    check_choice("split", split, SPLITS)
    val_size = check_int("val_size", val_size, low=0, high=max_val_size)
    seed = check_int("seed", seed, low=0)
    if n_train is not None:
        n_train = check_int("n_train", n_train, low=1)
    if split == "val" and val_size == 0:
        raise ValueError("val_size=0 leaves no validation split; set val_size > 0")
    return val_size, n_train, seed


def image_split(
    name: str, split: str, x, y, *, val_size: int, n_train: int | None, seed: int,
    num_classes: int = 10, class_names=None,
) -> ArrayDataset:
    """The ``split`` of a labelled image set: ``x``, ``y`` read from the test files for
    "test", else from the training files, of which :func:`train_val_indices` keeps the
    "train" or "val" part. Images (uint8, or floats in [0, 1]) become float32 in [0, 1];
    ``class_names``: the name of each label, if known."""
    if split != "test":
        idx = train_val_indices(split, y, val_size=val_size, n_train=n_train, seed=seed)
        x, y = x[idx], y[idx]
    return ArrayDataset(to_unit(x, where=name), y, num_classes=num_classes, name=name,
                        split=split, bounds=(0.0, 1.0), class_names=class_names)
