"""The Bayes-optimal decision boundary of scikit-learn's ``make_moons`` and how far a
model's boundary lies from it (Fig. 6 of the paper)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..validation import check_real

__all__ = [
    "BoundaryComparison",
    "compare_boundaries",
    "moons_bayes_score",
    "zero_crossings",
]


def _moons_curves(n_t: int) -> tuple[np.ndarray, np.ndarray]:
    """Points of the two generating half circles at ``n_t`` angles (midpoint rule on
    ``[0, pi]``): class 0 ``(cos t, sin t)``, class 1 ``(1 - cos t, 0.5 - sin t)``."""
    t = (np.arange(n_t) + 0.5) * (np.pi / n_t)
    outer = np.stack([np.cos(t), np.sin(t)], axis=1)
    inner = np.stack([1.0 - np.cos(t), 0.5 - np.sin(t)], axis=1)
    return outer, inner


def _log_kernel_sum(points: np.ndarray, curve: np.ndarray, noise: float) -> np.ndarray:
    """``log sum_t exp(-|x - c(t)|^2 / (2 sigma^2))`` per point, computed stably; for
    ``noise = 0`` the limit's ranking, ``-min_t |x - c(t)|^2`` (nearest curve)."""
    d2 = (
        (points**2).sum(1)[:, None]
        - 2.0 * points @ curve.T
        + (curve**2).sum(1)[None, :]
    ).clip(min=0.0)
    if noise == 0.0:
        return -d2.min(axis=1)
    v = -d2 / (2.0 * noise**2)
    top = v.max(axis=1)
    return top + np.log(np.exp(v - top[:, None]).sum(axis=1))


def moons_bayes_score(points, *, noise: float, chunk: int = 8192) -> np.ndarray:
    """Bayes log-likelihood ratio ``log p(x | y=1) - log p(x | y=0)`` of make_moons.

    points: (N, 2) array in input units; returns (N,) float64, positive where the
    Bayes-optimal classifier says class 1 (the inner moon). make_moons draws a point on
    a half circle at an evenly spread (in the limit: uniform) angle ``t`` in ``[0, pi]``
    and adds isotropic Gaussian noise of standard deviation ``noise``, so each class
    density is ``p(x | y) = (1/pi) int_0^pi N(x; c_y(t), noise^2 I) dt``. The integral is
    taken numerically by the midpoint rule with an angle step of at most ``noise / 8``
    (arc length = angle on the unit circle), far finer than the Gaussian's width. The
    two classes have equal priors (make_moons splits n samples as n//2 and n - n//2), so
    the Bayes decision is the sign of this ratio. With ``noise = 0`` the densities are
    degenerate; the score is then the limit's decision, nearest curve wins
    (``min_t |x - c_0(t)|^2 - min_t |x - c_1(t)|^2``).
    """
    noise = check_real("noise", noise, low=0.0)
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"points must have shape (N, 2), got {points.shape}")
    n_t = 2048 if noise == 0.0 else int(min(20000, max(512, math.ceil(8 * math.pi / noise))))
    outer, inner = _moons_curves(n_t)
    out = np.empty(len(points))
    for start in range(0, len(points), chunk):
        block = points[start : start + chunk]
        out[start : start + chunk] = (
            _log_kernel_sum(block, inner, noise) - _log_kernel_sum(block, outer, noise)
        )
    return out


def zero_crossings(xs, ys, values) -> np.ndarray:
    """Points where a scalar field on a grid changes sign, by linear interpolation along
    each grid edge whose ends have opposite signs.

    xs: (W,), ys: (H,) increasing grid coordinates; values: (H, W) with ``values[i, j]``
    the field at ``(xs[j], ys[i])``. Returns (K, 2) points (x, y) of the level set 0.
    """
    xs, ys = np.asarray(xs, float), np.asarray(ys, float)
    v = np.asarray(values, float)
    if v.shape != (len(ys), len(xs)):
        raise ValueError(f"values must have shape (len(ys), len(xs)) = {(len(ys), len(xs))}, "
                         f"got {v.shape}")
    pos = v > 0
    found = []
    a, b = v[:, :-1], v[:, 1:]
    i, j = np.nonzero(pos[:, :-1] != pos[:, 1:])
    w = a[i, j] / (a[i, j] - b[i, j])
    found.append(np.stack([xs[j] + w * (xs[j + 1] - xs[j]), ys[i]], axis=1))
    a, b = v[:-1, :], v[1:, :]
    i, j = np.nonzero(pos[:-1, :] != pos[1:, :])
    w = a[i, j] / (a[i, j] - b[i, j])
    found.append(np.stack([xs[j], ys[i] + w * (ys[i + 1] - ys[i])], axis=1))
    return np.concatenate(found)


@dataclass
class BoundaryComparison:
    """How far a model's decision boundary is from a reference (Bayes) boundary.

    ``mean_distance``: symmetric mean of nearest distances between the two boundaries
    (average of ``model_to_reference`` and ``reference_to_model``, each the mean over
    one boundary's points of the distance to the nearest point of the other), in input
    units; ``hausdorff``: the largest such nearest distance; ``disagreement``: fraction
    of the box's area where the two classifiers decide differently. NaN where a
    boundary has no point inside the box (a classifier that says one class everywhere).
    """

    mean_distance: float
    model_to_reference: float
    reference_to_model: float
    hausdorff: float
    disagreement: float
    box: tuple[float, float, float, float]

    def summary(self) -> str:
        return (f"mean distance to Bayes boundary {self.mean_distance:.3f}, "
                f"disagreement {100 * self.disagreement:.1f}% of the data's box")


def compare_boundaries(xs, ys, model_values, reference_values, *, box=None) -> BoundaryComparison:
    """Compare two binary decision functions sampled on the same grid (see
    :class:`BoundaryComparison`). Positive values mean class 1.

    box: ``(x_min, x_max, y_min, y_max)``; only boundary points and grid nodes inside it
    count (default: the whole grid).
    """
    from scipy.spatial import cKDTree

    xs, ys = np.asarray(xs, float), np.asarray(ys, float)
    model_values = np.asarray(model_values, float)
    reference_values = np.asarray(reference_values, float)
    if model_values.shape != reference_values.shape:
        raise ValueError(f"model_values and reference_values must have the same shape, got "
                         f"{model_values.shape} and {reference_values.shape}")
    if box is None:
        box = (xs[0], xs[-1], ys[0], ys[-1])
    x0, x1, y0, y1 = (float(b) for b in box)

    def inside(p):
        return p[(p[:, 0] >= x0) & (p[:, 0] <= x1) & (p[:, 1] >= y0) & (p[:, 1] <= y1)]

    a = inside(zero_crossings(xs, ys, model_values))
    b = inside(zero_crossings(xs, ys, reference_values))
    gx = (xs >= x0) & (xs <= x1)
    gy = (ys >= y0) & (ys <= y1)
    sub = np.ix_(gy, gx)
    disagreement = float(((model_values[sub] > 0) != (reference_values[sub] > 0)).mean())
    if len(a) == 0 or len(b) == 0:
        nan = float("nan")
        return BoundaryComparison(nan, nan, nan, nan, disagreement, (x0, x1, y0, y1))
    d_ab = cKDTree(b).query(a)[0]
    d_ba = cKDTree(a).query(b)[0]
    return BoundaryComparison(
        mean_distance=float((d_ab.mean() + d_ba.mean()) / 2),
        model_to_reference=float(d_ab.mean()),
        reference_to_model=float(d_ba.mean()),
        hausdorff=float(max(d_ab.max(), d_ba.max())),
        disagreement=disagreement,
        box=(x0, x1, y0, y1),
    )
