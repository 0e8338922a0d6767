"""Standard training on clean data with cross-entropy ("ce" in the paper's tables)."""

from __future__ import annotations

from dataclasses import dataclass

from .base import METHODS, Method, StepOutput

__all__ = ["CrossEntropy"]


@METHODS.register("ce")
class CrossEntropy(Method):
    """Mean cross-entropy (the task's training loss) on the clean batch; no hyperparameters."""

    name = "ce"

    @dataclass(frozen=True)
    class Config:
        pass

    def __call__(self, model, x, y, index, epoch):
        out = model(x)
        self.task.check_target(out, y)
        return StepOutput(self.task.loss(out, y).mean(), out.detach())
