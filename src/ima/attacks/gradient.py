"""Projected gradient descent (PGD, the paper's Eq. 1) and its shared iteration core."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from .. import lp
from ..modes import eval_mode
from ..tasks import Task
from ..validation import check_finite_tensor, check_int
from .base import AttackResult, check_attack_inputs, probe
from .working_set import Compaction, WorkingSet

__all__ = ["pgd"]


@dataclass
class Path:
    """Where a PGD run ended, per sample.

    x: last iterate, or the iterate at which a stopped sample left; fooled: bool (B,),
    True where the model misclassifies ``x``; last_correct: where fooled, the iterate just
    before the first misclassified one (only when stopping on success with ``tau = 0``;
    the clean input counts as the iterate before the start point); correct_steps: int (B,), how
    many of the iterates a gradient step was taken from were classified correctly.
    """

    x: torch.Tensor
    fooled: torch.Tensor
    last_correct: torch.Tensor | None
    correct_steps: torch.Tensor


def random_start_point(x: torch.Tensor, eps: torch.Tensor, norm: str, bounds, *,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """A uniformly random point of the ``eps``-ball around each sample, clipped to ``bounds``."""
    return lp.clip_to_bounds(x + lp.sample_ball(x, eps, norm, generator=generator), bounds)


def ascend(
    model: torch.nn.Module,
    task: Task,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    start: torch.Tensor,
    eps: torch.Tensor,
    step_size: torch.Tensor,
    norm: str,
    loss: str,
    steps: int,
    bounds,
    stop_on_success: bool,
    tau: int = 0,
    objective=None,
    width: int | None = None,
    check_every: int | None = None,
    compact_fraction: float | None = None,
) -> Path:
    """Run ``steps`` PGD iterations from ``start``; the model must already be in eval mode.

    Each iteration does one forward pass on the working set; its output both decides
    whether the current iterate is adversarial and gives the gradient for the next step,
    so stopping on success costs no extra forward pass. A sample leaves the working set
    after its last iterate (``steps`` steps from its start) or, with ``stop_on_success``,
    once it has been misclassified at ``tau + 1`` iterates (``tau = 0``: at its first
    misclassified iterate): its result is fixed then, and it is dropped at the next check
    (every ``check_every`` iterations) once at least ``compact_fraction`` of the set has
    left (defaults per device type: on the CPU every iteration, at once; on a GPU every 4
    iterations, a quarter, the set then padded to a multiple of 16 rows with finished
    samples).

    ``width``: at most this many samples are attacked at once (None: all). The others
    wait in order and enter as places free up (refilling), each from its own start point
    with its own count of steps, so a long stream of samples keeps every forward pass
    full and memory bounded by ``width``. A sample's result depends only on its own
    inputs, never on these settings (the model is in eval mode; up to floating-point
    differences between batch sizes).
    ``objective(output, ids)``, when given, replaces the task's loss: the per-sample value
    to ascend for the samples ``ids`` (positions in ``x``) of the working set (TRADES' KL
    divergence, for example).
    """
    n = x.shape[0]
    policy = Compaction.for_device(x.device.type, check_every=check_every,
                                   fraction=compact_fraction)
    width = n if width is None else min(check_int("width", width, low=1), n)
    streaming = width < n  # samples wait and enter with their own count of steps
    x, start = x.detach(), start.detach()
    x_out = torch.empty_like(start)  # every sample's result is written when it leaves
    fooled = torch.zeros(n, dtype=torch.bool, device=x.device)
    correct_steps = torch.zeros(n, dtype=torch.long, device=x.device)
    last_correct = x.clone() if stop_on_success else None

    def enter(first: int, last: int) -> WorkingSet:
        """The working-set state of samples ``first`` to ``last - 1`` at their start."""
        k = last - first
        s = WorkingSet({
            "ids": torch.arange(first, last, device=x.device), "x0": x[first:last],
            "y": y[first:last], "eps": eps[first:last], "step": step_size[first:last],
            "cur": start[first:last], "prev": x[first:last],
            "steps_c": torch.zeros(k, dtype=torch.long, device=x.device),  # correct iterates
            "gone": torch.zeros(k, dtype=torch.bool, device=x.device),  # left, kept as rows
        })
        # results of the samples that left, written out at the next compaction; recording
        # them with torch.where needs no host synchronisation
        s["rec_x"], s["rec_fooled"] = s["cur"], s["gone"]
        if stop_on_success:
            s["rec_prev"] = s["prev"]
        if tau:
            s["budget"] = torch.full((k,), tau, dtype=torch.long, device=x.device)
        if streaming:
            s["age"] = torch.zeros(k, dtype=torch.long, device=x.device)  # steps taken
        return s

    def write_out(s: dict, mask: torch.Tensor) -> None:
        """Store the results of the working-set samples ``mask`` that left."""
        done = s["ids"][mask]
        fooled[done] = s["rec_fooled"][mask]
        x_out[done] = s["rec_x"][mask]
        correct_steps[done] = s["steps_c"][mask]
        if stop_on_success:
            last_correct[done] = s["rec_prev"][mask]

    s, queued = enter(0, width), width  # queued: the next waiting sample
    carried = 0  # finished samples kept in the set as padding (already written out)
    join = 0  # waiting samples that enter after this iteration's step
    fresh = True  # samples entered whose targets are not checked yet
    can_leave = stop_on_success or streaming
    for i in itertools.count():
        # a sample's last iterate is judged, and no gradient taken from it
        final = (s["age"] == steps) if streaming else i == steps
        value = None
        if final is not True:
            yc, ids = s["y"], s["ids"]
            value = ((lambda out, yc=yc: task.loss(out, yc, loss)) if objective is None
                     else (lambda out, ids=ids: objective(out, ids)))
        xa, wrong, grad = probe(model, task, s["cur"], s["y"], value=value, first=fresh)
        fresh = False
        if can_leave or final is True:
            leave = final
            if stop_on_success:
                hit = wrong & (s["budget"] == 0) if tau else wrong
                leave = hit if final is False else final | hit
            leave = leave & ~s["gone"]
            counted = wrong | s["gone"]
            s["steps_c"] += ~(counted if final is False else counted | final)
            if tau:
                s["budget"] = s["budget"] - wrong.long()
            wide = lp.expand_as_batch(leave, xa)
            s["rec_x"] = torch.where(wide, xa, s["rec_x"])
            if stop_on_success:
                s["rec_prev"] = torch.where(wide, s["prev"], s["rec_prev"])
            s["rec_fooled"] = torch.where(leave, wrong, s["rec_fooled"])
            s["gone"] = s["gone"] | leave
        else:
            s["steps_c"] += ~wrong
        if final is True or (can_leave and policy.due(i)):
            size = s.size
            left, waiting = int(s["gone"].sum()), n - queued
            if left == size and not waiting:
                write_out(s, s["gone"])
                break
            if policy.worth(left, carried, size):
                write_out(s, s["gone"])
                keep = ~s["gone"]
                live = size - left
                join = min(waiting, width - live)
                carried = 0
                if join == waiting:  # the stream is over: pad to the bucket
                    carried = policy.padding(live + join, left)
                if carried:
                    keep[s["gone"].nonzero().squeeze(1)[:carried]] = True
                s = s.keep(keep)
                xa, wrong, grad = xa[keep], wrong[keep], grad[keep]
        if stop_on_success:
            s["prev"] = torch.where(lp.expand_as_batch(wrong, xa), s["prev"], xa)
        step = lp.expand_as_batch(s["step"], xa) * lp.ascent_direction(grad, norm)
        delta = lp.project(xa + step - s["x0"], s["eps"], norm, validate=False)
        s["cur"] = lp.clip_to_bounds(s["x0"] + delta, bounds)
        if streaming:
            s["age"] += 1
            if join:
                s = s.extend(enter(queued, queued + join))
                queued, join, fresh = queued + join, 0, True
    return Path(x_out, fooled, last_correct, correct_steps)


def pgd(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps,
    norm: str = "l2",
    steps: int = 20,
    alpha: float = 4.0,
    step_size=None,
    loss: str = "ce",
    random_start: bool = True,
    early_stop: bool = False,
    tau: int = 0,
    bounds=(0.0, 1.0),
    task: Task | None = None,
    width: int | None = None,
    start: torch.Tensor | None = None,
) -> AttackResult:
    """Projected gradient ascent on the task's loss inside the ``eps``-ball (Eq. 1).

    x: (B, ...) inputs inside ``bounds`` (None = unbounded, e.g. 2-D Moons); y: targets;
    eps: float or (B,) tensor of per-sample radii; step size ``alpha * eps / steps``
    unless ``step_size`` (float or (B,)) is given; ``loss``: ``"ce"`` or ``"margin"``.
    ``random_start`` begins at a uniform point of the ball. With ``early_stop=False`` the
    result is the last iterate (the paper's delta, as vanilla adversarial training uses);
    with ``early_stop=True`` a sample keeps its first misclassified iterate and is attacked
    no further, or, with ``tau > 0``, is attacked until ``tau`` more of its iterates were
    misclassified (FAT's early-stopped PGD, Zhang et al. 2020). ``success`` is True where
    the model misclassifies the returned point; ``correct_steps`` counts the iterates a
    step was taken from that were still classified correctly (GAIRAT's kappa).
    ``start``: the start points (shaped like ``x``; projected onto each ball and the
    bounds) in place of the clean input or a random start drawn here, e.g. random starts
    drawn from the caller's own generators. ``width``: attack at most this many samples
    at once (None: the whole batch); the others wait and enter as samples finish, so a
    large ``x`` is attacked in bounded memory with every forward pass full (the results
    are those of the whole batch).
    The model runs in eval mode, its modes are restored, and parameter ``.grad`` is never
    touched (gradients are taken with ``torch.autograd.grad``).
    """
    task, eps, bounds, step_size = check_attack_inputs(
        x, y, eps=eps, norm=norm, steps=steps, bounds=bounds, task=task, loss=loss,
        alpha=alpha, step_size=step_size,
    )
    check_int("tau", tau, low=0)
    if tau and not early_stop:
        raise ValueError(f"tau={tau} needs early_stop=True (it is the early-stop budget)")
    if step_size is None:
        step_size = alpha * eps / steps
    x = x.detach()
    if start is not None:
        if not isinstance(start, torch.Tensor) or start.shape != x.shape:
            raise ValueError(f"start must be a tensor shaped like x {tuple(x.shape)}, got "
                             f"{tuple(start.shape) if isinstance(start, torch.Tensor) else start}")
        check_finite_tensor("start", start)
        delta = start.detach() - x
        inside = lp.expand_as_batch(lp.sample_norm(delta, norm) <= eps, x)  # kept bit for bit
        start = torch.where(inside, start.detach(),
                            x + lp.project(delta, eps, norm, validate=False))
        start = lp.clip_to_bounds(start, bounds)
    elif random_start:
        start = random_start_point(x, eps, norm, bounds)
    else:
        start = x
    with eval_mode(model):
        path = ascend(
            model, task, x, y, start=start, eps=eps, step_size=step_size, norm=norm,
            loss=loss, steps=steps, bounds=bounds, stop_on_success=early_stop, tau=tau,
            width=width,
        )
    return AttackResult(path.x, path.fooled, correct_steps=path.correct_steps)
