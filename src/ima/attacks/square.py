"""The Square attack (Andriushchenko, Croce, Flammarion and Hein, ECCV 2020): a
score-based black-box random search over square-shaped updates, in the Linf or the L2
ball, against classifiers or segmenters."""

from __future__ import annotations

import math

import torch

from .. import lp
from ..modes import eval_mode
from ..tasks import ClassificationTask, SegmentationTask, Task
from ..validation import check_int, check_real
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
    """The Square attack: outputs only, no gradients (Algorithm 1 of the paper, with the
    Linf sampling of its Algorithm 2 or the L2 sampling of its Algorithm 3).

    x: images (B, C, H, W); ``eps`` a float or one per sample. Each query changes, per
    sample, the current best perturbation inside a random ``s x s`` window and keeps the
    change if the objective rises; ``s`` follows the fraction ``p`` of
    :func:`square_fraction` (``p_init`` 0.8 as AutoAttack's, halved on the authors'
    schedule).

    * Linf: start with vertical stripes, each column of each channel at ``+-eps``; a
      query moves one window to a random corner (``+-eps`` per channel), ``s`` the
      nearest integer to ``sqrt(p H W)`` (at least 1, at most ``H - 1``).
    * L2: start with the authors' grid of ``H // 5``-pixel blocks, each holding the
      centre-weighted two-lobed bump of :func:`_bump` (the authors' "meta pseudo-Gaussian"
      perturbation) with a random sign per channel, the whole scaled to L2 norm ``eps``. A
      query draws two windows of side ``s`` (``sqrt(p H W)`` rounded, at least 3, made
      odd, at most ``min(H, W)``): the second window's perturbation is removed and its
      mass, with the mass still free in the ball, goes to the first window, whose new
      content is a fresh bump with a random sign per channel plus the window's old
      content (normalised), per channel scaled so that the whole perturbation keeps L2
      norm ``eps``; then the perturbation is rescaled to norm ``eps`` (restoring what the
      bounds clipped) and the point clipped to ``bounds``.

    Objective (:func:`_objective`): for a classifier the margin loss (the task's
    ``"margin"``, ``max_{j != y} z_j - z_y``); for an :class:`~ima.tasks.SegmentationTask`
    ``1 - soft Dice`` per image (continuous, so the search sees progress before the hard
    Dice moves). A sample leaves the working set once the task calls it wrong (a
    misclassified image, or a segmentation whose Dice is no longer above the threshold);
    ``success`` is True there and ``x`` holds its first wrong point; a wrong candidate is
    always kept, as in the authors' code. An image the task never calls correct (one with
    no Dice under ``empty_dice="skip"``) is wrong at the start, so it counts as fooled
    there. At most ``queries`` forward passes per sample, the start counting as one.

    Departures from the authors' code: windows, signs and bump orientations are drawn per
    sample (theirs per batch), and a window may touch the last row and column (their
    position is drawn in ``[0, H - s)``). Linf: a window that would not change the image
    takes the opposite corner instead of being drawn again. L2: the window side is capped
    at ``min(H, W)`` (their code fails once it reaches ``H``); images under 5 pixels high,
    on which their start divides by zero, start with 1-pixel blocks; blocks that cross
    the image's edge are cropped.
    """
    task, eps, bounds, _ = check_attack_inputs(x, y, eps=eps, norm=norm, steps=queries,
                                               bounds=bounds, task=task)
    if not isinstance(task, (ClassificationTask, SegmentationTask)):
        raise TypeError(f"square attacks classifiers and segmenters, got task "
                        f"{type(task).__name__}")
    if x.dim() != 4:
        raise ValueError(f"square needs images (B, C, H, W), got shape {tuple(x.shape)}")
    check_int("queries", queries, low=1)
    check_real("p_init", p_init, low=0.0, high=1.0, low_open=True)
    x = x.detach()
    _, _, h, w = x.shape
    eps4 = eps.view(-1, 1, 1, 1)
    start = _linf_start if norm == "linf" else _l2_start
    candidate = _linf_candidate if norm == "linf" else _l2_candidate
    with eval_mode(model), torch.no_grad():
        best = lp.clip_to_bounds(x + start(x, eps4), bounds)
        out = model(best)
        task.check_target(out, y)
        fooled = ~task.correct(out, y)
        s = WorkingSet(ids=torch.arange(x.shape[0], device=x.device), x0=x, y=y, eps=eps4,
                       best=best, loss=_objective(task, out, y)).keep(~fooled)
        for query in range(1, queries):
            if s.size == 0:
                break
            side = _side(norm, square_fraction(p_init, query, queries), h, w)
            s = _query(model, task, s, candidate(s, side, bounds), best, fooled)
        best[s["ids"]] = s["best"]
    return AttackResult(best, fooled)


def _objective(task: Task, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """What the search ascends, per sample (B,): a classifier's margin loss, a segmenter's
    ``1 - soft Dice``."""
    if isinstance(task, SegmentationTask):
        return 1.0 - task.soft_dice(out, y)
    return task.loss(out, y, "margin")


def _side(norm: str, p: float, h: int, w: int) -> int:
    """The window side for the fraction ``p`` of an ``h x w`` image (see :func:`square`)."""
    side = round(math.sqrt(p * h * w))
    if norm == "linf":
        return min(max(side, 1), h - 1)
    side = max(side, 3)
    return min(side + 1 - side % 2, h, w)


def _signs(shape, like: torch.Tensor) -> torch.Tensor:
    return torch.randint(0, 2, shape, device=like.device).to(like.dtype) * 2 - 1


def _unit(t: torch.Tensor, dims) -> torch.Tensor:
    """``t`` scaled to L2 norm 1 over ``dims`` (zero stays zero)."""
    length = t.square().sum(dim=dims, keepdim=True).sqrt()
    return t / length.clamp_min(torch.finfo(t.dtype).tiny)


def _rings(rows: int, cols: int, like: torch.Tensor) -> torch.Tensor:
    """The authors' ``eta_rectangles``, unit L2 norm (rows, cols): nested squares around
    the centre ``(rows // 2, cols // 2)``, the k-th (k = 0, 1, ...) adding ``1 / (k+1)^2``;
    a pixel at Chebyshev distance ``d`` from the centre holds ``sum_{k >= d} 1/(k+1)^2``."""
    top = max(rows // 2, cols // 2) + 1
    weights = 1.0 / torch.arange(1, top + 1, device=like.device, dtype=like.dtype) ** 2
    tail = weights.flip(0).cumsum(0).flip(0)
    i = (torch.arange(rows, device=like.device) - rows // 2).abs()
    j = (torch.arange(cols, device=like.device) - cols // 2).abs()
    return _unit(tail[torch.maximum(i[:, None], j[None, :])], (0, 1))


def _bump(side: int, like: torch.Tensor) -> torch.Tensor:
    """The authors' "meta pseudo-Gaussian" perturbation (side, side), unit L2 norm: the top
    ``side // 2`` rows a positive :func:`_rings` lobe, the others a negative one."""
    half = side // 2
    return _unit(torch.cat([_rings(half, side, like), -_rings(side - half, side, like)]),
                 (0, 1))


def _mask(side: int, top, left, h: int, w: int) -> torch.Tensor:
    """Bool (n, 1, h, w): the ``side x side`` windows at ``(top, left)`` (n, 1, 1)."""
    i = torch.arange(h, device=top.device).view(1, h, 1) - top
    j = torch.arange(w, device=top.device).view(1, 1, w) - left
    return ((i >= 0) & (i < side) & (j >= 0) & (j < side)).unsqueeze(1)


def _place(bump: torch.Tensor, top, left, flip, h: int, w: int) -> torch.Tensor:
    """``bump`` (s, s) placed per sample at ``(top, left)`` (n, 1, 1), transposed where
    ``flip`` (n, 1, 1); zero outside the window: (n, 1, h, w)."""
    side = bump.shape[0]
    i = (torch.arange(h, device=bump.device).view(1, h, 1) - top).clamp(0, side - 1)
    j = (torch.arange(w, device=bump.device).view(1, 1, w) - left).clamp(0, side - 1)
    value = torch.where(flip, bump[j, i], bump[i, j]).unsqueeze(1)
    return torch.where(_mask(side, top, left, h, w), value, 0.0)


def _window(n: int, side: int, h: int, w: int, device):
    """Random top-left corners (n, 1, 1) of ``side x side`` windows inside ``h x w``."""
    top = torch.randint(0, h - side + 1, (n, 1, 1), device=device)
    left = torch.randint(0, w - side + 1, (n, 1, 1), device=device)
    return top, left


def _linf_start(x: torch.Tensor, eps4: torch.Tensor) -> torch.Tensor:
    """Vertical stripes: each column of each channel at ``+-eps``."""
    b, c, _, w = x.shape
    return eps4 * _signs((b, c, 1, w), x)


def _l2_start(x: torch.Tensor, eps4: torch.Tensor) -> torch.Tensor:
    """The authors' L2 start: a grid of ``H // 5``-pixel blocks (from ``(H - 5 side) // 2``
    on both axes, ``H // side`` by ``W // side`` of them, cropped at the edges), each a
    :func:`_bump` (randomly transposed) with a random sign per channel, scaled to L2 norm
    ``eps``."""
    b, c, h, w = x.shape
    side = max(h // 5, 1)
    offset = max((h - 5 * side) // 2, 0)
    blocks = (h // side, w // side)
    i = torch.arange(h, device=x.device) - offset
    j = torch.arange(w, device=x.device) - offset
    in_grid = ((i >= 0) & (i < blocks[0] * side))[:, None] & \
        ((j >= 0) & (j < blocks[1] * side))[None, :]
    bi, bj = i.clamp(min=0) // side, j.clamp(min=0) // side
    bi, bj = bi.clamp(max=blocks[0] - 1)[:, None], bj.clamp(max=blocks[1] - 1)[None, :]
    pi, pj = (i.clamp(min=0) % side)[:, None], (j.clamp(min=0) % side)[None, :]
    bump = _bump(side, x)
    flip = torch.rand((b, *blocks), device=x.device)[:, bi, bj] > 0.5
    pattern = torch.where(flip, bump[pj, pi], bump[pi, pj]) * in_grid
    signs = _signs((b, c, *blocks), x)[:, :, bi, bj]
    return eps4 * _unit(pattern.unsqueeze(1) * signs, (1, 2, 3))


def _linf_candidate(s: WorkingSet, side: int, bounds) -> torch.Tensor:
    """One random window of each sample's best perturbation moved to a random corner (the
    opposite one where that would change nothing), clipped to ``bounds``."""
    n, c, h, w = s["x0"].shape
    top, left = _window(n, side, h, w, s["x0"].device)
    window = _mask(side, top, left, h, w)
    corner = s["eps"] * _signs((n, c, 1, 1), s["x0"])
    delta = s["best"] - s["x0"]
    candidate = lp.clip_to_bounds(s["x0"] + torch.where(window, corner, delta), bounds)
    same = ((candidate - s["best"]).abs() < 1e-7).flatten(1).all(dim=1)
    if same.any():  # the window is already at that corner: take the opposite one
        flipped = lp.clip_to_bounds(s["x0"] + torch.where(window, -corner, delta), bounds)
        candidate = torch.where(lp.expand_as_batch(same, candidate), flipped, candidate)
    return candidate


def _l2_candidate(s: WorkingSet, side: int, bounds) -> torch.Tensor:
    """The authors' L2 update (see :func:`square`): window 2 emptied, window 1 refilled
    with a fresh bump plus its old content, per channel carrying the mass of both windows
    and the mass still free in the ball; rescaled to L2 norm ``eps`` and clipped."""
    n, c, h, w = s["x0"].shape
    device = s["x0"].device
    delta = s["best"] - s["x0"]
    top, left = _window(n, side, h, w, device)
    first = _mask(side, top, left, h, w)
    second = _mask(side, *_window(n, side, h, w, device), h, w)
    flip = torch.rand((n, 1, 1), device=device) > 0.5
    fresh = _place(_bump(side, delta), top, left, flip, h, w) * _signs((n, c, 1, 1), delta)
    old = _unit(torch.where(first, delta, 0.0), (2, 3))
    free = (s["eps"].square() - delta.square().sum(dim=(1, 2, 3), keepdim=True)).clamp_min(0)
    both = torch.where(first | second, delta, 0.0).square().sum(dim=(2, 3), keepdim=True)
    new = _unit(fresh + old, (2, 3)) * (free / c + both).sqrt()
    delta = torch.where(first, new, torch.where(second, 0.0, delta))
    return lp.clip_to_bounds(s["x0"] + s["eps"] * _unit(delta, (1, 2, 3)), bounds)


def _query(model, task, s: WorkingSet, candidate, best, fooled) -> WorkingSet:
    """One query per sample of ``s`` at ``candidate``, kept where the objective rises or
    the task calls it wrong; wrong samples are written to ``best``/``fooled`` and leave."""
    out = model(candidate)
    loss = _objective(task, out, s["y"])
    hit = ~task.correct(out, s["y"])
    better = (loss > s["loss"]) | hit
    s["best"] = torch.where(lp.expand_as_batch(better, candidate), candidate, s["best"])
    s["loss"] = torch.where(better, loss, s["loss"])
    if hit.any():
        best[s["ids"][hit]] = s["best"][hit]
        fooled[s["ids"][hit]] = True
        s = s.keep(~hit)
    return s
