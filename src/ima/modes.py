"""Temporarily switch a model to eval mode and restore every submodule's flag after."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["eval_mode"]


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
