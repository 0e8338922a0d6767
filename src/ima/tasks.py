"""What "correct" and "loss" mean for a model's output.

Attacks, methods and the evaluation never look at logits themselves: they ask a task.
A task gives, per sample,

* ``loss(output, y, loss=None)``: the attack/training objective, shape ``(B,)``; the
  first of ``losses`` (the training loss) when ``loss`` is None;
* ``correct(output, y)``: a bool mask, shape ``(B,)``;
* ``check_target(output, y)``: raises a clear error when ``y`` does not fit ``output``.

Classification is defined here; segmentation (correct = Dice above a threshold) plugs in
through the same three methods.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .checks import check_choice

__all__ = ["ClassificationTask", "Task", "get_task"]


class Task:
    """Interface of a task; see the module docstring."""

    #: loss names accepted by :meth:`loss`
    losses: tuple[str, ...] = ()

    def check_target(self, output: torch.Tensor, y: torch.Tensor) -> None:
        raise NotImplementedError

    def loss(self, output: torch.Tensor, y: torch.Tensor, loss: str | None = None) -> torch.Tensor:
        """Per-sample loss (B,); ``loss=None`` is the task's training loss (``losses[0]``)."""
        raise NotImplementedError

    def correct(self, output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def check_loss(self, loss: str) -> str:
        """Return ``loss`` after checking this task knows it."""
        return check_choice("loss", loss, self.losses)


class ClassificationTask(Task):
    """Classification from logits ``(B, C)`` and integer labels ``(B,)``.

    Correct means ``argmax(logits) == y``. Losses: ``"ce"`` (cross-entropy) and
    ``"margin"`` (the Carlini-Wagner margin ``max_{j != y} z_j - z_y``, positive exactly
    when the sample is misclassified).
    """

    losses = ("ce", "margin")

    def check_target(self, output: torch.Tensor, y: torch.Tensor) -> None:
        if output.dim() != 2:
            raise ValueError(
                f"classification expects model outputs of shape (batch, classes), "
                f"got shape {tuple(output.shape)}"
            )
        if y.dim() != 1 or y.shape[0] != output.shape[0]:
            raise ValueError(
                f"classification expects labels y of shape ({output.shape[0]},), "
                f"got shape {tuple(y.shape)}"
            )
        if y.dtype.is_floating_point or y.dtype == torch.bool or y.is_complex():
            raise TypeError(f"labels y must be an integer tensor, got dtype {y.dtype}")
        num_classes = output.shape[1]
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
            raise ValueError(
                f"labels y must be in [0, {num_classes - 1}] for a model with {num_classes} "
                f"outputs, got values in [{int(y.min())}, {int(y.max())}]"
            )

    def loss(self, output: torch.Tensor, y: torch.Tensor, loss: str | None = None) -> torch.Tensor:
        if loss is None or loss == "ce":
            return F.cross_entropy(output, y, reduction="none")
        if loss == "margin":
            true_logit = output.gather(1, y[:, None]).squeeze(1)
            others = output.scatter(1, y[:, None], float("-inf"))
            return others.amax(dim=1) - true_logit
        self.check_loss(loss)
        raise AssertionError("unreachable")

    def correct(self, output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return output.argmax(dim=1) == y


def get_task(task: Task | None) -> Task:
    """Return ``task``, or the classification task when ``task`` is None."""
    if task is None:
        return ClassificationTask()
    if not isinstance(task, Task):
        raise TypeError(f"task must be an ima.tasks.Task or None, got {type(task).__name__}")
    return task
