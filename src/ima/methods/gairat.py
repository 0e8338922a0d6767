"""Geometry-aware instance-reweighted adversarial training (GAIRAT, Zhang et al. 2021)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..attacks import AttackResult, pgd
from ..validation import check_int, check_real
from .base import METHODS, Method, StepOutput, check_attack_settings
from .observe import clean_logits

__all__ = ["GAIRAT", "gair_weights"]


def gair_weights(kappa: torch.Tensor, *, steps: int, lam: float) -> torch.Tensor:
    """GAIRAT's "Tanh" instance weights for geometry values ``kappa`` (B,), summing to B.

    ``w_i = (1 + tanh(lam + 5 * (1 - 2 * kappa_i / steps))) / 2``, normalised to
    ``w * B / sum(w)``. ``kappa_i`` (0..steps) is the number of PGD iterates at which
    sample ``i`` was still classified correctly: a small ``kappa`` (near the boundary,
    easy to attack) gives a large weight. Computed as ``B * softmax(logsigmoid(2 z))``,
    which equals the formula (``(1 + tanh z) / 2 = sigmoid(2 z)``) and stays finite when
    every weight underflows (very negative ``lam``).
    """
    z = lam + 5.0 * (1.0 - 2.0 * kappa.to(torch.get_default_dtype()) / steps)
    return kappa.numel() * torch.softmax(F.logsigmoid(2.0 * z), dim=0)


@METHODS.register("gairat")
class GAIRAT(Method):
    """GAIRAT: adversarial cross-entropy, each sample weighted by its closeness to the boundary.

    Zhang, Zhu, Niu, Han, Sugiyama and Kankanhalli, "Geometry-aware instance-reweighted
    adversarial training", ICLR 2021. ``x'`` is the last iterate of ``steps``-step PGD
    from a uniform start in the ball (Madry's attack, the authors' ``GA_PGD``), which also
    counts ``kappa``, the iterates a step was taken from that the model still classified
    correctly (:attr:`~ima.attacks.AttackResult.correct_steps`). From epoch
    ``begin_epoch`` on (1-based, as in ``metrics.csv``) the loss is
    ``mean_i w_i * CE(f(x'_i), y_i)`` with the weights of :func:`gair_weights`
    (``sum_i w_i = B``); before it, the plain mean adversarial cross-entropy (standard
    adversarial training).

    Defaults: ``begin_epoch = epochs // 2`` (at least 1), as the IMA paper's appendix G.1
    (30 of 60 epochs, 50 of 100) and the authors (60 of 120); ``lam = -1.0`` held fixed
    (the authors' default ``Lambda`` with ``Lambda_schedule="fixed"``); ``steps = 10``
    and step ``alpha * eps / steps`` with ``alpha = 2.5``, i.e. ``eps / 4`` (the authors'
    CIFAR-10 setting: ten steps of 0.007, about a quarter of eps 0.031), unless
    ``step_size`` is given; L2, as every noise level in the IMA paper. A ``begin_epoch``
    after the last epoch gives standard adversarial training. Recommended optimiser (the
    authors' ``GAIRAT.py``, used by appendix G.1 for Fashion-MNIST, SVHN and CIFAR-10):
    SGD, lr 0.1, momentum 0.9, weight decay 2e-4, lr divided by 10 at 30% and by 100 at
    60% of the epochs for runs under 110 epochs (at 50% and 75% for longer ones); on Moons
    the paper uses Adam for every method.

    Departures from the authors' code: the exponent uses ``steps / 2`` where the authors
    use ``int(steps / 2)`` (the same for even ``steps``); the "linear" and "piecewise"
    Lambda schedules and the "Sigmoid"/"Discrete" weight functions are not offered.
    """

    name = "gairat"

    @dataclass(frozen=True)
    class Config:
        eps: float
        norm: str = "l2"
        steps: int = 10
        alpha: float = 2.5
        step_size: float | None = None
        random_start: bool = True
        lam: float = -1.0
        begin_epoch: int | None = None

        def __post_init__(self):
            check_attack_settings(self)
            check_real("lam", self.lam)
            if self.begin_epoch is not None:
                check_int("begin_epoch", self.begin_epoch, low=1)

    @classmethod
    def derive(cls, config, *, epochs):
        if config.begin_epoch is None:
            config = dataclasses.replace(config, begin_epoch=max(1, epochs // 2))
        return config

    def reweighting(self, epoch: int) -> bool:
        """Whether (0-based) ``epoch`` weights the samples (1-based epoch >= ``begin_epoch``)."""
        return check_int("epoch", epoch, low=0) + 1 >= self.config.begin_epoch

    def weights(self, kappa: torch.Tensor, epoch: int) -> torch.Tensor:
        """Per-sample loss weights (B,) in ``epoch``: :func:`gair_weights`, or all ones."""
        if not self.reweighting(epoch):
            return torch.ones(kappa.shape, device=kappa.device)
        return gair_weights(kappa, steps=self.config.steps, lam=self.config.lam)

    def attack(self, model, x, y) -> AttackResult:
        """PGD's last iterate and its ``correct_steps`` (kappa) for the batch."""
        c = self.config
        return pgd(
            model, x, y, eps=c.eps, norm=c.norm, steps=c.steps, alpha=c.alpha,
            step_size=c.step_size, random_start=c.random_start, early_stop=False,
            bounds=self.bounds, task=self.task,
        )

    def __call__(self, model, x, y, index, epoch):
        attack = self.attack(model, x, y)
        kappa = attack.correct_steps
        losses = self.task.loss(model(attack.x), y)
        weights = self.weights(kappa, epoch).to(losses.dtype)
        loss = (weights * losses).mean()
        logs = {
            "kappa": float(kappa.float().mean()),
            "weight_max": float(weights.max()),
            "adv_fooled": float(attack.success.float().mean()),
        }
        return StepOutput(loss, clean_logits(model, x), logs)
