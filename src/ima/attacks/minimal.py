"""Minimal-norm attacks: the smallest perturbation that fools the model, per sample."""

from __future__ import annotations

import math

import torch

from .. import lp
from ..modes import eval_mode
from ..tasks import Task
from ..validation import check_real
from .base import AttackResult, check_attack_inputs, probe
from .working_set import WorkingSet

__all__ = ["ddn"]

#: Floor of the cosine-annealed step, as a fraction of ``step_size``. The reference
#: anneals its learning rate from 1 to ``eta_min=0.01`` (fast_adv/attacks/ddn.py).
_ANNEAL_FLOOR = 0.01


def ddn(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    steps: int = 100,
    gamma: float = 0.05,
    init_norm: float = 1.0,
    step_size: float = 1.0,
    max_norm=None,
    bounds=(0.0, 1.0),
    task: Task | None = None,
) -> AttackResult:
    """Decoupled Direction and Norm attack (DDN; Rony et al. 2019, Algorithm 1), L2 only.

    x: (B, ...) inputs inside ``bounds`` (None = unbounded); y: targets. Each sample keeps
    a radius ``eps`` (starting at ``init_norm``) and a perturbation ``delta`` (starting at
    0). Iteration ``k = 0 .. steps - 1`` classifies ``x + delta``, then

    * direction: ``delta <- delta + a_k * g / ||g||_2`` with ``g`` the gradient of the
      task's training loss (cross-entropy) at ``x + delta`` and the step ``a_k`` cosine-
      annealed from ``step_size`` (alpha) at ``k = 0`` towards ``0.01 * step_size``;
    * norm: ``eps <- (1 - gamma) eps`` if ``x + delta`` was misclassified, else
      ``eps <- (1 + gamma) eps``, capped at the largest L2 norm a perturbation can have
      inside ``bounds``;
    * ``delta <- eps * delta / ||delta||_2``, then ``x + delta`` is clipped to ``bounds``.

    The clean input is iterate 0 and the iterate after the last step is classified too.
    Per sample the smallest-norm misclassified iterate is kept. Returned: that iterate
    with ``success=True``; for a sample never misclassified, ``x`` unchanged with
    ``success=False`` (as the reference implementation, jeromerony/fast_adversarial,
    returns ``inputs + best_delta`` with ``best_delta`` initialised to zero). A sample
    misclassified at the start is returned unchanged with ``success=True`` (norm 0).
    ``clean_correct`` says which clean inputs were classified correctly. The perturbation
    norms are ``ima.lp.sample_norm(result.x - x, "l2")``.

    max_norm: None, or a float or (B,) tensor; the returned perturbations are then scaled
    down radially to at most ``max_norm`` after the search (as the reference does for DDN
    training; the search itself is unconstrained), and ``success`` is re-evaluated on the
    scaled points, so it still means "the model misclassifies the returned point".

    Departures from the reference: no quantisation of the iterates to 256 levels (inputs
    here need not be 8-bit images); a zero gradient gives no direction step (the rule of
    :func:`ima.lp.ascent_direction`) instead of a random one; the annealing floor is
    relative to ``step_size`` (identical for the default ``step_size=1``).
    The model runs in eval mode, its modes are restored, and parameter ``.grad`` is never
    touched (gradients are taken with ``torch.autograd.grad``).
    """
    task, _, bounds, _ = check_attack_inputs(
        x, y, eps=0.0, norm="l2", steps=steps, bounds=bounds, task=task,
    )
    gamma = check_real("gamma", gamma, low=0.0, high=1.0, low_open=True, high_open=True)
    init_norm = check_real("init_norm", init_norm, low=0.0, low_open=True)
    step_size = check_real("step_size", step_size, low=0.0, low_open=True)
    if max_norm is not None:
        max_norm = lp.per_sample_eps(max_norm, x, name="max_norm")

    x = x.detach()
    batch = x.shape[0]
    eps = torch.full((batch,), init_norm, device=x.device, dtype=x.dtype)
    cap = lp.box_radius(x, bounds, "l2")
    delta = torch.zeros_like(x)
    best = x.clone()
    best_norm = torch.full_like(eps, math.inf)
    clean_correct = None
    # Working set: a sample misclassified at the start has its answer (norm 0) and leaves
    # it after iteration 0; every other sample searches for all the steps.
    s = WorkingSet(ids=torch.arange(batch, device=x.device), x=x, y=y, eps=eps, cap=cap,
                   delta=delta)
    with eval_mode(model):
        for k in range(steps + 1):
            final = k == steps
            ys = s["y"]
            value = None if final else (lambda out, ys=ys: task.loss(out, ys))
            cur, wrong, grad = probe(model, task, s["x"] + s["delta"], ys, value=value,
                                     first=k == 0)
            ids = s["ids"]
            length = lp.sample_norm(s["delta"], "l2")
            better = wrong & (length < best_norm[ids])
            best_norm[ids] = torch.where(better, length, best_norm[ids])
            best[ids] = torch.where(lp.expand_as_batch(better, cur), cur, best[ids])
            if k == 0:
                clean_correct = ~wrong
                if wrong.any():
                    keep = ~wrong
                    s, grad, wrong = s.keep(keep), grad[keep], wrong[keep]
                    if s.size == 0:
                        break
            if final:
                break
            _ddn_step(s, grad, wrong, k, steps, step_size, gamma, bounds)

        success = torch.isfinite(best_norm)
        if max_norm is not None:
            shrink = success & (best_norm > max_norm)
            if shrink.any():
                idx = shrink.nonzero().squeeze(1)
                moved = x[idx] + lp.project(best[idx] - x[idx], max_norm[idx], "l2", validate=False)
                best[idx] = moved
                with torch.no_grad():
                    success[idx] = ~task.correct(model(moved), y[idx])
    return AttackResult(best, success, clean_correct)


def _ddn_step(s: WorkingSet, grad, wrong, k: int, steps: int, step_size: float,
              gamma: float, bounds) -> None:
    """One DDN iteration of the working set ``s`` (in place): an annealed step along the
    L2 gradient direction, then the radius shrunk by ``gamma`` where the iterate was
    adversarial and grown where not (never past the box), and the perturbation rescaled
    onto that sphere and clipped to the bounds."""
    anneal = _ANNEAL_FLOOR + (1 - _ANNEAL_FLOOR) * (1 + math.cos(math.pi * k / steps)) / 2
    delta = s["delta"] + (step_size * anneal) * lp.ascent_direction(grad, "l2")
    eps = torch.minimum(torch.where(wrong, s["eps"] * (1 - gamma), s["eps"] * (1 + gamma)),
                        s["cap"])
    # Rescale onto the sphere of radius eps (up or down, unlike a projection); a zero delta
    # (zero gradient from the start) stays zero.
    length = lp.sample_norm(delta, "l2").clamp_min(torch.finfo(delta.dtype).tiny)
    delta = delta * lp.expand_as_batch(eps / length, s["x"])
    s["delta"] = lp.clip_to_bounds(s["x"] + delta, bounds) - s["x"]
    s["eps"] = eps
