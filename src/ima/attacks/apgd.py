"""Auto-PGD (APGD, Croce and Hein 2020): PGD with momentum and a step size that halves
when progress stalls, with the cross-entropy or the DLR loss, untargeted or targeted."""

from __future__ import annotations

import torch

from .. import lp
from ..modes import eval_mode
from ..tasks import ClassificationTask, Task
from ..validation import check_choice, check_int, check_real
from .base import AttackResult, check_attack_inputs, probe
from .working_set import WorkingSet

__all__ = ["apgd", "dlr_loss"]

LOSSES = ("ce", "dlr")


def dlr_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None):
    """The difference-of-logits-ratio loss (B,), to ascend (Croce and Hein 2020, Eq. 6/7).

    Untargeted: ``-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)``; targeted at ``t``:
    ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)``, with ``z_pi1 >= z_pi2 >= ...`` the
    sorted logits (1e-12 keeps the ratio finite). Needs 3 classes (targeted: 4)."""
    ranked, _ = logits.sort(dim=1, descending=True)
    z_y = logits.gather(1, y[:, None])[:, 0]
    if target is None:
        others = logits.scatter(1, y[:, None], float("-inf")).amax(dim=1)
        return -(z_y - others) / (ranked[:, 0] - ranked[:, 2] + 1e-12)
    z_t = logits.gather(1, target[:, None])[:, 0]
    return -(z_y - z_t) / (ranked[:, 0] - (ranked[:, 2] + ranked[:, 3]) / 2 + 1e-12)


def checkpoints(steps: int) -> list[int]:
    """The iterations at which APGD may halve its step: the first after ``0.22 steps``,
    each interval ``0.03 steps`` shorter than the one before, but at least ``0.06 steps``
    (the paper's ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)`` in whole iterations,
    as the authors count them: 22, 41, 57, 70, 80, 87, 93, 99 for 100 steps)."""
    interval = max(int(0.22 * steps), 1)
    shorter, shortest = max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)
    marks, k = [], interval
    while k < steps:
        marks.append(k)
        interval = max(interval - shorter, shortest)
        k += interval
    return marks


def apgd(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps,
    norm: str = "linf",
    steps: int = 100,
    loss: str = "ce",
    target: torch.Tensor | None = None,
    random_start: bool = True,
    rho: float = 0.75,
    momentum: float = 0.75,
    bounds=(0.0, 1.0),
    task: Task | None = None,
) -> AttackResult:
    """APGD (Croce and Hein, ICML 2020, Algorithm 1) in the ``eps``-ball (L2 or Linf).

    Step size ``2 eps`` to start; each step ``z = P(x_k + eta * d(grad))`` (``d``: the
    norm's ascent direction) and ``x_{k+1} = P(x_k + momentum (z - x_k) + (1 - momentum)
    (x_k - x_{k-1}))``, the first step without momentum. At the checkpoints of
    :func:`checkpoints` the step halves, and the iterate restarts from the point of
    highest loss, when fewer than ``rho`` of the steps since the last checkpoint raised
    the loss, or when neither the step nor the highest loss changed since then.
    ``loss``: ``"ce"`` or ``"dlr"`` (:func:`dlr_loss`); ``target`` (B,): classes of a
    targeted DLR attack. Classification only. A sample's result is its first
    misclassified iterate (``success``), where it leaves the working set, else its
    point of highest loss. Departure from the authors' code: the random start is
    uniform in the ball for L2 too (theirs lies on the sphere).
    """
    task, eps, bounds, _ = check_attack_inputs(x, y, eps=eps, norm=norm, steps=steps,
                                               bounds=bounds, task=task)
    if not isinstance(task, ClassificationTask):
        raise TypeError(f"apgd attacks classifiers, got task {type(task).__name__}")
    check_choice("loss", loss, LOSSES)
    check_real("rho", rho, low=0.0, high=1.0)
    check_real("momentum", momentum, low=0.0, high=1.0)
    check_int("steps", steps, low=1)
    if target is not None and (loss != "dlr" or target.shape != y.shape):
        raise ValueError("target needs loss='dlr' and one class per sample")
    x = x.detach()
    start = x + (lp.sample_ball(x, eps, norm) if random_start else 0.0)
    start = lp.clip_to_bounds(start, bounds)
    out_x, fooled = start.clone(), torch.zeros(len(x), dtype=torch.bool, device=x.device)
    s = WorkingSet(ids=torch.arange(len(x), device=x.device), x0=x, y=y, eps=eps, cur=start,
                   step=2 * eps, prev=start)
    if target is not None:
        s["t"] = target
    with eval_mode(model):
        s = _run(model, task, s, steps, norm, loss, bounds, rho, momentum, out_x, fooled)
    out_x[s["ids"]] = s["best_x"]
    return AttackResult(out_x, fooled)


def _value(model, s: WorkingSet, loss: str, first: bool, task: Task):
    """Loss (B,), misclassified (B,) and gradient at the working set's iterates."""
    yc, target = s["y"], s.get("t")
    if loss == "ce":
        def value(out):
            return task.loss(out, yc, "ce")
    else:
        def value(out):
            return dlr_loss(out, yc, target)
    _, wrong, grad, values = probe(model, task, s["cur"], yc, value=value, first=first,
                                   values=True)
    return values, wrong, grad


def _run(model, task, s: WorkingSet, steps, norm, loss, bounds, rho, momentum, out_x,
         fooled) -> WorkingSet:
    """The APGD iterations; fooled samples leave the working set at once."""
    marks = set(checkpoints(steps))
    for k in range(steps + 1):
        value, wrong, grad = _value(model, s, loss, k == 0, task)
        if k == 0:
            s["best"], s["best_x"], s["best_grad"] = value.clone(), s["cur"].clone(), grad
            s["last_best"], s["last_step"] = value.clone(), s["step"].clone()
            s["gains"] = torch.zeros_like(value, dtype=torch.long)
            s["value"] = value
        else:
            s["gains"] += (value > s["value"]).long()
            s["value"] = value
            higher = value > s["best"]
            wide = lp.expand_as_batch(higher, grad)
            s["best"] = torch.where(higher, value, s["best"])
            s["best_x"] = torch.where(wide, s["cur"], s["best_x"])
            s["best_grad"] = torch.where(wide, grad, s["best_grad"])
        if wrong.any():
            out_x[s["ids"][wrong]] = s["cur"][wrong]
            fooled[s["ids"][wrong]] = True
            s, grad = s.keep(~wrong), grad[~wrong]
            if s.size == 0:
                break
        if k == steps:
            break
        if k in marks:
            stalled = _checkpoint(s, rho, k, marks)
            # a restart continues from the highest-loss point, with its gradient
            grad = torch.where(lp.expand_as_batch(stalled, grad), s["best_grad"], grad)
        _step(s, grad, norm, bounds, momentum if k > 0 else 1.0)
    return s


def _checkpoint(s: WorkingSet, rho: float, k: int, marks: set[int]) -> torch.Tensor:
    """Halve the step (and restart from the highest-loss point) where progress stalled;
    return where it did (B,)."""
    earlier = [m for m in marks if m < k]
    span = k - (max(earlier) if earlier else 0)
    stalled = (s["gains"] < rho * span) | (
        (s["step"] == s["last_step"]) & (s["best"] == s["last_best"]))
    s["last_step"], s["last_best"] = s["step"].clone(), s["best"].clone()
    s["step"] = torch.where(stalled, s["step"] / 2, s["step"])
    wide = lp.expand_as_batch(stalled, s["cur"])
    s["cur"] = torch.where(wide, s["best_x"], s["cur"])
    s["prev"] = torch.where(wide, s["best_x"], s["prev"])
    s["gains"] = torch.zeros_like(s["gains"])
    s["value"] = torch.where(stalled, s["best"], s["value"])
    return stalled


def _step(s: WorkingSet, grad, norm, bounds, momentum: float) -> None:
    """``z = P(x + eta d)``, ``x' = P(x + m (z - x) + (1 - m)(x - x_prev))`` (in place)."""
    def project(point):
        return lp.clip_to_bounds(
            s["x0"] + lp.project(point - s["x0"], s["eps"], norm, validate=False), bounds)

    cur = s["cur"]
    z = project(cur + lp.expand_as_batch(s["step"], cur) * lp.ascent_direction(grad, norm))
    moved = project(cur + momentum * (z - cur) + (1 - momentum) * (cur - s["prev"]))
    s["prev"], s["cur"] = cur, moved
