"""AutoAttack (Croce and Hein, ICML 2020): a fixed cascade of complementary attacks, each
run only on the samples every earlier one failed to fool, the result per sample the
worst case over all of them.

Versions (the authors' ``version=``):

* ``"standard"``: APGD-CE (untargeted APGD on the cross-entropy), APGD-T (APGD on the
  targeted DLR loss, once per target: the ``targets`` = 9 classes of highest clean logit
  after the true one), FAB-T (targeted FAB, the same targets) and Square (``square_queries``
  = 5000 queries); 100 iterations and one restart each.
* ``"rand"``, for randomised models: APGD-CE and APGD-DLR with expectation over
  transformation (each iterate's loss and gradient the mean over ``eot`` = 20 passes).

``attacks=`` runs a subset of :data:`COMPONENTS` in the order given instead.

Segmentation (the task decides; section 4 of the paper: a segmentation is correct when its
Dice is above the threshold, so "fooled" means Dice at or below it). The components are
the same attacks on the task's losses: ``apgd-ce`` is APGD on the segmentation form of
cross-entropy, nnU-Net's Dice + CE (``"dice_ce"``); ``apgd-margin`` APGD on the pixel
margin (the task's second attack loss, standing in for DLR, which has no per-image form);
``apgd-t`` the Dice-targeted APGD, descending Dice + CE towards two target maps in turn:
all background (erase the structure) and each pixel's runner-up class at the clean point;
``square`` Square on the soft Dice. FAB is a classifier's attack (it projects onto one
linearised decision boundary; a Dice threshold has none), so the segmentation versions
are ``standard``: APGD-CE, APGD-margin, APGD-T, Square, and ``rand``: APGD-CE and
APGD-margin with EOT. Every APGD run on a segmenter goes all its steps and returns its
lowest-Dice iterate; a sample's result is the point of lowest Dice any component found on
it (for the overlap metrics of appendix I).

Square needs images ``(B, C, H, W)``; on other inputs (2-D points, volumes) a version
leaves it out and the result says so (``skipped``); asking for it by name is an error.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from .. import lp
from ..choices import AUTOATTACK_COMPONENTS, AUTOATTACK_VERSIONS
from ..modes import eval_mode
from ..tasks import SegmentationTask, Task
from ..validation import check_choice, check_int
from .apgd import apgd
from .base import AttackResult, check_attack_inputs, clean_pass
from .fab import fab
from .square import square

__all__ = ["COMPONENTS", "VERSIONS", "AutoAttackResult", "autoattack", "check_attacks",
           "components_of"]

#: every component attack, by the authors' names, and each version's components for
#: classifiers (defined in :mod:`ima.choices`, which the command line reads without torch)
COMPONENTS = AUTOATTACK_COMPONENTS
VERSIONS = AUTOATTACK_VERSIONS
#: the components of each version for segmenters
SEGMENTATION_VERSIONS = {
    "standard": ("apgd-ce", "apgd-margin", "apgd-t", "square"),
    "rand": ("apgd-ce", "apgd-margin"),
}
#: passes averaged per APGD iterate in the ``rand`` version (the authors' ``eot_iter``)
RAND_EOT = 20


@dataclass
class AutoAttackResult(AttackResult):
    """:class:`AttackResult` plus the cascade's record: ``components`` run, in order;
    ``fooled_by`` (B,) the index in ``components`` of the first that fooled each sample
    (-1: none did, or the clean input was already wrong: see ``clean_correct``);
    ``seconds`` the time each component took; ``skipped`` components of the version left
    out, with the reason."""

    components: tuple[str, ...] = ()
    fooled_by: torch.Tensor | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def check_attacks(attacks) -> list[str]:
    """``attacks`` as a list after checking it is a non-empty list of distinct names out
    of :data:`COMPONENTS`."""
    if isinstance(attacks, str) or not isinstance(attacks, (list, tuple)) or not attacks:
        raise ValueError(f"attacks must be a non-empty list of {', '.join(COMPONENTS)}, "
                         f"got {attacks!r}")
    for name in attacks:
        check_choice("attack", name, COMPONENTS)
    if len(set(attacks)) != len(attacks):
        raise ValueError(f"attacks lists a component twice: {list(attacks)}")
    return list(attacks)


def components_of(version: str, task: Task, x_shape, attacks=None):
    """The components to run, in order, and those of the version left out (name ->
    reason): ``attacks`` when given (checked), else the version's for the task."""
    check_choice("version", version, tuple(VERSIONS))
    segmentation = isinstance(task, SegmentationTask)
    images = len(x_shape) == 4
    if attacks is not None:
        attacks = check_attacks(attacks)
        if segmentation and ("fab-t" in attacks or "apgd-dlr" in attacks):
            raise ValueError("fab-t and apgd-dlr attack classifiers; a segmenter's components "
                             "are apgd-ce, apgd-margin, apgd-t and square")
        if "square" in attacks and not images:
            raise ValueError(f"square needs images (B, C, H, W), got inputs of shape "
                             f"{tuple(x_shape)}")
        return tuple(attacks), {}
    chosen = (SEGMENTATION_VERSIONS if segmentation else VERSIONS)[version]
    skipped = {} if images or "square" not in chosen else {
        "square": f"needs images (B, C, H, W), the inputs have shape {tuple(x_shape)}"}
    return tuple(c for c in chosen if c not in skipped), skipped


def autoattack(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps,
    norm: str = "linf",
    version: str = "standard",
    attacks=None,
    steps: int = 100,
    targets: int = 9,
    square_queries: int = 5000,
    eot: int | None = None,
    cascade: bool = True,
    bounds=(0.0, 1.0),
    task: Task | None = None,
) -> AutoAttackResult:
    """AutoAttack in the ``eps``-ball (L2 or Linf; ``eps`` a float or one per sample); see
    the module docstring for the versions and the segmentation components.

    ``steps``: iterations of each APGD and FAB run; ``targets``: target classes of APGD-T
    and FAB-T (at most the number of classes minus one); ``eot``: passes per APGD iterate
    (default: 20 for ``rand``, 1 otherwise). Returns each sample's adversarial point
    (``success``), or for a robust classification sample its clean input and for a robust
    segmentation its lowest-Dice point; a sample wrong on the clean input counts as
    fooled (``success``, ``clean_correct`` False) and is not attacked.

    ``cascade=False`` runs every component on every sample, clean-wrong ones too (the
    robustness verdicts are the same; for a segmenter each sample's point is then the
    lowest Dice over all components, as the evaluation's overlap metrics need).
    """
    task, eps, bounds, _ = check_attack_inputs(x, y, eps=eps, norm=norm, steps=steps,
                                               bounds=bounds, task=task)
    check_int("targets", targets, low=1)
    check_int("square_queries", square_queries, low=1)
    components, skipped = components_of(version, task, x.shape, attacks)
    if not isinstance(cascade, bool):
        raise TypeError(f"cascade must be True or False, got {cascade!r}")
    eot = (RAND_EOT if version == "rand" else 1) if eot is None else check_int("eot", eot,
                                                                                 low=1)
    x = x.detach()
    settings = dict(norm=norm, steps=steps, targets=targets, queries=square_queries, eot=eot,
                    bounds=bounds, task=task)
    with eval_mode(model):
        out = clean_pass(model, task, x, y)
        state = Cascade(model, x, y, out, task)
        for i, name in enumerate(components):
            idx = (state.robust if cascade else torch.ones_like(state.robust)).nonzero()[:, 0]
            if idx.numel() == 0:
                break
            start = time.perf_counter()
            r = RUNNERS[name](model, x[idx], y[idx], eps[idx], out[idx], **settings)
            state.update(idx, r, i)
            state.seconds[name] = time.perf_counter() - start
    return AutoAttackResult(state.x_adv, ~state.robust, clean_correct=state.clean,
                            components=components, fooled_by=state.fooled_by,
                            seconds=state.seconds, skipped=skipped)


class Cascade:
    """The per-sample state of one AutoAttack run: robust so far, the point to return,
    which component fooled it, and for segmentation the lowest Dice found."""

    def __init__(self, model, x, y, out, task):
        self.model, self.y, self.task = model, y, task
        self.clean = task.correct(out, y)
        self.robust = self.clean.clone()
        self.x_adv = x.clone()
        self.fooled_by = torch.full((len(x),), -1, dtype=torch.long, device=x.device)
        self.seconds: dict[str, float] = {}
        self.segmentation = isinstance(task, SegmentationTask)
        self.dice = task.dice(out, y) if self.segmentation else None

    def update(self, idx, r: AttackResult, i: int) -> None:
        """Take a component's result on the samples ``idx``."""
        first = r.success & self.robust[idx]  # fooled now, robust until now
        if self.segmentation:
            with torch.no_grad():
                dice = self.task.dice(self.model(r.x), self.y[idx])
            lower = self.task.lower_dice(dice, self.dice[idx])
            self.x_adv[idx[lower]] = r.x[lower]
            self.dice[idx[lower]] = dice[lower]
        else:
            self.x_adv[idx[first]] = r.x[first]
        self.robust[idx[first]] = False
        self.fooled_by[idx[first]] = i


def _ranked(out: torch.Tensor, y: torch.Tensor, targets: int) -> list[torch.Tensor]:
    """The target classes of APGD-T and FAB-T: per sample the ``targets`` classes of
    highest clean logit other than the true one, one (B,) tensor per rank."""
    order = out.argsort(dim=1, descending=True)
    others = order[order != y[:, None]].view(len(y), -1)
    return [others[:, k] for k in range(min(targets, others.shape[1]))]


def _segmentation_targets(out: torch.Tensor) -> list[torch.Tensor]:
    """The target maps of the Dice-targeted APGD: all background, and each pixel's
    runner-up class at the clean point."""
    runner_up = out.argsort(dim=1, descending=True)[:, 1]
    return [torch.zeros_like(runner_up), runner_up]


def _one_by_one(attack, x, y, eps, targets):
    """Run ``attack(x, y, eps, target)`` for each target in turn on the samples not yet
    fooled; the first success per sample is kept."""
    point, fooled = x.clone(), torch.zeros(len(x), dtype=torch.bool, device=x.device)
    for target in targets:
        idx = (~fooled).nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        r = attack(x[idx], y[idx], eps[idx], target[idx])
        point[idx[r.success]] = r.x[r.success]
        fooled[idx[r.success]] = True
    return AttackResult(point, fooled)


def _apgd_loss(loss_of):
    def run(model, x, y, eps, out, *, norm, steps, eot, bounds, task, **_):
        return apgd(model, x, y, eps=eps, norm=norm, steps=steps, loss=loss_of(task),
                    eot=eot, bounds=bounds, task=task)
    return run


def _apgd_t(model, x, y, eps, out, *, norm, steps, targets, eot, bounds, task, **_):
    if isinstance(task, SegmentationTask):
        return _segmentation_targeted(model, x, y, eps, out, norm=norm, steps=steps, eot=eot,
                                      bounds=bounds, task=task)
    return _one_by_one(
        lambda xs, ys, es, t: apgd(model, xs, ys, eps=es, norm=norm, steps=steps,
                                   loss="dlr", target=t, eot=eot, bounds=bounds, task=task),
        x, y, eps, _ranked(out, y, targets))


def _segmentation_targeted(model, x, y, eps, out, *, norm, steps, eot, bounds, task):
    """Dice-targeted APGD on every sample for each target map; per sample the point of
    lowest Dice (a segmentation run is not stopped early: the overlap metrics need the
    worst point)."""
    best, dice = None, None
    for target in _segmentation_targets(out):
        r = apgd(model, x, y, eps=eps, norm=norm, steps=steps, loss="dice_ce", target=target,
                 eot=eot, bounds=bounds, task=task)
        with torch.no_grad():
            new = task.dice(model(r.x), y)
        if best is None:
            best, dice = r.x, new
            continue
        lower = task.lower_dice(new, dice)
        best = torch.where(lp.expand_as_batch(lower, best), r.x, best)
        dice = torch.where(lower, new, dice)
    return AttackResult(best, ~task.meets_threshold(dice))


def _fab_t(model, x, y, eps, out, *, norm, steps, targets, bounds, task, **_):
    return _one_by_one(
        lambda xs, ys, es, t: fab(model, xs, ys, target=t, eps=es, norm=norm, steps=steps,
                                  bounds=bounds, task=task),
        x, y, eps, _ranked(out, y, targets))


def _square(model, x, y, eps, out, *, norm, queries, bounds, task, **_):
    return square(model, x, y, eps=eps, norm=norm, queries=queries, bounds=bounds, task=task)


#: how each component runs on the samples still robust
RUNNERS = {
    "apgd-ce": _apgd_loss(lambda task: task.attack_losses[0]),
    "apgd-dlr": _apgd_loss(lambda task: "dlr"),
    "apgd-margin": _apgd_loss(lambda task: "margin"),
    "apgd-t": _apgd_t,
    "fab-t": _fab_t,
    "square": _square,
}
