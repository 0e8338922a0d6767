"""Adversarial examples for figures (Fig. 1, 12-15): a few images of a run under the
evaluation's 100-PGD at each noise level, with the model's predictions, as arrays that
:func:`ima.reporting.figures.plot_samples` draws (figures never run an attack)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..assemble import data_bounds
from ..attacks import pgd
from ..modes import kept_random_state
from ..tasks import SegmentationTask
from ..validation import check_int
from .inputs import data_batches
from .segmentation import segment_under_attack

__all__ = ["SampleImages", "sample_images"]


@dataclass
class SampleImages:
    """Images of one run under attack. ``levels``: noise levels, 0 (clean) first;
    ``images[j]``: the inputs at ``levels[j]`` (N, C, H, W); ``truth``: true labels (N,)
    or label maps (N, H, W); ``predictions[j]``: predicted labels (N,) or label maps;
    ``dice[j]``: per-image Dice (segmentation) or None; ``bounds``, ``task``, ``steps``,
    ``norm``, ``split``: how they were made."""

    levels: list[float]
    images: list[torch.Tensor]
    truth: torch.Tensor
    predictions: list[torch.Tensor]
    dice: list[torch.Tensor] | None
    bounds: tuple[float, float] | None
    task: object
    steps: int
    norm: str
    split: str


def sample_images(run, *, eps=None, n: int = 8, steps: int = 100, split: str = "test",
                  norm: str | None = None, seed: int = 0) -> SampleImages:
    """The first ``n`` images of a run's ``split`` (classification: the first ``n``
    classified correctly) clean and under 100-PGD at each of ``eps`` (default: the
    nonzero levels of the run's ``eval.eps``, at most four; ``norm`` default
    ``eval.norm``): classification takes the cross-entropy run's adversarial point, else
    the margin run's, else the cross-entropy run's last iterate; segmentation each
    image's lowest-Dice point, as :func:`ima.evaluate` scores it. Only image data (2-D
    points raise ValueError). The global RNG is left as it was."""
    n = check_int("n", n, low=1)
    steps = check_int("steps", steps, low=1)
    data = run.dataset(split)
    shape = tuple(data[0][0].shape)
    if len(shape) != 3:
        raise ValueError(
            f"run {str(run.dir)!r}: data {run.config['data']['name']!r} holds inputs of "
            f"shape {shape}, not images (channels, height, width); sample grids need image "
            "data (use `ima plot boundary` for 2-D points)")
    norm = norm or run.config["eval"]["norm"]
    if eps is None:
        eps = [e for e in run.config["eval"]["eps"] if e > 0][:4]
    bounds = data_bounds(data)
    task = run.method.task
    levels = [0.0, *sorted(float(e) for e in eps if float(e) > 0)]
    make = _segmentation if isinstance(task, SegmentationTask) else _classification
    with kept_random_state(seed):
        images, truth, predictions, dice = make(run.model, data, levels, n, steps, norm,
                                                bounds, task, seed)
    return SampleImages(levels, images, truth, predictions, dice, bounds, task, steps, norm,
                        split)


def _classification(model, data, levels, n, steps, norm, bounds, task, seed):
    picked_x, picked_y = [], []
    with torch.no_grad():
        for x, y in data_batches(data, 256):
            keep = task.correct(model(x), y)
            picked_x.append(x[keep])
            picked_y.append(y[keep])
            if sum(len(v) for v in picked_y) >= n:
                break
    x, y = torch.cat(picked_x)[:n], torch.cat(picked_y)[:n]
    if len(y) == 0:
        raise ValueError("no correctly classified image to show")
    images = [x] + [_adversarial(model, x, y, eps=e, norm=norm, steps=steps, bounds=bounds,
                                 task=task) for e in levels[1:]]
    with torch.no_grad():
        predictions = [model(v).argmax(1) for v in images]
    return images, y, predictions, None


def _adversarial(model, x, y, *, eps, norm, steps, bounds, task):
    """The paper's 100-PGD at one ``eps``: cross-entropy first, then the margin loss for
    the samples it did not fool; the adversarial point where one run succeeded, else the
    cross-entropy run's last iterate."""
    kwargs = dict(eps=eps, norm=norm, steps=steps, step_size=eps / 10, random_start=True,
                  early_stop=True, bounds=bounds, task=task)
    first = pgd(model, x, y, loss="ce", **kwargs)
    adv, fooled = first.x.clone(), first.success.clone()
    rest = (~fooled).nonzero().squeeze(1)
    if rest.numel():
        second = pgd(model, x[rest], y[rest], loss="margin", **kwargs)
        adv[rest[second.success]] = second.x[second.success]
    return adv


def _segmentation(model, data, levels, n, steps, norm, bounds, task, seed):
    count = min(n, len(data))
    x = torch.stack([data[i][0] for i in range(count)])
    y = torch.stack([torch.as_tensor(data[i][1]) for i in range(count)])
    attacked = [segment_under_attack(model, x, y, eps=e, norm=norm, steps=steps,
                                     bounds=bounds, task=task, seed=seed) for e in levels]
    return ([a.x for a in attacked], y, [a.prediction for a in attacked],
            [a.dice for a in attacked])
