"""Analyses of trained runs: the Bayes boundary of Moons, choosing a checkpoint by a
validation threshold (appendix C.2, H.1), and a noise level for vanilla adversarial
training from IMA's margins (appendix C.3).

Everything here reads run folders, checkpoints and results; nothing trains. The figures
built on these numbers are in :mod:`ima.plots`.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .evaluation import EvaluationResult, evaluate
from .report import Table
from .runs import read_config
from .validation import check_int, check_real

__all__ = [
    "BoundaryComparison",
    "CheckpointSelection",
    "EpsSuggestion",
    "checkpoint_epochs",
    "compare_boundaries",
    "epoch_table",
    "eps_max_table",
    "evaluate_checkpoints",
    "margin_bound",
    "moons_bayes_score",
    "run_margins",
    "select_checkpoint",
    "suggest_eps",
    "zero_crossings",
]

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------
# The Bayes-optimal boundary of scikit-learn's make_moons
# --------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------
# Appendix C.2 / H.1: choosing a checkpoint by a validation-accuracy threshold
# --------------------------------------------------------------------------------------

_CHECKPOINT = re.compile(r"epoch-(\d+)\.pt$")


def checkpoint_epochs(run_dir) -> list[int]:
    """Epochs of the checkpoints saved in ``run_dir/checkpoints`` (``epoch-NNN.pt``),
    increasing."""
    folder = Path(run_dir) / "checkpoints"
    epochs = []
    for path in folder.glob("epoch-*.pt"):
        match = _CHECKPOINT.fullmatch(path.name)
        if match:
            epochs.append(int(match.group(1)))
    return sorted(epochs)


def margin_bound(config: dict, epoch: int) -> float | None:
    """Largest margin IMA can have reached after ``epoch`` epochs; None for methods
    without ``delta_eps``.

    Appendix C.2 calls it ``M * delta_eps`` (margins start near 0 there). Here margins
    start at ``delta_eps`` and grow by at most ``delta_eps`` per epoch, so
    the bound is ``min((M + 1) * delta_eps, eps_max)``: one step more, the same order.
    """
    method = config.get("method", {})
    delta = method.get("delta_eps")
    if delta is None:
        return None
    bound = (epoch + 1) * float(delta)
    eps_max = method.get("eps_max")
    return bound if eps_max is None else min(bound, float(eps_max))


@dataclass
class CheckpointSelection:
    """Outcome of :func:`select_checkpoint`.

    ``epoch``: the chosen checkpoint (None when none qualifies); ``candidates``: one dict
    per saved checkpoint with ``epoch``, ``val_acc`` (None when the metrics lack it) and
    ``eligible``; ``reason``: one sentence saying why.
    """

    epoch: int | None
    min_val_acc: float
    candidates: list[dict] = field(default_factory=list)
    reason: str = ""


def select_checkpoint(metrics: list[dict], epochs, *, min_val_acc: float) -> CheckpointSelection:
    """Appendix C.2: the latest saved checkpoint whose validation accuracy is at least
    ``min_val_acc``.

    metrics: rows of ``metrics.csv`` (``epoch`` and ``val_acc`` columns, clean accuracy
    as a fraction); epochs: the saved checkpoints' epochs. IMA's largest margin grows
    with the epoch (at most ``M * delta_eps`` after ``M`` epochs), so among the
    checkpoints that keep the clean validation accuracy the user asks for, the latest
    is the most robust one (Tables 23/24; H.1 finds IMA's best checkpoint is the last).
    The threshold applies to the checkpoint's own epoch: validation accuracy is low in
    the first epochs and peaks before it declines (Fig. 8), so a checkpoint is not
    disqualified by an early epoch below the threshold.
    """
    min_val_acc = check_real("min_val_acc", min_val_acc, low=0.0, high=1.0)
    by_epoch = {int(r["epoch"]): r for r in metrics if "epoch" in r}
    epochs = sorted(int(e) for e in epochs)
    if not epochs:
        raise ValueError("the run has no saved checkpoints (checkpoints/epoch-NNN.pt); "
                         "train with train.save_every set")
    candidates = []
    for e in epochs:
        value = by_epoch.get(e, {}).get("val_acc")
        value = float(value) if isinstance(value, int | float) else None
        eligible = value is not None and value >= min_val_acc
        candidates.append({"epoch": e, "val_acc": value, "eligible": eligible})
    known = [c for c in candidates if c["val_acc"] is not None]
    if not known:
        raise ValueError("metrics.csv holds no val_acc for the saved checkpoints (was the "
                         "run trained with train.val_split set?)")
    chosen = [c for c in candidates if c["eligible"]]
    if not chosen:
        best = max(known, key=lambda c: c["val_acc"])
        return CheckpointSelection(
            None, min_val_acc, candidates,
            f"no checkpoint reaches validation accuracy {min_val_acc:.4f}; the best is "
            f"epoch {best['epoch']} with {best['val_acc']:.4f}",
        )
    pick = chosen[-1]
    return CheckpointSelection(
        pick["epoch"], min_val_acc, candidates,
        f"epoch {pick['epoch']} is the latest checkpoint (largest margins) with validation "
        f"accuracy {pick['val_acc']:.4f} >= {min_val_acc:.4f}",
    )


def _same_settings(result: EvaluationResult, *, eps, norm, steps, split, max_samples, seed):
    subset = None if max_samples is None else f"first {max_samples} samples"
    return (result.attack == "pgd" and result.norm == norm and result.split == split
            and result.subset == subset and result.seed == seed
            and result.params.get("steps") == steps
            and [float(e) for e in result.eps] == [float(e) for e in eps])


def evaluate_checkpoints(
    run_dir,
    epochs=None,
    *,
    eps=None,
    norm: str | None = None,
    steps: int | None = None,
    split: str = "test",
    max_samples: int | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    reuse: bool = True,
    progress: bool = False,
) -> dict[int, EvaluationResult]:
    """100-PGD robustness curve of each saved checkpoint (appendix C.2 / H.1).

    Defaults come from the run's ``eval`` config section. Each result is saved as
    ``eval/checkpoints/epoch-NNN-pgd-<norm>-<split>.json`` and, with ``reuse``, read
    back instead of recomputed when that file holds the same settings.
    """
    from .runs import load_run

    run_dir = Path(run_dir)
    config = read_config(run_dir)
    e = config["eval"]
    norm = norm or e["norm"]
    steps = check_int("steps", steps if steps is not None else e["steps"], low=1)
    levels = sorted({float(v) for v in (eps if eps is not None else e["eps"])} | {0.0})
    if max_samples is None:
        max_samples = e["max_samples"]
    saved = checkpoint_epochs(run_dir)
    epochs = saved if epochs is None else sorted(int(v) for v in epochs)
    missing = sorted(set(epochs) - set(saved))
    if missing:
        raise FileNotFoundError(f"no checkpoint for epoch(s) {missing} in {str(run_dir)!r}; "
                                f"saved: {saved or 'none'}")
    settings = dict(eps=levels, norm=norm, steps=steps, split=split,
                    max_samples=max_samples, seed=seed)
    out = {}
    for epoch in epochs:
        path = run_dir / "eval" / "checkpoints" / f"epoch-{epoch:03d}-pgd-{norm}-{split}.json"
        if reuse and path.is_file():
            try:
                old = EvaluationResult.load(path)
            except (ValueError, TypeError):
                old = None
            if old is not None and _same_settings(old, **settings):
                logger.info("epoch %d: reusing %s", epoch, path)
                out[epoch] = old
                continue
        run = load_run(run_dir, epoch=epoch)
        result = evaluate(
            run.model, run.dataset(split), eps=levels, norm=norm, steps=steps,
            split_name=split, max_samples=max_samples,
            batch_size=batch_size or config["data"]["eval_batch_size"], seed=seed,
            task=run.method.task, progress=progress,
        )
        result.epoch, result.checkpoint = run.epoch, f"epoch-{epoch:03d}"
        result.save(path)
        out[epoch] = result
    return out


def _pct(value) -> str:
    return "" if value is None else f"{100 * value:.2f}"


def eps_max_table(config: dict, results: dict[int, EvaluationResult], metrics: list[dict],
                  selection: CheckpointSelection | None = None) -> Table:
    """Tables 23/24: one row per checkpoint (labelled ``eps_max = M * delta_eps`` as in
    the paper; see :func:`margin_bound`), one column
    per noise level (accuracy %, on the evaluated split), and ``0 (Validation)``: the
    clean validation accuracy from ``metrics.csv``. The chosen checkpoint is starred."""
    if not results:
        raise ValueError("eps_max_table needs at least one evaluated checkpoint")
    levels = sorted({e for r in results.values() for e in r.eps})
    val = {int(r["epoch"]): r.get("val_acc") for r in metrics if "epoch" in r}
    delta = config.get("method", {}).get("delta_eps")
    rows = []
    for epoch in sorted(results):
        r = results[epoch]
        by_eps = dict(zip(r.eps, r.accuracy, strict=True))
        label = f"epoch {epoch}"
        if delta is not None:
            # The paper's row label (appendix C.2); margin_bound says why the reachable
            # maximum here is one delta_eps more.
            label += f": eps_max = {epoch} x {float(delta):.4g} = {epoch * float(delta):.4g}"
        if selection is not None and selection.epoch == epoch:
            label += " (chosen)"
        v = val.get(epoch)
        rows.append([label, *(_pct(by_eps.get(e)) for e in levels),
                     _pct(v if isinstance(v, int | float) else None)])
    first = next(iter(results.values()))
    method = config.get("method", {}).get("name", "")
    title = (f"Effect of eps_max ({method}, appendix C.2): accuracy (%) on the {first.split} "
             f"set under {first.params.get('steps')}-PGD, {first.norm.upper()} norm, "
             f"{first.subset or f'all {first.n_samples} samples'}; last column: clean "
             f"validation accuracy")
    return Table(title, ["Noise", *(f"{e:g}" for e in levels), "0 (Validation)"], rows)


def epoch_table(results: dict[int, EvaluationResult]) -> Table:
    """Tables 26-28 (robust overfitting, appendix H.1): one row per noise level, one
    column per checkpoint epoch (accuracy as a fraction), and the epoch that is best at
    that level (the latest among ties)."""
    if not results:
        raise ValueError("epoch_table needs at least one evaluated checkpoint")
    epochs = sorted(results)
    levels = sorted({e for r in results.values() for e in r.eps})
    rows = []
    for level in levels:
        values = {}
        for epoch in epochs:
            by_eps = dict(zip(results[epoch].eps, results[epoch].accuracy, strict=True))
            if level in by_eps:
                values[epoch] = by_eps[level]
        best = max(values, key=lambda k: (values[k], k)) if values else None
        rows.append([f"noise={level:g}", *(f"{values[k]:.4f}" if k in values else ""
                                           for k in epochs), str(best)])
    first = results[epochs[0]]
    title = (f"Accuracy per checkpoint on the {first.split} set under "
             f"{first.params.get('steps')}-PGD ({first.norm.upper()} norm; appendix H.1)")
    return Table(title, ["Epoch", *map(str, epochs), "Best epoch"], rows)


# --------------------------------------------------------------------------------------
# Appendix C.3: a noise level for vanilla adversarial training from IMA's margins
# --------------------------------------------------------------------------------------


def run_margins(run) -> tuple[torch.Tensor, float | None, str]:
    """The per-sample margins a run's method estimated, its ``eps_max`` and the method's
    name. Raises ValueError for methods that keep no margins (all but ima and mma)."""
    store = getattr(run.method, "margins", None)
    name = run.config["method"]["name"]
    if store is None or not hasattr(store, "margins"):
        raise ValueError(
            f"run {str(run.dir)!r} was trained with method {name!r}, which keeps no "
            "per-sample margins; margins are estimated by ima (and mma)"
        )
    return store.margins.detach().cpu().float(), getattr(store, "eps_max", None), name


@dataclass
class EpsSuggestion:
    """A noise level for vanilla adversarial training read off a margin distribution.

    ``eps``: the ``quantile`` of the ``n_samples`` margins; ``quantiles``: a few others
    for context; ``at_eps_max``: fraction of margins clipped at ``eps_max`` (censored:
    their true estimate may be larger).
    """

    eps: float
    quantile: float
    n_samples: int
    eps_max: float | None
    at_eps_max: float
    quantiles: dict[float, float]
    method: str = "ima"

    def summary(self) -> str:
        lines = [
            f"suggested eps for vanilla adversarial training: {self.eps:.4g} "
            f"(the {self.quantile:g} quantile of {self.n_samples} {self.method} margins: "
            f"{100 * (1 - self.quantile):.0f}% of the training samples have a larger margin)",
            "margin quantiles: " + ", ".join(f"{q:g}: {v:.4g}"
                                             for q, v in self.quantiles.items()),
        ]
        if self.eps_max is not None:
            lines.append(f"{100 * self.at_eps_max:.1f}% of the margins are at eps_max = "
                         f"{self.eps_max:g}")
        return "\n".join(lines)


def suggest_eps(margins, *, quantile: float = 0.25, eps_max: float | None = None,
                method: str = "ima") -> EpsSuggestion:
    """Appendix C.3: a training noise level "just smaller than the majority of the
    margins", the ``quantile`` (default 0.25) of the estimated margins.

    Why a low quantile: vanilla adversarial training (Eq. 2) gives every noisy sample
    ``x + delta`` with ``||delta|| = eps`` the label of ``x``; where ``eps`` exceeds the
    sample's true margin the label is wrong and pulls the boundary off the Bayes one
    (appendix D). With the 0.25 quantile, three quarters of the training samples have an
    estimated margin at least ``eps``, so most noisy samples keep a correct label, while
    ``eps`` stays as large as possible. IMA's estimates also err high in high dimensions
    (margin overestimation, appendix C.2), one more reason not to take the median. The
    suggestion is a starting point for a small grid search around it (appendix C.3).

    margins: (N,) estimated margins (``run.method.margins.margins``). Warns (log) when
    the quantile sits at ``eps_max``: the distribution is clipped there, so the value is
    only a lower bound (train IMA with a larger ``eps_max``).
    """
    quantile = check_real("quantile", quantile, low=0.0, high=1.0, low_open=True,
                          high_open=True)
    m = np.asarray(torch.as_tensor(margins, dtype=torch.float64).reshape(-1).cpu())
    if m.size == 0:
        raise ValueError("margins must hold at least one value, got none")
    if not np.isfinite(m).all() or (m < 0).any():
        raise ValueError("margins must be finite and >= 0")
    value = float(np.quantile(m, quantile))
    at_max = 0.0
    if eps_max is not None:
        eps_max = float(eps_max)
        at_max = float((m >= eps_max * (1 - 1e-6)).mean())
        if value >= eps_max * (1 - 1e-6):
            logger.warning(
                "the %g quantile of the margins is at eps_max = %g: the margins are clipped "
                "there, so the suggestion is a lower bound; train with a larger eps_max",
                quantile, eps_max,
            )
    levels = sorted({0.1, 0.25, 0.5, 0.75, 0.9, quantile})
    return EpsSuggestion(
        eps=value, quantile=quantile, n_samples=int(m.size), eps_max=eps_max,
        at_eps_max=at_max, quantiles={q: float(np.quantile(m, q)) for q in levels},
        method=method,
    )
