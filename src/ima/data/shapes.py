"""A synthetic segmentation dataset: discs and squares on a noisy background.

For tests and a quick start that needs no download: every image has known masks, and the
whole set is a function of its arguments and ``seed``.
"""

from __future__ import annotations

import numpy as np

from ima.data.dataset import ArrayDataset
from ima.tasks import SegmentationTask
from ima.validation import check_choice, check_int, check_real

__all__ = ["make_shapes", "shapes"]

_SPLIT_STREAM = {"train": 0, "val": 1, "test": 2}


def make_shapes(
    n: int, *, size: int = 32, max_shapes: int = 2, noise: float = 0.08, classes: str = "binary",
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images (n, 1, size, size) in [0, 1] and label maps (n, size, size) int64.

    Each image has a background of one random grey level in [0.15, 0.45] and 1 to
    ``max_shapes`` shapes, each a disc or an axis-aligned square of random size (radius or
    half side 3/32 to 7/32 of ``size``), position (fully inside the image) and grey level
    in [0.55, 0.85]; Gaussian noise of standard deviation ``noise`` is added and the result
    clipped to [0, 1]. Later shapes cover earlier ones. Labels: ``classes="binary"``
    marks every shape 1; ``"shape"`` marks discs 1 and squares 2.
    """
    rows, cols = np.mgrid[0:size, 0:size] + 0.5
    x = np.empty((n, 1, size, size), dtype=np.float32)
    y = np.zeros((n, size, size), dtype=np.int64)
    for i in range(n):
        image = np.full((size, size), rng.uniform(0.15, 0.45))
        for _ in range(rng.integers(1, max_shapes + 1)):
            r = rng.uniform(3 / 32, 7 / 32) * size
            cr, cc = rng.uniform(r, size - r, size=2)
            if rng.random() < 0.5:
                inside, label = (rows - cr) ** 2 + (cols - cc) ** 2 <= r**2, 1
            else:
                inside, label = (np.abs(rows - cr) <= r) & (np.abs(cols - cc) <= r), 2
            image[inside] = rng.uniform(0.55, 0.85)
            y[i][inside] = label if classes == "shape" else 1
        image += rng.normal(0.0, noise, size=image.shape) if noise else 0.0
        x[i, 0] = np.clip(image, 0.0, 1.0)
    return x, y


def shapes(
    split: str,
    *,
    n_train: int = 512,
    n_val: int = 64,
    n_test: int = 128,
    size: int = 32,
    max_shapes: int = 2,
    noise: float = 0.08,
    classes: str = "binary",
    threshold: float = 0.6,
    empty_dice: str = "skip",
    dice_inclusive: bool = False,
    seed: int = 0,
) -> ArrayDataset:
    """Synthetic segmentation data (:func:`make_shapes`), one random stream per split.

    Items are ``(x, y, index)`` with x (1, size, size) in [0, 1] and y (size, size) int64
    labels; ``classes="binary"`` (2 classes: background, shape) or ``"shape"`` (3:
    background, disc, square). The dataset's task is a
    :class:`~ima.tasks.SegmentationTask` with Dice ``threshold`` (0.6, section 4),
    ``empty_dice`` and ``dice_inclusive`` (see the task). Every image here holds a
    shape, so ``empty_dice`` never applies; it is accepted so that a config names the
    same keys for every segmentation dataset.
    """
    check_choice("split", split, tuple(_SPLIT_STREAM))
    task = SegmentationTask(
        threshold=threshold, empty_dice=empty_dice, dice_inclusive=dice_inclusive
    )
    counts = {
        "train": check_int("n_train", n_train, low=1),
        "val": check_int("n_val", n_val, low=1),
        "test": check_int("n_test", n_test, low=1),
    }
    size = check_int("size", size, low=8)
    max_shapes = check_int("max_shapes", max_shapes, low=1)
    noise = check_real("noise", noise, low=0.0)
    check_choice("classes", classes, ("binary", "shape"))
    seed = check_int("seed", seed, low=0)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 11, _SPLIT_STREAM[split]]))
    x, y = make_shapes(
        counts[split], size=size, max_shapes=max_shapes, noise=noise, classes=classes, rng=rng
    )
    return ArrayDataset(
        x, y, num_classes=2 if classes == "binary" else 3, name="shapes", split=split,
        bounds=(0.0, 1.0), task=task,
        class_names=("background", "shape") if classes == "binary"
        else ("background", "disc", "square"),
    )
