"""Segmentations under attack, for figures: each sample's lowest-Dice point under 100-PGD
(:func:`segment_under_attack`), computed as the evaluation computes it."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..modes import eval_mode, kept_random_state
from ..tasks import SegmentationTask, get_task
from ..validation import check_bounds, check_real
from .attacks import clean_output, lowest_dice
from .inputs import model_device

__all__ = ["AttackedSegmentation", "segment_under_attack"]


@dataclass
class AttackedSegmentation:
    """Segmentations under attack, for figures: ``x`` the input scored (N, C, H, W), the
    clean input at eps 0; ``prediction`` the predicted label map (N, H, W); ``dice`` (N,)."""

    x: torch.Tensor
    prediction: torch.Tensor
    dice: torch.Tensor


def segment_under_attack(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    norm: str = "l2",
    steps: int = 100,
    losses=None,
    random_start: bool = True,
    bounds=(0.0, 1.0),
    task: SegmentationTask | None = None,
    seed: int = 0,
) -> AttackedSegmentation:
    """Each sample's lowest-Dice point under 100-PGD at ``eps`` (one run per loss, as in
    :func:`evaluate`; eps 0 is the clean input), with its predicted label map and Dice.

    x: (N, C, H, W) images inside ``bounds``; y: (N, H, W) true label maps; task: the
    segmentation task (default ``SegmentationTask()``). The global RNG is left as it was.
    """
    task = SegmentationTask() if task is None else get_task(task)
    if not isinstance(task, SegmentationTask):
        raise TypeError(f"task must be a SegmentationTask, got {type(task).__name__}")
    eps = check_real("eps", eps, low=0.0)
    losses = task.attack_losses if losses is None else tuple(losses)
    device = model_device(model)
    x, y = x.to(device), y.to(device)
    with kept_random_state(seed), eval_mode(model):
        out = clean_output(model, x, y, task)
        counts = task.counts(out, y)
        best = (x, counts, task.dice_from_counts(*counts))
        if eps > 0:
            best, _ = lowest_dice(
                model, x, y, eps, best, norm=norm, steps=steps, losses=losses,
                random_start=random_start, bounds=check_bounds(bounds), task=task,
            )
        with torch.no_grad():
            prediction = model(best[0]).argmax(dim=1)
    return AttackedSegmentation(best[0].detach(), prediction, best[2].float())


