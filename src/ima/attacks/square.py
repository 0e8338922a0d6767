"""The Square attack (Andriushchenko, Croce, Flammarion and Hein, ECCV 2020): a
score-based black-box random search over square-shaped updates, Linf."""

from __future__ import annotations

import math

import torch

from .. import lp
from ..modes import eval_mode
from ..tasks import ClassificationTask, Task
from ..validation import check_choice, check_int, check_real
from .base import AttackResult, check_attack_inputs
from .working_set import WorkingSet

__all__ = ["square"]

#: The fraction of the image an update changes, halved after these queries out of 10000
#: (rescaled to the budget): the authors' ``p_selection``.
_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def square_fraction(p_init: float, query: int, queries: int) -> float:
    """The fraction ``p`` of the image's pixels a square update covers at ``query``."""
    scaled = int(query / queries * 10000)
    return p_init / 2 ** sum(scaled > h for h in _HALVINGS)


def square(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps,
    norm: str = "linf",
    queries: int = 5000,
    p_init: float = 0.8,
    bounds=(0.0, 1.0),
    task: Task | None = None,
) -> AttackResult:
    """The Square attack in the Linf ball: outputs only, no gradients (Algorithm 1 of the
    paper with the Linf sampling of its Algorithm 2).

    x: images (B, C, H, W). Start: vertical stripes, each column of each channel at
    ``+-eps``. Each query changes, per sample, one random ``s x s`` window to a random
    corner (``+-eps`` per channel) and keeps the change if the margin loss (the task's
    ``"margin"``, ``max_{j != y} z_j - z_y``) rises; ``s`` follows the fraction ``p`` of
    :func:`square_fraction` (``p_init`` 0.8 as AutoAttack's, halved on the authors'
    schedule). A sample leaves the
    working set once misclassified (``success``: its first misclassified point); at most
    ``queries`` forward passes per sample. Departure from the authors' code: a window
    that would not change the image takes the opposite corner instead of being drawn
    again. Only ``norm="linf"`` is implemented (the L2 version's updates are not yet).
    """
    check_choice("norm", norm, ("linf",))
    task, eps, bounds, _ = check_attack_inputs(x, y, eps=eps, norm=norm, steps=queries,
                                               bounds=bounds, task=task)
    if not isinstance(task, ClassificationTask):
        raise TypeError(f"square attacks classifiers, got task {type(task).__name__}")
    if x.dim() != 4:
        raise ValueError(f"square needs images (B, C, H, W), got shape {tuple(x.shape)}")
    check_int("queries", queries, low=1)
    check_real("p_init", p_init, low=0.0, high=1.0, low_open=True)
    x = x.detach()
    b, c, h, w = x.shape
    eps4 = eps.view(-1, 1, 1, 1)
    with eval_mode(model), torch.no_grad():
        stripes = eps4 * _signs((b, c, 1, w), x)
        best = lp.clip_to_bounds(x + stripes, bounds)
        out = model(best)
        task.check_target(out, y)
        fooled = ~task.correct(out, y)
        s = WorkingSet(ids=torch.arange(b, device=x.device), x0=x, y=y, eps=eps4, best=best,
                       loss=task.loss(out, y, "margin")).keep(~fooled)
        for query in range(1, queries):
            if s.size == 0:
                break
            side = round(math.sqrt(square_fraction(p_init, query, queries) * h * w))
            s = _query(model, task, s, min(max(side, 1), h - 1), bounds, best, fooled)
        best[s["ids"]] = s["best"]
    return AttackResult(best, fooled)


def _signs(shape, like: torch.Tensor) -> torch.Tensor:
    return torch.randint(0, 2, shape, device=like.device).to(like.dtype) * 2 - 1


def _query(model, task, s: WorkingSet, side: int, bounds, best, fooled) -> WorkingSet:
    """One query per sample of ``s``: a random window moved to a random corner, kept when
    the margin loss rises; fooled samples are written to ``best``/``fooled`` and leave."""
    n, _, h, w = s["x0"].shape
    top = torch.randint(0, h - side + 1, (n, 1, 1, 1), device=s["x0"].device)
    left = torch.randint(0, w - side + 1, (n, 1, 1, 1), device=s["x0"].device)
    rows = torch.arange(h, device=top.device).view(1, 1, h, 1)
    cols = torch.arange(w, device=top.device).view(1, 1, 1, w)
    window = (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)
    corner = s["eps"] * _signs((n, s["x0"].shape[1], 1, 1), s["x0"])
    delta = s["best"] - s["x0"]
    candidate = lp.clip_to_bounds(s["x0"] + torch.where(window, corner, delta), bounds)
    same = ((candidate - s["best"]).abs() < 1e-7).flatten(1).all(dim=1)
    if same.any():  # the window is already at that corner: take the opposite one
        flipped = lp.clip_to_bounds(s["x0"] + torch.where(window, -corner, delta), bounds)
        candidate = torch.where(lp.expand_as_batch(same, candidate), flipped, candidate)
    out = model(candidate)
    loss = task.loss(out, s["y"], "margin")
    better = loss > s["loss"]
    s["best"] = torch.where(lp.expand_as_batch(better, candidate), candidate, s["best"])
    s["loss"] = torch.where(better, loss, s["loss"])
    hit = better & ~task.correct(out, s["y"])
    if hit.any():
        best[s["ids"][hit]] = s["best"][hit]
        fooled[s["ids"][hit]] = True
        s = s.keep(~hit)
    return s
