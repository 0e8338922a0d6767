"""Black-box attacks: they see only the model's outputs, never its gradients."""

from __future__ import annotations

import torch

from .. import lp
from ..modes import eval_mode
from ..tasks import Task
from ..validation import check_int, check_real
from .base import AttackResult, check_attack_inputs
from .working_set import WorkingSet

__all__ = ["spsa"]

#: Adam's moment decay rates and denominator floor (PyTorch's and the Adam paper's defaults,
#: as the reference implementations use ``torch.optim.Adam`` with its defaults).
_BETA1, _BETA2, _ADAM_EPS = 0.9, 0.999, 1e-8


def spsa(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps,
    norm: str = "l2",
    steps: int = 100,
    n_samples: int = 2048,
    delta: float = 0.01,
    lr: float = 0.01,
    query_batch: int = 4096,
    random_start: bool = True,
    early_stop: bool = True,
    bounds=(0.0, 1.0),
    task: Task | None = None,
) -> AttackResult:
    """SPSA attack (Uesato et al. 2018): Adam ascent on a finite-difference gradient estimate.

    Uses only the model's outputs (every forward pass runs under ``torch.no_grad``), so it
    is unaffected by masked or obfuscated gradients; the paper's appendix H.2 uses it to
    show that IMA does not mask gradients.

    x: (B, ...) inputs inside ``bounds`` (None = unbounded); y: targets; eps: float or (B,)
    radius of the ``norm``-ball (L2 in the paper). Objective: the task's margin loss
    (``max_{j != y} z_j - z_y`` on the logits for classification), maximised.
    Each of ``steps`` iterations estimates its gradient at the current point ``x'`` from
    ``n_samples`` Rademacher directions ``v`` (entries +-1), each queried at
    ``x' + delta v`` and ``x' - delta v`` (antithetic pairs, ``2 * n_samples`` model
    queries per sample and iteration):
    ``g = mean_v (L(x' + delta v) - L(x' - delta v)) / (2 delta) * v``; then one Adam step
    of learning rate ``lr`` (betas 0.9, 0.999) on the perturbation, projection onto the
    eps-ball (:func:`ima.lp.project`) and clipping to ``bounds``. Queries themselves are not
    clipped (they may leave the bounds by ``delta`` per element); iterates never do.
    random_start: begin at a uniform point of the ball (as the PyTorch SPSA of cleverhans
    does), else at ``x``. With ``early_stop`` a sample keeps its first misclassified
    iterate and costs nothing more; without it the result is the last iterate.
    ``success`` is True where the model misclassifies the returned point.

    Defaults: ``n_samples=2048`` (appendix H.2 of the IMA paper), ``delta=0.01`` and
    ``lr=0.01`` (Uesato et al. 2018, and the cleverhans / advertorch implementations),
    ``steps=100``. query_batch: the most inputs per forward pass (memory bound: about
    ``query_batch`` times one input's activations); on the CPU it changes the cost, not
    the result for a given random state (up to floating-point summation order).
    """
    task, eps, bounds, _ = check_attack_inputs(
        x, y, eps=eps, norm=norm, steps=steps, bounds=bounds, task=task, loss="margin",
    )
    n_samples = check_int("n_samples", n_samples, low=1)
    delta = check_real("delta", delta, low=0.0, low_open=True)
    lr = check_real("lr", lr, low=0.0, low_open=True)
    query_batch = check_int("query_batch", query_batch, low=2)
    x = x.detach()
    batch = x.shape[0]
    with eval_mode(model), torch.no_grad():
        start = lp.sample_ball(x, eps, norm) if random_start else torch.zeros_like(x)
        cur = lp.clip_to_bounds(x + lp.project(start, eps, norm, validate=False), bounds)
        x_out = cur.clone()
        fooled = torch.zeros(batch, dtype=torch.bool, device=x.device)
        # the samples still attacked; one that is fooled leaves at once (an iteration
        # costs 2 * n_samples queries per sample, beside which the check is free)
        s = WorkingSet(ids=torch.arange(batch, device=x.device), cur=cur, x0=x, y=y, eps=eps,
                       m1=torch.zeros_like(x), m2=torch.zeros_like(x))
        for t in range(steps + 1):
            out = model(s["cur"])
            if t == 0:
                task.check_target(out, s["y"])
            wrong = ~task.correct(out, s["y"])
            if t == steps:
                x_out[s["ids"]] = s["cur"]
                fooled[s["ids"]] = wrong
                break
            if early_stop and wrong.any():
                done = s["ids"][wrong]
                x_out[done] = s["cur"][wrong]
                fooled[done] = True
                s = s.keep(~wrong)
                if s.size == 0:
                    break
            _adam_step(model, task, s, t, norm, bounds, n_samples, delta, lr, query_batch)
    return AttackResult(x_out, fooled)


def _adam_step(model, task, s: WorkingSet, t: int, norm, bounds, n_samples, delta, lr,
               query_batch) -> None:
    """One Adam step of the working set ``s`` on the SPSA gradient estimate, projected onto
    each sample's ball and clipped to the bounds (in place)."""
    grad = _estimate_gradient(model, task, s["cur"], s["y"], n_samples, delta, query_batch)
    s["m1"] = _BETA1 * s["m1"] + (1 - _BETA1) * grad
    s["m2"] = _BETA2 * s["m2"] + (1 - _BETA2) * grad * grad
    m1_hat = s["m1"] / (1 - _BETA1 ** (t + 1))
    m2_hat = s["m2"] / (1 - _BETA2 ** (t + 1))
    moved = s["cur"] + lr * m1_hat / (m2_hat.sqrt() + _ADAM_EPS)
    s["cur"] = lp.clip_to_bounds(
        s["x0"] + lp.project(moved - s["x0"], s["eps"], norm, validate=False), bounds)


def _estimate_gradient(model, task, x, y, n_samples, delta, query_batch):
    """SPSA estimate (B, ...) of the gradient of the margin loss at each sample of ``x``."""
    batch = x.shape[0]
    grad = torch.zeros_like(x)
    pairs = batch * n_samples
    chunk = max(1, query_batch // 2)
    for begin in range(0, pairs, chunk):
        owner = torch.arange(begin, min(begin + chunk, pairs), device=x.device) // n_samples
        k = owner.numel()
        direction = torch.empty((k, *x.shape[1:]), device=x.device, dtype=x.dtype)
        direction.bernoulli_(0.5).mul_(2).sub_(1)
        base = x[owner]
        queries = torch.cat([base + delta * direction, base - delta * direction])
        targets = y[owner]
        loss = task.loss(model(queries), torch.cat([targets, targets]), "margin")
        slope = (loss[:k] - loss[k:]) / (2 * delta)
        # 1 / v = v for Rademacher directions
        grad.index_add_(0, owner, lp.expand_as_batch(slope, direction) * direction)
    return grad / n_samples
