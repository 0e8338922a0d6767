"""Vanilla adversarial training ("adv eps" in the paper; Eq. 2)."""

from __future__ import annotations

from dataclasses import dataclass

from ..attacks import pgd
from .base import METHODS, Method, StepOutput, check_attack_settings

__all__ = ["VanillaAdversarial"]


@METHODS.register("adv")
class VanillaAdversarial(Method):
    """Train on ``(L_ce(x) + L_ce(x_eps)) / 2`` (Eq. 2), each term a batch mean.

    ``x_eps`` is the last iterate of ``steps``-step PGD (20 in the paper) with random start
    and step ``alpha * eps / steps`` (alpha = 4), at the same fixed ``eps`` for every
    sample (Goodfellow et al. 2015; Kurakin et al. 2016). The attack ascends, and the
    terms are, the task's training loss: cross-entropy for classification, nnU-Net's
    Dice + cross-entropy for segmentation (the paper's replacement of cross-entropy there).
    """

    name = "adv"

    @dataclass(frozen=True)
    class Config:
        eps: float
        norm: str = "l2"
        steps: int = 20
        alpha: float = 4.0

        def __post_init__(self):
            check_attack_settings(self)

    def perturb(self, model, x, y):
        """The training points ``x_eps``: the last iterate of the method's PGD (a
        training loop of its own, e.g. nnU-Net's, calls this and applies Eq. 2 with its
        own loss)."""
        c = self.config
        return pgd(
            model, x, y, eps=c.eps, norm=c.norm, steps=c.steps, alpha=c.alpha,
            loss=self.task.losses[0], random_start=True, early_stop=False, bounds=self.bounds,
            task=self.task,
        )

    def __call__(self, model, x, y, index, epoch):
        attack = self.perturb(model, x, y)
        out = model(x)
        out_adv = model(attack.x)
        loss = (self.task.loss(out, y).mean() + self.task.loss(out_adv, y).mean()) / 2
        return StepOutput(loss, out.detach(), {"adv_fooled": float(attack.success.float().mean())})
