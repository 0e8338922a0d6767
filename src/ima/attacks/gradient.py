"""Projected gradient descent (PGD, the paper's Eq. 1) and its shared iteration core."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import lp
from ..checks import check_int
from ..modes import eval_mode
from ..tasks import Task
from .base import AttackResult, check_attack_inputs, probe

__all__ = ["pgd"]


@dataclass
class Path:
    """Where a PGD run ended, per sample.

    x: last iterate, or the iterate at which a stopped sample left; fooled: bool (B,),
    True where the model misclassifies ``x``; last_correct: the iterate just before the
    first misclassified one (only when stopping on success with ``tau = 0``; the clean
    input counts as the iterate before the start point); correct_steps: int (B,), how
    many of the iterates a gradient step was taken from were classified correctly.
    """

    x: torch.Tensor
    fooled: torch.Tensor
    last_correct: torch.Tensor | None
    correct_steps: torch.Tensor


def random_start_point(x: torch.Tensor, eps: torch.Tensor, norm: str, bounds) -> torch.Tensor:
    """A uniformly random point of the ``eps``-ball around each sample, clipped to ``bounds``."""
    return lp.clip_to_bounds(x + lp.sample_ball(x, eps, norm), bounds)


#: How often (in iterations) the working set is checked for samples that left it, and
#: the fraction of it that must have left before it is compacted, per device type. On the
#: CPU compute dominates, so every finished sample is dropped at once. On a GPU each check
#: is a host synchronisation and each compaction a dozen small kernels, which cost more
#: than the rows they save until a good part of the set has left.
_CHECK_EVERY = {"cpu": 1}
_COMPACT_FRACTION = {"cpu": 0.0}
_GPU_CHECK_EVERY, _GPU_COMPACT_FRACTION = 4, 0.25
#: On a GPU the compacted set keeps a multiple of this many rows (padded with finished
#: samples, whose results are already fixed), so a batch meets few distinct shapes and
#: the convolution libraries' per-shape set-up is paid for a handful of sizes only.
_BUCKET = {"cpu": 1}
_GPU_BUCKET = 16


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
    check_every: int | None = None,
    compact_fraction: float | None = None,
) -> Path:
    """Run ``steps`` PGD iterations from ``start``; the model must already be in eval mode.

    Each iteration does one forward pass on the working set; its output both decides
    whether the current iterate is adversarial and gives the gradient for the next step,
    so stopping on success costs no extra forward pass. With ``stop_on_success`` a sample
    leaves once it has been misclassified at ``tau + 1`` iterates (``tau = 0``: at its
    first misclassified iterate): its result is fixed then, and it is dropped from the
    working set at the next check (every ``check_every`` iterations) once at least
    ``compact_fraction`` of the set has left (defaults per device type: on the CPU every
    iteration, at once; on a GPU every 4 iterations, a quarter, the set then padded to a
    multiple of 16 rows with finished samples). Results do not depend on these settings.
    ``objective(output, ids)``, when given, replaces the task's loss: the per-sample value
    to ascend for the working-set samples ``ids`` (TRADES' KL divergence, for example).
    """
    batch = x.shape[0]
    kind = x.device.type
    if check_every is None:
        check_every = _CHECK_EVERY.get(kind, _GPU_CHECK_EVERY)
    if compact_fraction is None:
        compact_fraction = _COMPACT_FRACTION.get(kind, _GPU_COMPACT_FRACTION)
    bucket = _BUCKET.get(kind, _GPU_BUCKET)
    x_out = start.detach().clone()
    fooled = torch.zeros(batch, dtype=torch.bool, device=x.device)
    correct_steps = torch.zeros(batch, dtype=torch.long, device=x.device)
    last_correct = x.detach().clone() if stop_on_success else None
    # The working set: every sample still attacked plus those that left since the last
    # compaction (``gone``), whose results wait in rec_x / rec_prev until they are written
    # out; recording them with torch.where needs no host synchronisation.
    ids = torch.arange(batch, device=x.device)
    cur, x0, yc, eps_c, step_c, prev = start.detach(), x.detach(), y, eps, step_size, x.detach()
    budget = torch.full((batch,), tau, dtype=torch.long, device=x.device)
    steps_c = torch.zeros(batch, dtype=torch.long, device=x.device)  # correct_steps, local
    gone = torch.zeros(batch, dtype=torch.bool, device=x.device)
    carried = 0  # finished samples kept in the set as padding (already written out)
    rec_x = rec_prev = None
    if stop_on_success:
        rec_x, rec_prev = x_out.clone(), prev.clone()

    def write_out(mask):
        """Store the results of the working-set samples ``mask`` that left."""
        done = ids[mask]
        fooled[done] = True
        x_out[done] = rec_x[mask]
        last_correct[done] = rec_prev[mask]

    for i in range(steps + 1):
        final = i == steps
        value = None
        if not final:
            value = ((lambda out, yc=yc: task.loss(out, yc, loss)) if objective is None
                     else (lambda out, ids=ids: objective(out, ids)))
        xa, wrong, grad = probe(model, task, cur, yc, value=value, first=i == 0)
        if final:
            correct_steps[ids] = steps_c
            live = ~gone
            fooled[ids[live]] = wrong[live]
            x_out[ids[live]] = xa[live]
            if stop_on_success:
                last_correct[ids[live & wrong]] = prev[live & wrong]
                write_out(gone)
            break
        steps_c += ~(wrong | gone)
        if stop_on_success:
            if tau:
                leave = wrong & (budget == 0) & ~gone
                budget = budget - wrong.long()
            else:
                leave = wrong & ~gone
            rec_x = torch.where(lp.expand_as_batch(leave, xa), xa, rec_x)
            rec_prev = torch.where(lp.expand_as_batch(leave, xa), prev, rec_prev)
            gone = gone | leave
            if (i + 1) % check_every == 0:
                left = int(gone.sum())
                if left == ids.numel():
                    correct_steps[ids] = steps_c
                    write_out(gone)
                    break
                if left > carried and left - carried >= compact_fraction * ids.numel():
                    correct_steps[ids] = steps_c
                    write_out(gone)
                    keep = ~gone
                    size = -(-(ids.numel() - left) // bucket) * bucket
                    carried = min(size, ids.numel()) - (ids.numel() - left)
                    if carried:
                        keep[gone.nonzero().squeeze(1)[:carried]] = True
                    ids, xa, grad, x0, yc = ids[keep], xa[keep], grad[keep], x0[keep], yc[keep]
                    eps_c, step_c, prev, wrong = eps_c[keep], step_c[keep], prev[keep], wrong[keep]
                    budget, rec_x, rec_prev = budget[keep], rec_x[keep], rec_prev[keep]
                    steps_c = steps_c[keep]
                    gone = gone[keep]
            prev = torch.where(lp.expand_as_batch(wrong, xa), prev, xa)
        step = lp.expand_as_batch(step_c, xa) * lp.ascent_direction(grad, norm)
        delta = lp.project(xa + step - x0, eps_c, norm, validate=False)
        cur = lp.clip_to_bounds(x0 + delta, bounds)
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
    with eval_mode(model):
        start = random_start_point(x, eps, norm, bounds) if random_start else x
        path = ascend(
            model, task, x, y, start=start, eps=eps, step_size=step_size, norm=norm,
            loss=loss, steps=steps, bounds=bounds, stop_on_success=early_stop, tau=tau,
        )
    return AttackResult(path.x, path.fooled, correct_steps=path.correct_steps)
