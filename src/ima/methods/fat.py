"""Friendly adversarial training (FAT, Zhang et al. 2020): early-stopped PGD."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..attacks import AttackResult, pgd
from ..validation import check_int
from .base import METHODS, Method, StepOutput, check_attack_settings
from .observe import clean_logits

__all__ = ["FAT"]


@METHODS.register("fat")
class FAT(Method):
    """FAT: train on the mean cross-entropy of friendly adversarial data.

    Zhang, Xu, Han, Niu, Cui, Sugiyama and Kankanhalli, "Attacks which do not kill
    training make adversarial learning stronger", ICML 2020. The loss is
    ``mean_i CE(f(x~_i), y_i)`` over the friendly adversarial points ``x~`` alone (no
    clean term, as in the authors' ``FAT.py``). ``x~`` comes from early-stopped PGD
    (:func:`~ima.attacks.pgd` with ``early_stop=True``): a sample is attacked until
    ``tau + 1`` of its iterates were misclassified, then kept; one never misclassified
    keeps its last iterate. The attack starts at a uniform point of the ball
    (``random_start``, the authors' default).

    Self-adjusted ``tau`` (the authors' ``dynamictau``): ``tau`` in the first epoch,
    one more after each epoch listed in ``tau_adjust_epochs`` (1-based epoch numbers, as
    in ``metrics.csv``: ``[m]`` raises ``tau`` from epoch ``m + 1`` on). The authors
    train 120 epochs with ``tau`` 0 up to epoch 50, 1 up to epoch 90 and 2 after; the
    default keeps those fractions of any length: ``floor(epochs * 50 / 120)`` and
    ``floor(epochs * 90 / 120)`` (each at least 1), e.g. ``[12, 22]`` for 30 epochs and
    ``[25, 45]`` for 60. An empty list keeps ``tau`` fixed.

    Defaults: ``steps = 10`` (FAT's K) and step ``alpha * eps / steps`` with
    ``alpha = 2.5``, i.e. ``eps / 4`` (FAT's CIFAR-10 setting: ten steps of 0.007, about a
    quarter of eps 0.031), unless ``step_size`` is given; L2, as every noise level in the
    IMA paper. Recommended optimiser (FAT's ``FAT.py``, used by the IMA paper's appendix G.1 for
    Fashion-MNIST, SVHN and CIFAR-10): SGD, lr 0.1, momentum 0.9, weight decay 2e-4,
    lr divided by 10 at 50% and by 100 at 75% of the epochs (config: ``optim.name: sgd``,
    ``schedule: step``, ``milestones``); on Moons the paper uses Adam for every method.

    Departure from the authors' code: no Gaussian jitter (``omega = 0.001``) is added to
    each PGD step.
    """

    name = "fat"

    @dataclass(frozen=True)
    class Config:
        eps: float
        norm: str = "l2"
        steps: int = 10
        alpha: float = 2.5
        step_size: float | None = None
        random_start: bool = True
        tau: int = 0
        tau_adjust_epochs: tuple[int, ...] | None = None

        def __post_init__(self):
            check_attack_settings(self)
            check_int("tau", self.tau, low=0)
            if self.tau_adjust_epochs is not None:
                if not isinstance(self.tau_adjust_epochs, list | tuple):
                    raise TypeError(
                        "tau_adjust_epochs must be a list of epoch numbers (>= 1), got "
                        f"{self.tau_adjust_epochs!r}"
                    )
                epochs = tuple(
                    sorted(check_int("tau_adjust_epochs", m, low=1)
                           for m in self.tau_adjust_epochs)
                )
                object.__setattr__(self, "tau_adjust_epochs", epochs)

    @classmethod
    def derive(cls, config, *, epochs):
        if config.tau_adjust_epochs is None:
            adjust = tuple(max(1, epochs * k // 120) for k in (50, 90))
            config = dataclasses.replace(config, tau_adjust_epochs=adjust)
        return config

    def tau_at(self, epoch: int) -> int:
        """The early-stop budget ``tau`` in (0-based) ``epoch``."""
        epoch = check_int("epoch", epoch, low=0)
        c = self.config
        return c.tau + sum(epoch + 1 > m for m in c.tau_adjust_epochs)

    def friendly(self, model, x, y, epoch: int) -> AttackResult:
        """Friendly adversarial data for the batch: early-stopped PGD with ``tau_at(epoch)``."""
        c = self.config
        return pgd(
            model, x, y, eps=c.eps, norm=c.norm, steps=c.steps, alpha=c.alpha,
            step_size=c.step_size, random_start=c.random_start, early_stop=True,
            tau=self.tau_at(epoch), bounds=self.bounds, task=self.task,
        )

    def __call__(self, model, x, y, index, epoch):
        tau = self.tau_at(epoch)
        attack = self.friendly(model, x, y, epoch)
        loss = self.task.loss(model(attack.x), y).mean()
        logs = {"tau": float(tau), "adv_fooled": float(attack.success.float().mean())}
        return StepOutput(loss, clean_logits(model, x), logs)
