"""TRADES (Zhang et al. 2019): cross-entropy plus a KL robustness regulariser."""

from __future__ import annotations

from dataclasses import dataclass

from ..attacks import kl_attack, kl_divergence
from ..modes import mode_free
from ..validation import check_real
from .base import METHODS, Method, StepOutput, check_attack_settings

__all__ = ["TRADES"]


@METHODS.register("trades")
class TRADES(Method):
    """TRADES: train on ``CE(f(x), y) + beta * KL(softmax f(x) || softmax f(x'))``.

    Zhang, Yu, Jiao, Xing, El Ghaoui and Jordan, "Theoretically principled trade-off
    between robustness and accuracy", ICML 2019. Both terms are batch means: the KL is
    summed over classes and averaged over the batch, as the authors' ``trades_loss``
    divides ``KLDivLoss(reduction="sum")`` by the batch size. ``x'`` maximises the same KL
    inside the ``eps``-ball (:func:`~ima.attacks.kl_attack`), in eval mode, from
    ``x + 0.001 * N(0, I)`` (the authors' start); the loss is then evaluated in the
    caller's mode (the authors switch back to ``model.train()``), with gradients through
    both the clean and the perturbed output.

    Defaults: ``beta = 6.0``, TRADES's usual value (1/lambda = 6, its CIFAR-10 and
    MNIST setting); ``steps = 20`` and step ``alpha * eps / steps`` with ``alpha = 4``,
    because the IMA paper (appendix G.1) gives TRADES "the number of iterations and step
    size of the 20-PGD"; L2 by default, as every noise level in the paper.

    Departures from the authors' code: one clean forward pass serves both the
    cross-entropy and the KL (the authors run ``model(x_natural)`` twice in train mode,
    which differs only for stochastic layers and BatchNorm's running statistics), and for
    a model without such layers it is also the attack's clean target (no eval pass); for
    L2 the ascent is this library's normalised-gradient PGD step instead of the
    authors' SGD on ``delta`` with step ``2 * eps / steps`` and ``renorm``, and a sample
    whose gradient is exactly zero does not move (the authors draw a random direction);
    the start point is projected into the ball and the bounds.
    """

    name = "trades"

    @dataclass(frozen=True)
    class Config:
        eps: float
        beta: float = 6.0
        norm: str = "l2"
        steps: int = 20
        alpha: float = 4.0
        step_size: float | None = None

        def __post_init__(self):
            check_attack_settings(self)
            check_real("beta", self.beta, low=0.0)

    def __call__(self, model, x, y, index, epoch):
        c = self.config
        # a model that computes the same in training and eval mode lends its training
        # pass to the attack as the clean output (one forward pass fewer)
        out = model(x) if mode_free(model) else None
        attack = kl_attack(
            model, x, y, eps=c.eps, norm=c.norm, steps=c.steps, alpha=c.alpha,
            step_size=c.step_size, bounds=self.bounds, task=self.task, clean_output=out,
        )
        if out is None:
            out = model(x)
        ce = self.task.loss(out, y).mean()
        kl = kl_divergence(out, model(attack.x)).mean()
        loss = ce + c.beta * kl
        logs = {"kl": float(kl.detach()), "adv_fooled": float(attack.success.float().mean())}
        return StepOutput(loss, out.detach(), logs)
