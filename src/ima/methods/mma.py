"""Max-Margin Adversarial (MMA) training (Ding et al. 2020), the paper's main baseline."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from .. import lp
from ..attacks import pgd
from ..attacks.base import clean_pass
from ..attacks.boundary import bisect
from ..margins import DirectMarginStore
from ..modes import eval_mode, mode_free
from ..validation import check_int, check_real
from .base import METHODS, MarginMethod, StepOutput

__all__ = ["MMA"]

#: The search for the boundary reaches this multiple of eps_max (the reference's
#: ``attack_maxeps = hinge_maxeps * 1.05``, BorealisAI/mma_training train.py), so that a
#: margin just below eps_max is still found.
SEARCH_REACH = 1.05

#: The authors' smallest search radius per norm (BorealisAI/mma_training config.py,
#: ``attack_mineps``: L2 MNIST and CIFAR-10 0.5, Linf CIFAR-10 0.005).
MIN_EPS = {"l2": 0.5, "linf": 0.005}


@METHODS.register("mma")
class MMA(MarginMethod):
    """MMA training: cross-entropy at each correct sample's nearest boundary point.

    Per batch, after splitting the batch in eval mode into misclassified and correctly
    classified samples, each correct sample's margin is estimated with AN-PGD (Ding et
    al. 2020, Algorithm 1, used by their training Algorithm 2; BorealisAI/mma_training
    anpgd.py):

    1. ``steps``-step PGD on the logit margin (the task's ``"margin"`` loss) with random
       start, radius ``eps = max(min_eps, E(x))`` (``E`` the margin estimated in the
       previous epoch) and step ``alpha * eps / steps`` (alpha 2.5: the reference's
       ``eps_iter_scale``); its last iterate ``x_pgd`` gives a direction.
    2. Bisection (``n_binary`` halvings) along the ray from ``x`` through ``x_pgd`` for
       the point where the prediction changes: between ``x`` and ``x_pgd`` if ``x_pgd``
       is misclassified, else between ``x_pgd`` and the ray's point at ``1.05 eps_max``.
       The boundary point ``x_b`` is the wrong-side end of the final bracket and the
       margin estimate ``d = ||x_b - x||``; a ray still correct at ``1.05 eps_max`` has
       no boundary point, and its margin is at least eps_max.

    The loss (the paper's combined loss, reference trainer.py and config.py: MMA-d with
    the clean-loss weight 1/3 of their main results; ``clean_loss_coeff=0`` is OMMA) is::

        (1 - c) * (sum_{correct, d < eps_max} CE(x_b) + sum_{wrong} CE(x)) / B
            + c * mean_all CE(x),                              c = clean_loss_coeff

    so a correct sample whose estimated margin reaches eps_max adds only to the clean
    term (the hinge at ``d_max = eps_max``). ``CE(x_b)`` comes from one training-mode
    forward pass over the whole batch, each found ``x_b`` in its sample's row and the
    clean input in the others: a model with batch norm sees batches of ``B`` rows, never
    the few samples that happened to cross. The reference (trainer.py) also runs the
    whole batch, there with AN-PGD's output in every correctly classified row, and reads
    the misclassified samples' ``CE(x)`` from that pass (here from the clean pass, of the
    same inputs). Margins live in a
    :class:`~ima.margins.DirectMarginStore` (``method.margins``, with the same
    ``stats()`` as IMA's): each epoch replaces a correct sample's margin by ``d`` (or
    eps_max) and a misclassified sample's by 0, as the reference records; all start at
    ``min_eps``. The appendix G.1 of the IMA paper sets 20 PGD iterations.

    Departures from the reference, all for one definition of margin across the library:
    the split uses the task's ``correct`` (argmax) in eval mode, and PGD and the search
    use the decision boundary (the logit margin ``max_{j != y} z_j - z_y``) instead of
    the soft logit margin ``logsumexp_{j != y} z_j - z_y`` (the two agree for two
    classes); the search points are clipped to the data bounds, and the training point
    is the bracket's wrong-side end rather than its last midpoint; the new margins apply
    at the end of the epoch, as IMA's (the reference updates them per batch: the same when
    each sample is seen once per epoch).

    ``min_eps``, the smallest search radius, is fixed in the data's units whatever
    ``eps_max``, as the authors fix it (their ``config.py``: ``attack_mineps`` 0.5 for
    L2 MNIST and L2 CIFAR-10 with any ``hinge_maxeps``, 0.005 for Linf CIFAR-10): the
    default is :data:`MIN_EPS` of the norm (L2 0.5, Linf 0.005, for images in [0, 1]),
    but never above ``eps_max / 2``, so that data of a smaller scale (2-D Moons, where
    ``eps_max`` is 0.3) still searches below the hinge.
    """

    name = "mma"

    @dataclass(frozen=True)
    class Config:
        eps_max: float
        min_eps: float | None = None
        clean_loss_coeff: float = 1.0 / 3.0
        norm: str = "l2"
        steps: int = 20
        alpha: float = 2.5
        n_binary: int = 10

        def __post_init__(self):
            check_real("eps_max", self.eps_max, low=0.0, low_open=True)
            if self.min_eps is not None:
                check_real("min_eps", self.min_eps, low=0.0, high=self.eps_max, low_open=True)
            check_real("clean_loss_coeff", self.clean_loss_coeff, low=0.0, high=1.0)
            lp.check_norm(self.norm)
            check_int("steps", self.steps, low=1)
            check_real("alpha", self.alpha, low=0.0, low_open=True)
            check_int("n_binary", self.n_binary, low=0)

    @classmethod
    def derive(cls, config, *, epochs):
        if config.min_eps is None:
            min_eps = min(MIN_EPS[config.norm], config.eps_max / 2)
            config = dataclasses.replace(config, min_eps=min_eps)
        return config

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        c = self.config
        self.margins = DirectMarginStore(self.num_samples, eps_max=c.eps_max, init=c.min_eps)

    def __call__(self, model, x, y, index, epoch):
        c, task = self.config, self.task
        index = torch.as_tensor(index, device=x.device)
        x = x.detach()
        # a model that computes the same in training and eval mode gives the split and
        # the training loss one forward pass
        out = model(x) if mode_free(model) else None
        with eval_mode(model):
            clean = clean_pass(model, task, x, y, out)
        correct = task.correct(clean, y)
        ones = correct.nonzero().squeeze(1)

        # Misclassified samples: margin 0, trained on the clean input.
        crossed = torch.ones(len(x), dtype=torch.bool, device=x.device)
        distance = torch.zeros(len(x), device=x.device, dtype=x.dtype)
        points = x.clone()
        if ones.numel():
            xs, ys = x[ones], y[ones]
            eps = self.margins.get(index[ones]).to(x.dtype).clamp_min(c.min_eps)
            found, boundary = self._search(model, xs, ys, eps)
            crossed[ones] = found
            distance[ones] = lp.sample_norm(boundary - xs, c.norm)
            # a ray without a boundary point leaves its row clean (its far end is no
            # training point)
            points[ones] = torch.where(lp.expand_as_batch(found, xs), boundary, xs)
        self.margins.record(index, crossed=crossed, distance=distance)

        if out is None:
            out = model(x)
        ce = task.loss(out, y)
        hit = correct & crossed & (distance < c.eps_max)
        total = ce[~correct].sum()
        if hit.any():
            # all B rows, so that batch norm never normalises with (nor learns running
            # statistics from) the few samples that happened to cross
            total = total + task.loss(model(points), y)[hit].sum()
        loss = (1 - c.clean_loss_coeff) * total / len(x) + c.clean_loss_coeff * ce.mean()
        logs = {
            "boundary_found": float(hit.float().mean()),
            "clean_correct": float(correct.float().mean()),
        }
        return StepOutput(loss, out.detach(), logs)

    def _search(self, model, x, y, eps):
        """AN-PGD on correctly classified ``x``: (found (B,), boundary points or, where none
        was found, the ray's far end)."""
        c, task = self.config, self.task
        attack = pgd(
            model, x, y, eps=eps, norm=c.norm, steps=c.steps, alpha=c.alpha, loss="margin",
            random_start=True, early_stop=False, bounds=self.bounds, task=task,
        )
        reach = SEARCH_REACH * c.eps_max / eps
        far = lp.clip_to_bounds(x + lp.expand_as_batch(reach, x) * (attack.x - x), self.bounds)
        # right end: correct, wrong end: misclassified
        right = torch.where(lp.expand_as_batch(attack.success, x), x, attack.x)
        wrong = torch.where(lp.expand_as_batch(attack.success, x), attack.x, far)
        with eval_mode(model), torch.no_grad():
            found = attack.success.clone()
            beyond = (~found).nonzero().squeeze(1)
            if beyond.numel():
                found[beyond] = ~task.correct(model(far[beyond]), y[beyond])
            idx = found.nonzero().squeeze(1)
            if idx.numel():
                ends = bisect(model, task, right[idx], wrong[idx], y[idx], c.n_binary)
                wrong[idx] = ends[1]
        return found, wrong
