"""What every attack shares: the result type and the checks of its inputs."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import lp
from ..tasks import Task, get_task
from ..validation import check_bounds, check_finite_tensor, check_int, check_real

__all__ = ["AttackResult", "check_attack_inputs", "clean_pass", "probe"]


@dataclass
class AttackResult:
    """Output of an attack on a batch.

    x: the perturbed inputs, same shape as the clean batch, inside the eps-ball and the
        bounds; ``success``: bool ``(B,)``, True where the model misclassifies ``x`` (for
        BPGD: a boundary point was found and ``x`` is its wrong-side end);
        ``clean_correct``: bool ``(B,)``, where the attack judged the clean input correct
        (set by attacks that classify it anyway, such as BPGD; else None);
        ``correct_steps``: int ``(B,)``, for PGD the number of iterates a gradient step
        was taken from that were still classified correctly (else None).
    """

    x: torch.Tensor
    success: torch.Tensor
    clean_correct: torch.Tensor | None = None
    correct_steps: torch.Tensor | None = None


def check_attack_inputs(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps,
    norm: str,
    steps: int,
    bounds,
    task: Task | None,
    loss: str | None = None,
    alpha: float | None = None,
    step_size=None,
) -> tuple[Task, torch.Tensor, tuple[float, float] | None, torch.Tensor | None]:
    """Validate an attack's inputs; return ``(task, eps (B,), bounds, step_size (B,) or None)``.

    Labels are checked against the model's output by the task on the first forward pass.
    """
    check_finite_tensor("x", x)
    if x.dim() < 1 or x.shape[0] == 0:
        raise ValueError(f"x must be a non-empty batch of shape (B, ...), got {tuple(x.shape)}")
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"y must be a torch.Tensor, got {type(y).__name__}")
    if y.dim() == 0 or y.shape[0] != x.shape[0]:
        raise ValueError(
            f"x and y must hold the same number of samples, got x of shape {tuple(x.shape)} "
            f"and y of shape {tuple(y.shape)}"
        )
    lp.check_norm(norm)
    check_int("steps", steps, low=1)
    task = get_task(task)
    if loss is not None:
        task.check_loss(loss)
    if alpha is not None:
        check_real("alpha", alpha, low=0.0, low_open=True)
    eps = lp.per_sample_eps(eps, x)
    if step_size is not None:
        step_size = lp.per_sample_eps(step_size, x, name="step_size")
    bounds = check_bounds(bounds)
    if bounds is not None:
        low, high = float(x.min()), float(x.max())
        if low < bounds[0] or high > bounds[1]:
            raise ValueError(
                f"x must lie inside bounds {bounds}, got values in [{low}, {high}]; "
                "pass bounds=None for unbounded data"
            )
    return task, eps, bounds, step_size


def clean_pass(model, task: Task, x: torch.Tensor, y: torch.Tensor,
               clean_output: torch.Tensor | None = None) -> torch.Tensor:
    """The model's output on the clean ``x`` without a graph (the caller puts the model in
    eval mode), or the caller's ``clean_output`` (detached, one row per sample) when it
    already has it; the targets ``y`` are checked against it."""
    if clean_output is None:
        with torch.no_grad():
            out = model(x)
    elif not isinstance(clean_output, torch.Tensor) or clean_output.shape[:1] != x.shape[:1]:
        rows = clean_output.shape[0] if isinstance(clean_output, torch.Tensor) else "no"
        raise ValueError(f"clean_output has {rows} rows, x {x.shape[0]}")
    else:
        out = clean_output.detach()
    task.check_target(out, y)
    return out


def probe(model, task: Task, point: torch.Tensor, y: torch.Tensor, *, value=None,
          first: bool = False, values: bool = False):
    """One forward pass at ``point`` serving both what an attack iteration needs: which
    samples the model misclassifies there, and (when ``value`` is given: a function of the
    output giving per-sample values to ascend) the gradient of their sum with respect to
    ``point``. ``first``: also check the targets against the output. Returns
    ``(point detached, wrong, gradient or None)``, and with ``values`` also the per-sample
    values (detached) as a fourth element."""
    point = point.detach().requires_grad_(value is not None)
    with torch.set_grad_enabled(value is not None):
        out = model(point)
        if first:
            task.check_target(out, y)
        wrong = ~task.correct(out.detach(), y)
        ascended = None if value is None else value(out)
        grad = None if value is None else torch.autograd.grad(ascended.sum(), point)[0]
    if values:
        return point.detach(), wrong, grad, None if ascended is None else ascended.detach()
    return point.detach(), wrong, grad
