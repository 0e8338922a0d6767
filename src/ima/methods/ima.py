"""Increasing-Margin Adversarial training (Algorithms 1 and 2 of the paper)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from .. import lp
from ..attacks import bpgd
from ..margins import MarginStore
from ..modes import mode_free
from ..validation import check_int, check_real
from .base import METHODS, MarginMethod, StepOutput

__all__ = ["IMA"]


@METHODS.register("ima")
class IMA(MarginMethod):
    """IMA training: noisy samples on the decision boundary inside each sample's margin.

    Per batch (Algorithm 1): split the batch, in eval mode, into wrongly classified
    ``X0`` and correctly classified ``X1``; run BPGD (Algorithm 3) on ``X1`` with each
    sample's estimated margin ``E(x)`` as its eps; the loss is
    ``((1 - beta) * (L0 + L1) + beta * L2) / batch_size`` with ``L0``, ``L1`` the summed
    cross-entropy on ``X0`` and ``X1`` and ``L2`` the summed cross-entropy on the boundary
    points found (samples without one add nothing to ``L2``). BPGD ascends, and ``L0``-``L2``
    are, the task's training loss: cross-entropy for classification; for segmentation,
    where correct means Dice above a threshold, nnU-Net's Dice + cross-entropy (section 4).

    Margins (Algorithm 2, :class:`~ima.margins.MarginStore`) start at ``delta_eps``
    (default ``eps_max / epochs``) and are updated from the BPGD results of the training
    pass itself, applied at the end of each epoch and clipped to ``[0, eps_max]``:
    a sample whose ball holds a boundary point shrinks to ``(||x - x_n|| + E) / 2``, one
    whose ball holds none expands by ``delta_eps``; a misclassified sample keeps its margin
    (the paper's BPGD is undefined for it).

    ``L2`` comes from one training-mode forward pass over the whole batch with each
    boundary point in its sample's row (clean inputs in the other rows, whose losses are
    not used): a model with batch norm sees batches of ``batch_size`` rows, never the few
    samples that happened to cross. The authors' code (``IMA_loss``) also runs the whole
    batch, there with the attack's last iterate in the rows without a boundary point.
    """

    name = "ima"

    @dataclass(frozen=True)
    class Config:
        eps_max: float
        delta_eps: float | None = None
        beta: float = 0.5
        norm: str = "l2"
        steps: int = 20
        alpha: float = 4.0
        n_binary: int = 10

        def __post_init__(self):
            check_real("eps_max", self.eps_max, low=0.0, low_open=True)
            if self.delta_eps is not None:
                check_real("delta_eps", self.delta_eps, low=0.0, low_open=True)
            check_real("beta", self.beta, low=0.0, high=1.0)
            lp.check_norm(self.norm)
            check_int("steps", self.steps, low=1)
            check_real("alpha", self.alpha, low=0.0, low_open=True)
            check_int("n_binary", self.n_binary, low=0)

    @classmethod
    def derive(cls, config, *, epochs):
        if config.delta_eps is None:
            config = dataclasses.replace(config, delta_eps=config.eps_max / epochs)
        return config

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        c = self.config
        self.margins = MarginStore(self.num_samples, eps_max=c.eps_max, delta_eps=c.delta_eps)

    def find_boundary(self, model, x, y, index, *, clean_output=None):
        """BPGD (Algorithm 3) on the batch with each sample's margin as its eps, and the
        outcome recorded for Algorithm 2 (applied at :meth:`end_epoch`). Returns BPGD's
        :class:`~ima.attacks.AttackResult` (``success``: a boundary point was found,
        ``clean_correct``: BPGD's split into ``X1`` and ``X0``). A training loop of its own
        (e.g. nnU-Net's, :mod:`ima.integrations.nnunet`) calls this, then combines its
        losses with :meth:`combine`.
        clean_output: the model's eval-mode output on ``x`` when the caller has it."""
        c, task = self.config, self.task
        index = torch.as_tensor(index, device=x.device)
        boundary = bpgd(
            model, x, y, eps=self.margins.get(index).to(x.dtype), norm=c.norm, steps=c.steps,
            alpha=c.alpha, n_binary=c.n_binary, loss=task.losses[0], bounds=self.bounds,
            task=task, clean_output=clean_output,
        )
        ones = boundary.clean_correct.nonzero().squeeze(1)
        distance = lp.sample_norm(boundary.x[ones] - x[ones], c.norm)
        self.margins.record(index[ones], crossed=boundary.success[ones], distance=distance)
        return boundary

    def combine(self, clean_loss, boundary_loss, hits: int, batch_size: int):
        """Algorithm 1's loss from mean losses: ``clean_loss`` over the whole batch and
        ``boundary_loss`` over the ``hits`` boundary points found, so that it equals
        ``((1 - beta) * (L0 + L1) + beta * L2) / batch_size`` for losses that are means of
        per-sample terms. ``boundary_loss`` is ignored when ``hits`` is 0."""
        loss = (1 - self.config.beta) * clean_loss
        if hits:
            loss = loss + self.config.beta * boundary_loss * (hits / batch_size)
        return loss

    def __call__(self, model, x, y, index, epoch):
        task = self.task
        # BPGD splits the batch itself, in eval mode, into X0 (wrong) and X1 (correct) and
        # attacks X1 only. A model that computes the same in training and eval mode lends
        # it the training pass's clean output, saving a forward pass.
        out = model(x) if mode_free(model) else None
        boundary = self.find_boundary(model, x, y, index, clean_output=out)
        if out is None:
            out = model(x)
        hit = boundary.success.nonzero().squeeze(1)
        points_loss = None
        if hit.numel():
            # all B rows, so that batch norm never normalises with (nor learns running
            # statistics from) the few samples that happened to cross
            points = torch.where(lp.expand_as_batch(boundary.success, x), boundary.x, x)
            points_loss = task.loss(model(points), y)[hit].mean()
        loss = self.combine(task.loss(out, y).mean(), points_loss, hit.numel(), x.shape[0])
        logs = {
            "boundary_found": hit.numel() / len(x),
            "clean_correct": float(boundary.clean_correct.float().mean()),
        }
        return StepOutput(loss, out.detach(), logs)
