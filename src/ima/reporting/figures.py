"""Figures of trained runs (matplotlib): decision boundaries (Fig. 6), margin
histograms (Fig. 7, 10), training curves (Fig. 8, 9), robustness curves, and clean and
adversarial samples (Fig. 1, 15).

Plotting only reads: run folders (config, ``metrics.csv``, checkpoints), evaluation
results and models; it never trains. Each ``plot_*`` function returns a
:class:`matplotlib.figure.Figure` built without pyplot (no window, no global state, any
backend); :func:`save_figure` writes it as PNG and PDF. Sizes are fixed (``DPI`` dots per
inch), so a PNG is ``figsize * DPI`` pixels.
"""

from __future__ import annotations

import io
import logging
import math
import textwrap
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from ..analysis import (
    BoundaryComparison,
    compare_boundaries,
    margin_bound,
    moons_bayes_score,
    run_margins,
)
from ..assemble import dataset_from_config
from ..config import read_config_file
from ..runs import (
    CONFIG_FILE,
    Run,
    check_trusted,
    imported_from,
    load_run,
    read_config,
    read_metrics,
)
from ..validation import check_int
from .tables import load_results

__all__ = [
    "DPI",
    "figure_png",
    "plot_boundaries",
    "plot_curves",
    "plot_margins",
    "plot_noise",
    "plot_samples",
    "save_figure",
]

logger = logging.getLogger(__name__)

DPI = 120
_CLASS_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
                 "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


def _new_figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def save_figure(fig: Figure, out, formats=("png", "pdf")) -> list[Path]:
    """Write ``fig`` as each of ``formats`` beside ``out`` (its suffix is replaced);
    return the paths written. Folders are created as needed."""
    out = Path(out)
    if out.suffix.lower().lstrip(".") in ("png", "pdf", "svg"):
        out = out.with_suffix("")
    out.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = out.parent / f"{out.name}.{fmt}"
        fig.savefig(path, format=fmt, dpi=DPI)
        paths.append(path)
    return paths


def figure_png(fig: Figure) -> bytes:
    """``fig`` as PNG bytes (for embedding in an HTML page)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _as_run(run, epoch: int | None = None) -> Run:
    return run if isinstance(run, Run) else load_run(run, epoch=epoch)


def _label(run_dir) -> str:
    return Path(run_dir).resolve().name


def _norm_name(config: dict) -> str:
    norm = config.get("method", {}).get("norm") or config.get("eval", {}).get("norm", "l2")
    return str(norm).upper()


def _rms(eps: float, input_values: int) -> float:
    """The per-pixel RMS of an L2 perturbation of norm ``eps`` spread evenly over
    ``input_values`` values: ``eps / sqrt(input_values)``."""
    return eps / math.sqrt(input_values)


def _input_values(result, run_dir) -> int | None:
    """The number of input values per sample (``x[0].numel()``) of a result: its own
    ``input_values`` field when it has one, else read off the run folder's data (its
    config's data section only: no model is built); None when neither is known."""
    given = getattr(result, "input_values", None)
    if given:
        return int(given)
    if run_dir is None:
        return None
    try:
        raw = read_config_file(Path(run_dir) / CONFIG_FILE)
        data = {"data": raw.get("data") or {}}
        check_trusted(data, str(run_dir))
        split = result.split or (raw.get("eval") or {}).get("split") or "test"
        return int(torch.as_tensor(dataset_from_config(data, split)[0][0]).numel())
    except (OSError, ValueError, TypeError, KeyError, IndexError) as err:
        logger.warning("per-pixel RMS not shown for %s: its data cannot be read (%s)",
                       run_dir, err)
        return None


#: Characters per line of a legend's note (the legend's entries may be wider).
_NOTE_WIDTH = 40


def _note_coinciding_lines(ax, **legend) -> list[str]:
    """Draw ``ax``'s legend, titled with a note naming the lines that lie exactly on one
    another (identical values: only the last drawn is visible); return the notes."""
    groups: dict = {}
    for line in ax.get_lines():
        label = line.get_label()
        if label.startswith("_"):
            continue
        key = (tuple(np.asarray(line.get_xdata(), dtype=float).tolist()),
               tuple(np.asarray(line.get_ydata(), dtype=float).tolist()))
        groups.setdefault(key, []).append(label)
    notes = [f"{' and '.join(labels)} coincide (identical values)"
             for labels in groups.values() if len(labels) > 1]
    # wrapped to the width of an entry, so the note does not widen the legend past the axes
    width = max([_NOTE_WIDTH] + [len(label) for labels in groups.values() for label in labels])
    title = "\n".join(textwrap.fill(note, width) for note in notes)
    ax.legend(title=title or None, title_fontsize=7, **legend)
    return notes


# --------------------------------------------------------------------------------------
# Fig. 6: decision boundaries of 2-D models
# --------------------------------------------------------------------------------------


def _decision_values(model: torch.nn.Module, points: np.ndarray) -> np.ndarray:
    """(N,) ``logit_1 - logit_0`` for two classes (positive = class 1), else the
    predicted class as a float."""
    from ..modes import eval_mode

    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    dtype = next((p.dtype for p in model.parameters()), torch.float32)
    out = []
    with eval_mode(model), torch.no_grad():
        for chunk in np.array_split(points, max(1, len(points) // 16384)):
            logits = model(torch.as_tensor(chunk, dtype=dtype, device=device)).float().cpu()
            if logits.dim() != 2:
                raise ValueError(f"boundary plots need classifier logits (N, classes), got "
                                 f"shape {tuple(logits.shape)}")
            if logits.shape[1] == 2:
                out.append((logits[:, 1] - logits[:, 0]).numpy())
            else:
                out.append(logits.argmax(1).float().numpy())
    return np.concatenate(out).astype(np.float64)


def plot_boundaries(runs, *, split: str = "test", resolution: int = 200,
                    epoch: int | None = None) -> tuple[Figure, list[BoundaryComparison | None]]:
    """Decision boundaries of 2-D classifiers over the ``split`` data, one panel per run
    (Fig. 6), with the Bayes-optimal boundary for the Moons data.

    runs: run folders or loaded :class:`~ima.runs.Run` objects whose inputs are 2-D
    points. For Moons runs the Bayes boundary (:func:`ima.analysis.moons_bayes_score`,
    with the run's ``data.noise``) is drawn dashed and compared with the model's on the
    ``resolution`` x ``resolution`` grid inside the data's bounding box
    (:class:`~ima.analysis.BoundaryComparison`); the numbers go in the panel title and
    are returned, one per run (None where there is no Bayes reference).
    """
    resolution = check_int("resolution", resolution, low=10)
    runs = [_as_run(r, epoch) for r in runs]
    if not runs:
        raise ValueError("plot_boundaries needs at least one run")
    points = []
    for run in runs:
        data = run.dataset(split)
        x = data.x.numpy() if hasattr(data, "x") else np.stack([d[0].numpy() for d in data])
        y = data.y.numpy() if hasattr(data, "y") else np.array([int(d[1]) for d in data])
        if x.ndim != 2 or x.shape[1] != 2:
            raise ValueError(
                f"run {str(run.dir)!r}: decision boundaries can be drawn for 2-D inputs "
                f"only (Moons), its data {run.config['data']['name']!r} has inputs of shape "
                f"{tuple(x.shape[1:])}"
            )
        points.append((data, x, y))
    spans = [np.ptp(x, axis=0) for _, x, _ in points]
    aspect = max(float(s[1] / max(s[0], 1e-12)) for s in spans)
    panel = 4.6
    fig = _new_figure(panel * len(runs), min(3 * panel, panel * aspect + 1.6))
    axes = fig.subplots(1, len(runs), squeeze=False)[0]
    comparisons = []
    for ax, run, (data, x, y) in zip(axes, runs, points, strict=True):
        lo, hi = x.min(0), x.max(0)
        pad = 0.1 * (hi - lo)
        xs = np.linspace(lo[0] - pad[0], hi[0] + pad[0], resolution)
        ys = np.linspace(lo[1] - pad[1], hi[1] + pad[1], resolution)
        gx, gy = np.meshgrid(xs, ys)
        grid = np.stack([gx.ravel(), gy.ravel()], axis=1)
        values = _decision_values(run.model, grid).reshape(gx.shape)
        n_classes = max(int(y.max()) + 1, getattr(data, "num_classes", 2))
        two_class = n_classes == 2
        labels = (values > 0).astype(int) if two_class else values.astype(int)

        from matplotlib.colors import ListedColormap

        k = max(n_classes, 2)
        cmap = ListedColormap([_CLASS_COLORS[i % 10] for i in range(k)])
        ax.contourf(xs, ys, labels, levels=np.arange(k + 1) - 0.5, cmap=cmap, alpha=0.15)
        for c in range(k):
            sel = y == c
            ax.scatter(x[sel, 0], x[sel, 1], s=6, color=_CLASS_COLORS[c % 10], alpha=0.6,
                       linewidths=0, label=f"class {c} ({split})", rasterized=True)
        level = [0.0] if two_class else np.arange(k - 1) + 0.5
        ax.contour(xs, ys, values, levels=level, colors="black", linewidths=1.6)
        handles, names = ax.get_legend_handles_labels()
        from matplotlib.lines import Line2D

        handles.append(Line2D([], [], color="black", linewidth=1.6))
        names.append("model boundary")

        comparison = None
        title = f"{_label(run.dir)} ({run.config['method']['name']}, epoch {run.epoch})"
        if run.config["data"]["name"] == "moons" and two_class:
            noise = float(run.config["data"].get("noise", 0.2))
            bayes = moons_bayes_score(grid, noise=noise).reshape(gx.shape)
            ax.contour(xs, ys, bayes, levels=[0.0], colors="#444444", linewidths=1.4,
                       linestyles="dashed")
            handles.append(Line2D([], [], color="#444444", linewidth=1.4, linestyle="--"))
            names.append("Bayes-optimal boundary")
            comparison = compare_boundaries(xs, ys, values, bayes,
                                            box=(lo[0], hi[0], lo[1], hi[1]))
            title += (f"\nmean distance to Bayes boundary {comparison.mean_distance:.3f}"
                      f"\ndisagreement {100 * comparison.disagreement:.1f}% of the box "
                      f"(data noise {noise:g})")
        comparisons.append(comparison)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("x1 (input units)")
        ax.set_ylabel("x2 (input units)")
        ax.set_xlim(xs[0], xs[-1])
        ax.set_ylim(ys[0], ys[-1])
        ax.set_aspect("equal")
    # One legend for all panels, below them (the Bayes entry names the last Moons run's
    # noise; panels with another noise say so in their own title).
    fig.legend(handles, names, loc="outside lower center", ncol=len(names), fontsize=8,
               markerscale=2.5, frameon=False)
    fig.suptitle(f"Decision boundaries on the {split} set", fontsize=12)
    return fig, comparisons


# --------------------------------------------------------------------------------------
# Fig. 7 / 10: margin distributions
# --------------------------------------------------------------------------------------


def plot_margins(runs, *, bins: int = 40, overlay: bool = False,
                 epoch: int | None = None) -> Figure:
    """Histograms of the per-sample margins estimated during training (Fig. 7, 10), one
    panel per run (``overlay``: all on one axis), with ``eps_max`` marked.

    runs: run folders or :class:`~ima.runs.Run` objects of methods that keep margins
    (ima, mma); others raise ValueError.
    """
    bins = check_int("bins", bins, low=1)
    runs = [_as_run(r, epoch) for r in runs]
    if not runs:
        raise ValueError("plot_margins needs at least one run")
    data = [(run, *run_margins(run)) for run in runs]

    def edges_for(items):
        top = max([float(m.max()) for _, m, _, _ in items]
                  + [e for _, _, e, _ in items if e is not None]) or 1.0
        return np.linspace(0.0, top * 1.02, bins + 1)

    panels = 1 if overlay else len(runs)
    fig = _new_figure(5.0 * panels if not overlay else 6.4, 4.2)
    axes = fig.subplots(1, panels, squeeze=False)[0]
    shared = edges_for(data)
    for i, (run, margins, eps_max, method) in enumerate(data):
        ax = axes[0 if overlay else i]
        edges = shared if overlay else edges_for([data[i]])
        color = _CLASS_COLORS[i % 10]
        m = margins.numpy()
        label = f"{_label(run.dir)} ({method}, epoch {run.epoch})"
        ax.hist(m, bins=edges, color=color, alpha=0.45 if overlay else 0.8,
                histtype="stepfilled", edgecolor=color,
                label=f"{label}: mean {m.mean():.3g}, median {np.median(m):.3g}")
        if eps_max is not None:
            ax.axvline(eps_max, color=color if overlay else "black", linestyle="--",
                       linewidth=1.2, label=f"eps_max = {eps_max:g}")
        if not overlay:
            ax.set_title(label, fontsize=10)
        ax.set_xlabel(f"estimated margin ({_norm_name(run.config)} norm, input units)")
        ax.set_ylabel("number of training samples")
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle("Distribution of the margins estimated during training", fontsize=12)
    return fig


# --------------------------------------------------------------------------------------
# Fig. 8 / 9: training curves
# --------------------------------------------------------------------------------------

_MARGIN_STATS = (("margin_mean", "mean", "-"), ("margin_median", "median", "--"),
                 ("margin_max", "max", ":"))
#: metrics.csv column, legend name, line style, marker (val's is hollow)
_ACCURACY_LINES = (("train_acc", "train", "-", "o"), ("val_acc", "val", "--", "s"))


def plot_curves(run_dirs) -> Figure:
    """Training and validation accuracy (clean data) against epoch (Fig. 8, 9) from
    ``metrics.csv``, and, when recorded, the mean, median and max estimated margin with
    the largest margin IMA can have reached (:func:`ima.analysis.margin_bound`). Several
    runs share the axes (one colour per run); "train" is solid with filled markers,
    "val" dashed with hollow ones, and a legend's title names lines that coincide."""
    run_dirs = [Path(d) for d in ([run_dirs] if isinstance(run_dirs, str | Path)
                                  else run_dirs)]
    if not run_dirs:
        raise ValueError("plot_curves needs at least one run folder")
    tables = []
    for d in run_dirs:
        if imported_from(d) is not None:
            raise ValueError(f"run {str(d)!r} holds a model imported by `ima import-model`: "
                             "it has no training metrics to plot")
        config = read_config(d)
        rows = read_metrics(d)
        if not rows:
            raise ValueError(f"run {str(d)!r} has no metrics.csv rows yet")
        tables.append((d, config, rows))
    has_margins = any("margin_mean" in r for _, _, rows in tables for r in rows)
    fig = _new_figure(11.0 if has_margins else 6.2, 4.4)
    axes = fig.subplots(1, 2 if has_margins else 1, squeeze=False)[0]
    acc_ax = axes[0]
    for i, (d, config, rows) in enumerate(tables):
        color = _CLASS_COLORS[i % 10]
        epochs = [r["epoch"] for r in rows]
        name = _label(d)
        for key, what, style, marker in _ACCURACY_LINES:
            values = [r.get(key) for r in rows]
            if all(isinstance(v, int | float) for v in values):
                acc_ax.plot(epochs, [100 * v for v in values], linestyle=style, color=color,
                            marker=marker if len(rows) < 30 else None, markersize=4,
                            markerfacecolor=color if what == "train" else "white",
                            label=f"{name}: {what}")
        if has_margins and any("margin_mean" in r for r in rows):
            ax = axes[1]
            for key, what, style in _MARGIN_STATS:
                values = [r.get(key) for r in rows]
                if all(isinstance(v, int | float) for v in values):
                    ax.plot(epochs, values, style, color=color, label=f"{name}: {what}")
            eps_max = config["method"].get("eps_max")
            bound = [margin_bound(config, e) for e in epochs]
            if all(b is not None for b in bound):
                ax.plot(epochs, bound, color=color, alpha=0.35, linewidth=3,
                        label=f"{name}: largest reachable margin")
            if eps_max is not None:
                ax.axhline(eps_max, color=color, linestyle="-.", linewidth=0.8,
                           label=f"{name}: eps_max = {eps_max:g}")
            ax.set_xlabel("epoch")
            ax.set_ylabel(f"estimated margin ({_norm_name(config)} norm, input units)")
            ax.set_title("Margins of the training samples", fontsize=10)
            _note_coinciding_lines(ax, fontsize=7, handlelength=3)
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    acc_ax.set_xlabel("epoch")
    acc_ax.set_ylabel("accuracy on clean data (%)")
    acc_ax.set_title("Training (solid) and validation (dashed) accuracy", fontsize=10)
    _note_coinciding_lines(acc_ax, fontsize=7, handlelength=3)
    names = ", ".join(_label(d) for d in run_dirs)
    fig.suptitle(f"Training curves: {names}", fontsize=12)
    return fig


# --------------------------------------------------------------------------------------
# Robustness curves
# --------------------------------------------------------------------------------------


def plot_noise(run_dirs, eval_name: str = "pgd-l2-test", *, results=None) -> Figure:
    """Accuracy against noise level of several runs on one axis, read from their
    ``eval/<eval_name>.json`` (or from ``results``: ``(label, EvaluationResult)`` pairs,
    one per run folder of ``run_dirs``).

    For L2 results the levels are also given as the per-pixel RMS of the perturbation,
    ``eps / sqrt(D)`` with ``D`` input values per sample (a result's ``input_values``,
    else read off the run's data): on a second axis at the top when all results share
    ``D``, else in each legend entry. Curves that coincide are named in the legend."""
    results = list(results) if results is not None else load_results(run_dirs, eval_name)
    if not results:
        raise ValueError("plot_noise needs at least one result")
    dirs = list(run_dirs) if run_dirs is not None else []
    dirs = dirs if len(dirs) == len(results) else [None] * len(results)
    sizes = [_input_values(r, d) if r.norm == "l2" else None
             for (_, r), d in zip(results, dirs, strict=True)]
    shared = sizes[0] if len(set(sizes)) == 1 and sizes[0] is not None else None
    fig = _new_figure(6.4, 4.6)
    ax = fig.subplots()
    markers = "osD^v<>ph*"
    for i, ((label, r), size) in enumerate(zip(results, sizes, strict=True)):
        rms = "" if shared is not None or size is None else (
            f"; RMS per pixel = eps / {math.sqrt(size):.4g}")
        ax.plot(r.eps, [100 * a for a in r.accuracy], marker=markers[i % len(markers)],
                color=_CLASS_COLORS[i % 10], label=f"{label} (AUC {r.auc:.3f}{rms})")
    if shared is not None:
        _rms_axis(ax, sorted({e for _, r in results for e in r.eps}), shared)
    norms = sorted({r.norm.upper() for _, r in results})
    steps = sorted({str(r.params.get("steps")) for _, r in results})
    splits = sorted({str(r.split) for _, r in results})
    samples = sorted({r.subset or f"all {r.n_samples} samples" for _, r in results})
    ax.set_xlabel(f"noise level eps ({'/'.join(norms)} norm of the perturbation, "
                  "input units)")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.set_title(f"Accuracy under {'/'.join(steps)}-PGD on the {'/'.join(splits)} set "
                 f"({'; '.join(samples)})", fontsize=10)
    _note_coinciding_lines(ax, fontsize=8)
    return fig


def _rms_axis(ax, levels: list[float], input_values: int) -> None:
    """A second x axis at the top: the levels as per-pixel RMS (ticks at each level
    when there are at most eight)."""
    root = math.sqrt(input_values)
    top = ax.secondary_xaxis("top", functions=(lambda e: e / root, lambda r: r * root))
    if len(levels) <= 8:
        top.set_xticks([e / root for e in levels])
        top.set_xticklabels([f"{e / root:.3g}" for e in levels], fontsize=7)
    top.set_xlabel(f"per-pixel RMS of the perturbation (eps / sqrt({input_values}), "
                   f"{input_values} input values per sample)", fontsize=8)


# --------------------------------------------------------------------------------------
# Fig. 1 / 15: clean and adversarial samples
# --------------------------------------------------------------------------------------


def _show_image(ax, image: torch.Tensor, bounds) -> None:
    img = image.detach().cpu().float()
    low, high = bounds if bounds is not None else (float(img.min()), float(img.max()))
    if img.dim() == 3 and img.shape[0] in (3, 4):
        ax.imshow(((img.permute(1, 2, 0) - low) / max(high - low, 1e-12)).clamp(0, 1).numpy())
    else:
        ax.imshow(img.reshape(img.shape[-2:]).numpy(), cmap="gray", vmin=low, vmax=high)
    ax.set_xticks([])
    ax.set_yticks([])


def _level_name(e: float, norm: str, input_values: int) -> str:
    """"clean", or "eps=E" with, for L2, the per-pixel RMS on a second line."""
    if e == 0:
        return "clean"
    if norm != "l2":
        return f"eps={e:g}"
    return f"eps={e:g}\n(RMS {_rms(e, input_values):.3g} per pixel)"


#: Amplifications of a shown perturbation: 1, 2, 5, 10, 20, 50, ... up to 10**6.
_AMPLIFICATIONS = [m * 10**k for k in range(7) for m in (1, 2, 5)]


def _amplification(delta: torch.Tensor, half_range: float) -> float:
    """The largest of :data:`_AMPLIFICATIONS` that keeps ``delta`` within ``half_range``
    of mid-grey (1 for no perturbation, or one as large as that already)."""
    peak = float(delta.abs().max()) if delta.numel() else 0.0
    fitting = [a for a in _AMPLIFICATIONS if a * peak <= half_range]
    return float(fitting[-1]) if peak > 0 and fitting else 1.0


def _class_name(k: int, names: list[str] | None) -> str:
    return str(k) if names is None else names[k]


def _classification_samples(label: str, samples, names: list[str] | None = None) -> Figure:
    """Rows: the correctly classified images; columns: clean, then for each noise level
    the 100-PGD adversarial image and its perturbation (adversarial minus clean,
    amplified around mid-grey, the factor in the title); titles: predicted label and
    noise level (for L2 also its per-pixel RMS)."""
    y, bounds, clean = samples.truth, samples.bounds, samples.images[0]
    low, high = bounds if bounds is not None else (float(clean.min()), float(clean.max()))
    size = clean[0].numel()
    columns = 1 + 2 * (len(samples.levels) - 1)
    fig = _new_figure(1.7 * columns + 0.4, 2.0 * len(y) + 0.7)
    axes = fig.subplots(len(y), columns, squeeze=False)
    for j, e in enumerate(samples.levels):
        delta = (samples.images[j] - clean).detach().cpu().float()
        gain = _amplification(delta, (high - low) / 2)
        for i in range(len(y)):
            ax = axes[i, max(0, 2 * j - 1)]
            _show_image(ax, samples.images[j][i], bounds)
            p = int(samples.predictions[j][i])
            ax.set_title(f"pred {_class_name(p, names)}, "
                         f"{_level_name(e, samples.norm, size)}", fontsize=8,
                         color="#d62728" if p != int(y[i]) else "black")
            if j > 0:
                shown = ((low + high) / 2 + gain * delta[i]).clamp(low, high)
                _show_image(axes[i, 2 * j], shown, (low, high))
                axes[i, 2 * j].set_title(f"perturbation x{gain:g}", fontsize=8)
    for i in range(len(y)):
        axes[i, 0].set_ylabel(f"true {_class_name(int(y[i]), names)}", fontsize=8)
    fig.suptitle(
        f"{label}: clean and {samples.steps}-PGD ({samples.norm.upper()}) {samples.split} "
        "images, each beside its perturbation (amplified around grey)\ntitle: predicted "
        "class and noise level (red = misclassified)", fontsize=9,
    )
    return fig


def _segmentation_samples(label: str, samples, classes: int) -> Figure:
    """Fig. 12-14: per image two rows, the input and the predicted mask, one column per
    noise level (clean first); the true mask is outlined on every prediction, and each
    title gives the noise level and the image's Dice. The attacked input is each image's
    lowest-Dice point under 100-PGD (both losses), as :func:`ima.evaluate` scores it."""
    task, levels, count = samples.task, samples.levels, len(samples.truth)
    x_size = samples.images[0][0].numel()
    fig = _new_figure(1.7 * len(levels) + 0.4, 3.5 * count + 0.6)
    axes = fig.subplots(2 * count, len(levels), squeeze=False)
    for i in range(count):
        truth = samples.truth[i].cpu().numpy()
        for j, e in enumerate(levels):
            _show_image(axes[2 * i, j], samples.images[j][i], samples.bounds)
            dice = float(samples.dice[j][i])
            axes[2 * i, j].set_title(_level_name(e, samples.norm, x_size), fontsize=8)
            ax = axes[2 * i + 1, j]
            ax.imshow(samples.predictions[j][i].cpu().numpy(), cmap="viridis", vmin=0,
                      vmax=max(classes - 1, 1), interpolation="nearest")
            ax.contour(truth > 0, levels=[0.5], colors="#ff7f0e", linewidths=0.8)
            ax.set_xticks([])
            ax.set_yticks([])
            scored = not math.isnan(dice)  # NaN: empty truth and prediction, not scored
            wrong = scored and not bool(task.meets_threshold(dice))
            ax.set_title(f"Dice {dice:.2f}" if scored else "empty, not scored", fontsize=8,
                         color="#d62728" if wrong else "black")
        axes[2 * i, 0].set_ylabel(f"image {i}", fontsize=8)
        axes[2 * i + 1, 0].set_ylabel("prediction", fontsize=8)
    fig.suptitle(
        f"{label}: {samples.split} images and predicted masks under {samples.steps}-PGD "
        f"({samples.norm.upper()})\norange outline: true mask; red title: Dice "
        f"{'<' if task.dice_inclusive else '<='} {task.threshold:g}",
        fontsize=9,
    )
    return fig


def plot_samples(samples, *, label: str = "", classes: int | None = None,
                 class_names: list[str] | None = None) -> Figure:
    """A grid of clean and adversarial images (Fig. 1, 12-15) from
    :func:`ima.evaluation.examples.sample_images` (this figure runs no attack).
    classes: the number of classes of a segmentation's label maps (colour scale);
    class_names: the classes' names in label order (titles show them; labels without)."""
    if samples.dice is None:
        return _classification_samples(label, samples, class_names)
    if classes is None:
        classes = int(samples.truth.max()) + 1
    return _segmentation_samples(label, samples, classes)
