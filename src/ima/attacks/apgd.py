"""Auto-PGD (APGD, Croce and Hein 2020): PGD with momentum and a step size that halves
when progress stalls, with the cross-entropy, the DLR or any of the task's losses,
untargeted or targeted, for classifiers and segmenters, optionally with expectation over
transformation (EOT) for randomised models."""

from __future__ import annotations

import torch

from .. import lp
from ..modes import eval_mode
from ..tasks import ClassificationTask, SegmentationTask, Task
from ..validation import check_int, check_real
from .base import AttackResult, check_attack_inputs, probe
from .working_set import WorkingSet

__all__ = ["apgd", "dlr_loss"]

def dlr_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None):
    """The difference-of-logits-ratio loss (B,), to ascend (Croce and Hein 2020, Eq. 6/7).

    Untargeted: ``-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)``; targeted at ``t``:
    ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)``, with ``z_pi1 >= z_pi2 >= ...`` the
    sorted logits (1e-12 keeps the ratio finite). The ratio needs 3 classes (targeted: 4);
    with fewer, departing from the authors (whose code needs them), the denominator is
    the widest one the classes allow: ``z_pi1 - z_pi3`` for a targeted loss on 3 classes,
    and none (the plain logit difference, whose sign is the same) on 2 classes, where any
    ratio of two logit differences would be constant."""
    ranked, _ = logits.sort(dim=1, descending=True)
    classes = logits.shape[1]
    z_y = logits.gather(1, y[:, None])[:, 0]
    if target is None:
        z_t = logits.scatter(1, y[:, None], float("-inf")).amax(dim=1)
    else:
        z_t = logits.gather(1, target[:, None])[:, 0]
    if classes < 3:
        return z_t - z_y
    if target is None or classes < 4:
        scale = ranked[:, 0] - ranked[:, 2]
    else:
        scale = ranked[:, 0] - (ranked[:, 2] + ranked[:, 3]) / 2
    return -(z_y - z_t) / (scale + 1e-12)


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
    eot: int = 1,
    bounds=(0.0, 1.0),
    task: Task | None = None,
) -> AttackResult:
    """APGD (Croce and Hein, ICML 2020, Algorithm 1) in the ``eps``-ball (L2 or Linf).

    Step size ``2 eps`` to start; each step ``z = P(x_k + eta * d(grad))`` (``d``: the
    norm's ascent direction) and ``x_{k+1} = P(x_k + momentum (z - x_k) + (1 - momentum)
    (x_k - x_{k-1}))``, the first step without momentum. At the checkpoints of
    :func:`checkpoints` the step halves, and the iterate restarts from the point of
    highest loss, when at most ``rho`` of the steps since the last checkpoint raised
    the loss (the authors' code; the paper writes "fewer than"), or when neither the step
    nor the highest loss changed since then.

    ``loss``: ``"dlr"`` (:func:`dlr_loss`, classification) or one of the task's losses
    (``"ce"``, ``"margin"``; for segmentation ``"dice_ce"``, ``"ce"``, ``"margin"``).
    ``target``: a targeted attack, one target per sample, shaped like ``y`` (a class, or
    for segmentation a label map): ``"dlr"`` ascends the targeted DLR loss, any other loss
    is descended towards the target (for segmentation with ``"dice_ce"``: the Dice-targeted
    attack). ``eot``: the loss and gradient of each iterate are the mean over ``eot``
    forward/backward passes (expectation over transformation, for randomised models).

    Classification: a sample's result is its first misclassified iterate (``success``),
    where it leaves the working set, else its point of highest loss. Segmentation (the
    task decides): every sample runs all ``steps`` and its result is its iterate of lowest
    Dice (the overlap metrics of appendix I need the worst point, not the first wrong
    one); ``success`` where that point is not correct (Dice at or below the threshold).
    Departure from the authors' code: the random start is uniform in the ball for L2 too
    (theirs lies on the sphere).
    """
    task, eps, bounds, _ = check_attack_inputs(x, y, eps=eps, norm=norm, steps=steps,
                                               bounds=bounds, task=task)
    objective = _objective(task, loss, target, y)
    check_real("rho", rho, low=0.0, high=1.0)
    check_real("momentum", momentum, low=0.0, high=1.0)
    check_int("eot", eot, low=1)
    x = x.detach()
    start = x + (lp.sample_ball(x, eps, norm) if random_start else 0.0)
    start = lp.clip_to_bounds(start, bounds)
    out_x, fooled = start.clone(), torch.zeros(len(x), dtype=torch.bool, device=x.device)
    s = WorkingSet(ids=torch.arange(len(x), device=x.device), x0=x, y=y, eps=eps, cur=start,
                   step=2 * eps, prev=start)
    if target is not None:
        s["t"] = target
    iterations = _Iterations(model, task, objective, steps, norm, bounds, rho, momentum,
                             eot)
    with eval_mode(model):
        s = iterations.iterate(s, out_x, fooled)
    if isinstance(task, SegmentationTask):
        return AttackResult(s["worst_x"], ~task.meets_threshold(s["dice"]))
    out_x[s["ids"]] = s["best_x"]
    return AttackResult(out_x, fooled)


def _objective(task: Task, loss: str, target, y):
    """The per-sample value APGD ascends, as a function of ``(output, working set)``."""
    segmentation = isinstance(task, SegmentationTask)
    if not segmentation and not isinstance(task, ClassificationTask):
        raise TypeError(f"apgd attacks classifiers and segmenters, got task {type(task).__name__}")
    if loss == "dlr" and segmentation:
        raise ValueError("loss 'dlr' is a classification loss; for segmentation use one of "
                         + ", ".join(repr(n) for n in task.losses))
    if loss != "dlr":
        task.check_loss(loss)
    if target is not None and (not isinstance(target, torch.Tensor)
                               or target.shape != y.shape or target.dtype != y.dtype):
        raise ValueError(f"target must be one target per sample shaped like y {tuple(y.shape)}")
    if loss == "dlr":
        return lambda out, s: dlr_loss(out, s["y"], s.get("t"))
    if target is None:
        return lambda out, s: task.loss(out, s["y"], loss)
    return lambda out, s: -task.loss(out, s["t"], loss)


class _Iterations:
    """The APGD iterations of one call (the fixed settings; the state is the working
    set): classification samples leave the working set once fooled."""

    def __init__(self, model, task, objective, steps, norm, bounds, rho, momentum, eot):
        self.model, self.task, self.objective, self.steps = model, task, objective, steps
        self.norm, self.bounds, self.rho, self.momentum, self.eot = (
            norm, bounds, rho, momentum, eot)
        self.segmentation = isinstance(task, SegmentationTask)
        self.marks = set(checkpoints(steps))

    def value(self, s: WorkingSet, first: bool):
        """Loss (B,), misclassified (B,) and gradient at the working set's iterates, the
        loss and gradient averaged over ``eot`` passes; for segmentation also tracks the
        lowest-Dice iterate."""
        seen = {}

        def value(out):
            seen["out"] = out.detach()
            return self.objective(out, s)

        total, grads = 0.0, 0.0
        for i in range(self.eot):
            _, wrong, grad, values = probe(self.model, self.task, s["cur"], s["y"],
                                           value=value, first=first and i == 0, values=True)
            total, grads = total + values, grads + grad
        if self.segmentation:
            self.track_dice(s, seen["out"], first)
        return total / self.eot, wrong, grads / self.eot

    def track_dice(self, s: WorkingSet, out, first: bool) -> None:
        dice = self.task.dice(out, s["y"])
        if first:
            s["dice"], s["worst_x"] = dice, s["cur"].clone()
            return
        lower = self.task.lower_dice(dice, s["dice"])
        s["dice"] = torch.where(lower, dice, s["dice"])
        s["worst_x"] = torch.where(lp.expand_as_batch(lower, s["cur"]), s["cur"], s["worst_x"])

    def iterate(self, s: WorkingSet, out_x, fooled) -> WorkingSet:
        for k in range(self.steps + 1):
            value, wrong, grad = self.value(s, k == 0)
            self.remember(s, k, value, grad)
            if wrong.any() and not self.segmentation:
                out_x[s["ids"][wrong]] = s["cur"][wrong]
                fooled[s["ids"][wrong]] = True
                s, grad = s.keep(~wrong), grad[~wrong]
                if s.size == 0:
                    break
            if k == self.steps:
                break
            if k in self.marks:
                stalled = _checkpoint(s, self.rho, k, self.marks)
                # a restart continues from the highest-loss point, with its gradient
                grad = torch.where(lp.expand_as_batch(stalled, grad), s["best_grad"], grad)
            _step(s, grad, self.norm, self.bounds, self.momentum if k > 0 else 1.0)
        return s

    @staticmethod
    def remember(s: WorkingSet, k: int, value, grad) -> None:
        """Count the steps that raised the loss and keep the highest-loss point."""
        if k == 0:
            s["best"], s["best_x"], s["best_grad"] = value.clone(), s["cur"].clone(), grad
            s["last_best"], s["last_step"] = value.clone(), s["step"].clone()
            s["gains"] = torch.zeros_like(value, dtype=torch.long)
            s["value"] = value
            return
        s["gains"] += (value > s["value"]).long()
        s["value"] = value
        higher = value > s["best"]
        wide = lp.expand_as_batch(higher, grad)
        s["best"] = torch.where(higher, value, s["best"])
        s["best_x"] = torch.where(wide, s["cur"], s["best_x"])
        s["best_grad"] = torch.where(wide, grad, s["best_grad"])


def _checkpoint(s: WorkingSet, rho: float, k: int, marks: set[int]) -> torch.Tensor:
    """Halve the step (and restart from the highest-loss point) where progress stalled;
    return where it did (B,)."""
    earlier = [m for m in marks if m < k]
    span = k - (max(earlier) if earlier else 0)
    stalled = (s["gains"] <= rho * span) | (
        (s["step"] == s["last_step"]) & (s["best"] == s["last_best"]))
    s["last_step"], s["last_best"] = s["step"].clone(), s["best"].clone()
    s["step"] = torch.where(stalled, s["step"] / 2, s["step"])
    wide = lp.expand_as_batch(stalled, s["cur"])
    # the momentum of the next step still points from the iterate before the last step
    # (the authors' code keeps it; resetting it too would zero the momentum)
    s["cur"] = torch.where(wide, s["best_x"], s["cur"])
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
