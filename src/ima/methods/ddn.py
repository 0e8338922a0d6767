"""Adversarial training on DDN's minimal adversarial examples (Rony et al. 2019)."""

from __future__ import annotations

from dataclasses import dataclass

from .. import lp
from ..attacks import ddn
from ..validation import check_int, check_real
from .base import METHODS, Method, StepOutput
from .observe import clean_logits

__all__ = ["DDNTraining"]


@METHODS.register("ddn")
class DDNTraining(Method):
    """Train on ``mean_i CE(x_i + delta_i)``, ``delta_i`` the DDN perturbation capped at eps_max.

    Rony et al. 2019 (section "Adversarial training"): every sample of the batch is
    attacked with DDN (:func:`ima.attacks.ddn`, L2; ``steps`` 100 as in the IMA paper's
    appendix G.1 and the reference, ``gamma`` 0.05, ``init_norm`` 1, ``step_size`` 1),
    its smallest adversarial perturbation is scaled down to norm at most ``eps_max`` (the
    reference's ``max_norm``), and the loss is the batch-mean cross-entropy on those
    points only, without a clean term (as in the reference, jeromerony/fast_adversarial
    fast_adv/defenses/mnist.py and cifar10.py); the clean output returned for training
    accuracy leaves no trace in batch norm's running statistics
    (:func:`~ima.methods.observe.clean_logits`). A sample DDN does not fool (or one
    misclassified at the start) is trained on its clean input, since DDN returns it
    unchanged. Departures: no 8-bit quantisation of the adversarial points (see
    :func:`ima.attacks.ddn`), and adversarial training from the first epoch (the
    reference's ``--adv`` epoch is a command-line choice; the IMA paper gives none).
    """

    name = "ddn"

    @dataclass(frozen=True)
    class Config:
        eps_max: float
        steps: int = 100
        gamma: float = 0.05
        init_norm: float = 1.0
        step_size: float = 1.0

        def __post_init__(self):
            check_real("eps_max", self.eps_max, low=0.0, low_open=True)
            check_int("steps", self.steps, low=1)
            check_real("gamma", self.gamma, low=0.0, high=1.0, low_open=True, high_open=True)
            check_real("init_norm", self.init_norm, low=0.0, low_open=True)
            check_real("step_size", self.step_size, low=0.0, low_open=True)

    def __call__(self, model, x, y, index, epoch):
        c, task = self.config, self.task
        attack = ddn(
            model, x, y, steps=c.steps, gamma=c.gamma, init_norm=c.init_norm,
            step_size=c.step_size, max_norm=c.eps_max, bounds=self.bounds, task=task,
        )
        loss = task.loss(model(attack.x), y).mean()
        logs = {
            "adv_fooled": float(attack.success.float().mean()),
            "adv_norm": float(lp.sample_norm(attack.x - x, "l2").mean()),
            "clean_correct": float(attack.clean_correct.float().mean()),
        }
        return StepOutput(loss, clean_logits(model, x), logs)
