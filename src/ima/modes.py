"""Temporarily switch a model to eval mode and restore every submodule's flag after."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["eval_mode", "kept_random_state", "mode_free"]

# torch.nn layers that compute the same in training and eval mode need no listing; these
# are the ones that do not (batch statistics, dropout).
_MODE_DEPENDENT = (
    torch.nn.modules.batchnorm._BatchNorm,
    torch.nn.modules.dropout._DropoutNd,
    torch.nn.AlphaDropout,
    torch.nn.FeatureAlphaDropout,
    torch.nn.RNNBase,
)


@contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Run the body with ``model`` in eval mode; restore each submodule's own mode after.

    Restoring per submodule (not just ``model.training``) keeps a user's deliberately
    frozen sub-networks (e.g. a backbone held in eval mode) as they were.
    """
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training


def mode_free(model: torch.nn.Module) -> bool:
    """Whether ``model`` computes the same in training and eval mode, so that one forward
    pass can serve both (IMA's clean pass). True only when every submodule is a torch.nn
    or ``ima`` class without mode-dependent behaviour (no batch norm with running
    statistics, no dropout): a user's own module class may branch on ``self.training``,
    so it makes the answer False.
    """
    for m in model.modules():
        if isinstance(m, _MODE_DEPENDENT):
            return False
        if isinstance(m, torch.nn.modules.instancenorm._InstanceNorm) and m.track_running_stats:
            return False
        if not type(m).__module__.startswith(("torch.nn.", "ima.", "torch._dynamo.")):
            return False
    return True


@contextmanager
def kept_random_state(seed: int | None = None) -> Iterator[None]:
    """Run the body (after ``torch.manual_seed(seed)`` when a seed is given) and restore
    the global CPU random state after: evaluations and figures leave the caller's random
    numbers as they were."""
    state = torch.get_rng_state()
    try:
        if seed is not None:
            torch.manual_seed(seed)
        yield
    finally:
        torch.set_rng_state(state)
