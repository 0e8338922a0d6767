"""Attacks on the divergence between the model's clean and perturbed outputs (TRADES)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import lp
from ..modes import eval_mode
from ..tasks import Task
from ..validation import check_real
from .base import AttackResult, check_attack_inputs, clean_pass
from .gradient import ascend

__all__ = ["kl_attack", "kl_divergence"]


def kl_divergence(clean: torch.Tensor, perturbed: torch.Tensor) -> torch.Tensor:
    """Per-sample ``KL(softmax(clean) || softmax(perturbed))``, shape ``(B,)``.

    clean, perturbed: logits ``(B, C, ...)``; the softmax is over dim 1 (the classes) and
    the divergence is summed over any further dimensions (pixels of a segmentation map).
    This is TRADES's robust term: ``nn.KLDivLoss(log_softmax(perturbed), softmax(clean))``
    summed per sample. Gradients flow through both arguments.
    """
    log_p = F.log_softmax(clean, dim=1)
    log_q = F.log_softmax(perturbed, dim=1)
    return F.kl_div(log_q, log_p, reduction="none", log_target=True).flatten(1).sum(1)


def kl_attack(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps,
    norm: str = "l2",
    steps: int = 20,
    alpha: float = 4.0,
    step_size=None,
    start_std: float = 0.001,
    bounds=(0.0, 1.0),
    task: Task | None = None,
    clean_output: torch.Tensor | None = None,
) -> AttackResult:
    """Projected gradient ascent on ``KL(f(x) || f(x'))`` inside the ``eps``-ball (TRADES).

    The inner maximisation of TRADES (Zhang et al. 2019): ``x'`` maximises the divergence
    of the model's output at ``x'`` from its output at the clean ``x``; the ascent does not
    use the label. x: (B, ...) inputs inside ``bounds`` (None = unbounded); y: targets,
    used only to check them and to report ``success``; eps: float or (B,) radii; step
    ``alpha * eps / steps`` unless ``step_size`` (float or (B,)) is given.

    The ascent starts at ``x + start_std * N(0, I)`` (the authors' start: the divergence
    has a zero gradient at ``x`` itself, its minimum), projected into the ball and the
    bounds; each of the ``steps`` iterations takes a step along ``lp.ascent_direction``,
    projects onto the ball and clips to the bounds. The result is the last iterate;
    ``success`` is True where the model misclassifies it. The model runs in eval mode (as
    in the authors' code), its modes are restored, and parameter ``.grad`` is never
    touched (gradients are taken with ``torch.autograd.grad``). clean_output: the
    model's eval-mode output on ``x`` when the caller already has it (TRADES' training
    pass of a model that computes the same in both modes); it replaces the clean pass.
    """
    task, eps, bounds, step_size = check_attack_inputs(
        x, y, eps=eps, norm=norm, steps=steps, bounds=bounds, task=task, alpha=alpha,
        step_size=step_size,
    )
    start_std = check_real("start_std", start_std, low=0.0)
    if step_size is None:
        step_size = alpha * eps / steps
    x = x.detach()
    with eval_mode(model):
        clean = clean_pass(model, task, x, y, clean_output)
        noise = start_std * torch.randn_like(x)
        start = lp.clip_to_bounds(x + lp.project(noise, eps, norm, validate=False), bounds)
        path = ascend(
            model, task, x, y, start=start, eps=eps, step_size=step_size, norm=norm,
            loss=None, steps=steps, bounds=bounds, stop_on_success=False,
            objective=lambda out, ids: kl_divergence(clean[ids], out),
        )
    return AttackResult(path.x, path.fooled)
