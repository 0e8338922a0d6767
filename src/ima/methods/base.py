"""The training-method contract shared by every method, and the method registry."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from .. import lp
from ..registry import Registry
from ..tasks import Task, get_task
from ..validation import check_bounds, check_int, check_real

__all__ = [
    "METHODS",
    "MarginMethod",
    "Method",
    "StepOutput",
    "build_method",
    "check_attack_settings",
]

METHODS = Registry("method")


@dataclass
class StepOutput:
    """What a method returns for one batch.

    loss: scalar to back-propagate; logits: the model's output on the clean batch
    (detached, for training accuracy); logs: per-batch floats averaged over the epoch.
    """

    loss: torch.Tensor
    logits: torch.Tensor
    logs: dict[str, float] = field(default_factory=dict)


class Method:
    """Base class of a training method: ``method(model, x, y, index, epoch) -> StepOutput``.

    Built from keyword hyperparameters validated into the frozen dataclass ``Config``
    (``method.config``), plus what the data decides: ``num_samples`` (size of the training
    set, for per-sample state keyed by ``index``), ``epochs`` (total, for schedules and
    derived defaults), ``bounds`` (valid input range, None = unbounded) and ``task``.
    A method splits correct from wrong samples with the model in eval mode, never touches
    the optimizer, leaves the model in the mode it found it, and keeps its state (margins,
    statistics) in ``state_dict()``. It works in a user's own training loop::

        method = ima.methods.build_method("ima", num_samples=len(ds), epochs=30,
                                          bounds=None, eps_max=0.3)
        for epoch in range(30):
            for x, y, index in loader:
                out = method(model, x, y, index, epoch)
                optimizer.zero_grad(); out.loss.backward(); optimizer.step()
            method.end_epoch(epoch)
    """

    name: ClassVar[str] = ""
    Config: ClassVar[type] = type(None)

    def __init__(
        self,
        *,
        num_samples: int,
        epochs: int,
        bounds=(0.0, 1.0),
        task: Task | None = None,
        **hyperparameters: Any,
    ):
        self.num_samples = check_int("num_samples", num_samples, low=1)
        self.epochs = check_int("epochs", epochs, low=1)
        self.bounds = check_bounds(bounds)
        self.task = get_task(task)
        self.config = self.make_config(epochs=self.epochs, **hyperparameters)

    @classmethod
    def make_config(cls, *, epochs: int, **hyperparameters: Any):
        """Validate ``hyperparameters`` into a frozen ``Config``, deriving defaults that
        depend on the number of epochs."""
        known = [f.name for f in dataclasses.fields(cls.Config)]
        unknown = sorted(set(hyperparameters) - set(known))
        if unknown:
            raise ValueError(
                f"unknown hyperparameter(s) {', '.join(unknown)} for method {cls.name!r}; "
                f"allowed: {', '.join(known) or 'none'}"
            )
        missing = [
            f.name for f in dataclasses.fields(cls.Config)
            if f.default is dataclasses.MISSING and f.name not in hyperparameters
        ]
        if missing:
            raise ValueError(f"method {cls.name!r} needs {', '.join(missing)}")
        return cls.derive(cls.Config(**hyperparameters), epochs=epochs)

    @classmethod
    def derive(cls, config, *, epochs: int):
        """Fill values that depend on the training length; the default changes nothing."""
        return config

    def __call__(self, model, x, y, index, epoch: int) -> StepOutput:
        raise NotImplementedError

    def end_epoch(self, epoch: int) -> dict[str, float]:
        """Called by the loop after each epoch; returns statistics to log."""
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        if state:
            raise ValueError(f"method {self.name!r} has no state, got keys {sorted(state)}")


def check_attack_settings(config) -> None:
    """Validate the attack hyperparameters a method config has, whichever of ``eps``,
    ``norm``, ``steps``, ``alpha``, ``step_size`` and ``random_start`` it defines."""
    if hasattr(config, "eps"):
        check_real("eps", config.eps, low=0.0)
    if hasattr(config, "norm"):
        lp.check_norm(config.norm)
    if hasattr(config, "steps"):
        check_int("steps", config.steps, low=1)
    if hasattr(config, "alpha"):
        check_real("alpha", config.alpha, low=0.0, low_open=True)
    if getattr(config, "step_size", None) is not None:
        check_real("step_size", config.step_size, low=0.0, low_open=True)
    if hasattr(config, "random_start") and not isinstance(config.random_start, bool):
        raise TypeError(f"random_start must be True or False, got {config.random_start!r}")


class MarginMethod(Method):
    """A method that keeps per-sample margins in ``self.margins`` (a MarginStore): the
    store is updated at each epoch's end and is the method's whole state (IMA, MMA)."""

    margins: Any = None

    def end_epoch(self, epoch: int) -> dict[str, float]:
        return self.margins.end_epoch()

    def state_dict(self) -> dict:
        return {"margins": self.margins.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.margins.load_state_dict(state["margins"])


def build_method(name: str, **kwargs: Any) -> Method:
    """Build the method registered as ``name`` (or a user class ``"pkg.mod:Class"``)."""
    method = METHODS.build(name, **kwargs)
    if not isinstance(method, Method):
        raise TypeError(f"method {name!r} must build an ima.methods.Method, got {type(method)}")
    return method
