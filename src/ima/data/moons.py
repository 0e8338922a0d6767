"""The 2-D Moons dataset of section 3.1 (scikit-learn's ``make_moons``)."""

from __future__ import annotations

import numpy as np
from sklearn.datasets import make_moons

from ima.data.dataset import SPLITS, ArrayDataset
from ima.validation import check_choice, check_int, check_real

__all__ = ["moons"]



def moons(
    split: str,
    *,
    n_train: int = 20000,
    n_val: int = 2000,
    n_test: int = 2000,
    noise: float = 0.2,
    seed: int = 0,
) -> ArrayDataset:
    """Two interleaving half-moons in 2-D, two classes (section 3.1).

    Returns an ``ArrayDataset`` with x (N, 2) float32, y (N,) in {0, 1} (class names "0"
    and "1"), ``bounds=None``
    (points are unbounded; nothing clips them). Sizes default to the paper's
    20000/2000/2000 train/val/test samples.

    The paper states neither ``noise`` (the standard deviation of the Gaussian noise
    added to the points) nor the random seed; ``noise=0.2`` (a common choice, with which
    the two classes overlap slightly) and ``seed=0`` are ours.

    Each split is its own ``make_moons`` draw, seeded from ``(seed, split)``, so a split is
    fully determined by ``seed``, ``noise`` and its own size: changing ``n_train`` leaves
    the validation and test sets unchanged. With ``noise > 0`` the splits share no point
    (almost surely); with ``noise=0`` they lie on the same curves and may share points.
    """
    check_choice("split", split, SPLITS)
    sizes = {
        "train": check_int("n_train", n_train, low=2),
        "val": check_int("n_val", n_val, low=2),
        "test": check_int("n_test", n_test, low=2),
    }
    noise = check_real("noise", noise, low=0.0)
    seed = check_int("seed", seed, low=0)

    # One child seed per split, derived from (seed, split number), so splits are
    # independent draws whatever the other splits' sizes are.
    child = np.random.SeedSequence([seed, SPLITS.index(split)])
    rng = np.random.RandomState(child.generate_state(1)[0])
    x, y = make_moons(n_samples=sizes[split], noise=noise, shuffle=True, random_state=rng)
    return ArrayDataset(
        x.astype(np.float32),
        y.astype(np.int64),
        num_classes=2,
        name="moons",
        class_names=("0", "1"),
        split=split,
        bounds=None,
    )
