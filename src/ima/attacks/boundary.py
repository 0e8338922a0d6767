"""BPGD (Algorithm 3): PGD with the sample's own eps, then bisection onto the boundary."""

from __future__ import annotations

import torch

from ..modes import eval_mode
from ..tasks import Task
from ..validation import check_int
from .base import AttackResult, check_attack_inputs, clean_pass
from .gradient import ascend, random_start_point

__all__ = ["bpgd"]


def bpgd(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps,
    norm: str = "l2",
    steps: int = 20,
    alpha: float = 4.0,
    step_size=None,
    n_binary: int = 10,
    loss: str = "ce",
    random_start: bool = True,
    bounds=(0.0, 1.0),
    task: Task | None = None,
    clean_output: torch.Tensor | None = None,
) -> AttackResult:
    """Find a point on the decision boundary inside each sample's ``eps``-ball (Algorithm 3).

    The clean input is iterate 0, the random start point iterate 1, then ``steps`` PGD
    iterations with step ``alpha * eps / steps`` (or ``step_size``). For each sample the
    last correctly classified iterate and the first misclassified one form an adjacent
    pair; ``n_binary`` bisections of that segment follow, and the wrong-side end of the
    final bracket is returned, so ``success`` implies the model misclassifies the returned
    point, and the bracket is ``|x_n2 - x_n1| / 2**n_binary`` wide.

    A sample whose iterates all stay correct (case-0, the paper's None) gets
    ``success=False`` and its last iterate. A sample misclassified at the start gets
    ``success=False`` and ``x`` unchanged; the result's ``clean_correct`` says which
    samples those are, so a caller can pass a whole batch and use BPGD's own split (as
    IMA's Algorithm 1 does). A sample costs no forward or backward pass after its first
    misclassified iterate.
    eps: float or (B,) tensor (IMA passes its per-sample margins). clean_output: the
    model's eval-mode output on ``x`` when the caller already has it (IMA's training pass
    of a model that computes the same in both modes); it replaces the clean pass.
    """
    task, eps, bounds, step_size = check_attack_inputs(
        x, y, eps=eps, norm=norm, steps=steps, bounds=bounds, task=task, loss=loss,
        alpha=alpha, step_size=step_size,
    )
    check_int("n_binary", n_binary, low=0)
    if step_size is None:
        step_size = alpha * eps / steps
    x = x.detach()
    out_x = x.clone()
    success = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    with eval_mode(model):
        clean_out = clean_pass(model, task, x, y, clean_output)
        clean_correct = task.correct(clean_out, y)
        idx = clean_correct.nonzero().squeeze(1)
        if idx.numel() == 0:
            return AttackResult(out_x, success, clean_correct)
        xs, ys, eps_s = x[idx], y[idx], eps[idx]
        start = random_start_point(xs, eps_s, norm, bounds) if random_start else xs
        path = ascend(
            model, task, xs, ys, start=start, eps=eps_s, step_size=step_size[idx], norm=norm,
            loss=loss, steps=steps, bounds=bounds, stop_on_success=True,
        )
        out_x[idx] = path.x
        crossed = path.fooled.nonzero().squeeze(1)
        if crossed.numel():
            _, wrong = bisect(
                model, task, path.last_correct[crossed], path.x[crossed], ys[crossed], n_binary
            )
            out_x[idx[crossed]] = wrong
            success[idx[crossed]] = True
    return AttackResult(out_x, success, clean_correct)


@torch.no_grad()
def bisect(model, task: Task, right: torch.Tensor, wrong: torch.Tensor, y: torch.Tensor, n: int):
    """Narrow the segments ``[right, wrong]`` by a factor ``2**n``, keeping ``right``
    correctly and ``wrong`` wrongly classified; returns the final ``(right, wrong)`` ends.

    Two halvings share one forward pass: the points at 1/4, 1/2 and 3/4 of every segment
    are classified in one batch, and the new bracket is the quarter between the last
    correct point and the first wrong one (an odd ``n`` ends with a single midpoint). On a
    segment that crosses the boundary once this is exactly ``n`` bisections, in
    ``ceil(n / 2)`` sequential passes instead of ``n``.
    """
    m = right.shape[0]
    while n > 0:
        k = 3 if n >= 2 else 1
        inner = [right + (j / (k + 1)) * (wrong - right) for j in range(1, k + 1)]
        ok = task.correct(model(torch.cat(inner)), y.repeat(k, *([1] * (y.dim() - 1))))
        ok = ok.reshape(k, m)
        # positions 0 (right end), 1..k (inner points), k + 1 (wrong end)
        points = torch.stack([right, *inner, wrong])
        first_wrong = torch.cat([ok, ok.new_zeros(1, m)]).float().argmin(dim=0) + 1
        batch = torch.arange(m, device=right.device)
        right, wrong = points[first_wrong - 1, batch], points[first_wrong, batch]
        n -= 2 if k == 3 else 1
    return right, wrong
