"""Looking at the model's clean output without training on it."""

from __future__ import annotations

import torch

__all__ = ["clean_logits"]


def clean_logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's output on the clean batch, detached, for methods whose loss never sees it.

    FAT and GAIRAT train on adversarial points only, yet ``StepOutput.logits`` must be the
    clean batch's output (for training accuracy). The forward pass runs in the caller's
    mode without gradients, and every buffer is put back afterwards, so the look changes
    nothing the training would see: a BatchNorm layer in train mode does not fold the
    clean batch's statistics into its running estimates.
    """
    saved = [b.detach().clone() for b in model.buffers()]
    with torch.no_grad():
        out = model(x)
    with torch.no_grad():
        for b, s in zip(model.buffers(), saved, strict=True):
            b.copy_(s)
    return out.detach()
