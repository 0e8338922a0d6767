"""The model registry and ``build_model``: the paper's networks by name, or user factories."""

from __future__ import annotations

import logging
from typing import Any

from torch import nn

from ima.models.mlp import moons_mlp
from ima.models.paper_cnns import fashion_cnn, svhn_cnn
from ima.models.resnet import resnet18_in
from ima.models.small_cnn import digits_cnn
from ima.models.unet_net import unet
from ima.models.wrn import wide_resnet, wrn_28_4
from ima.registry import Registry

__all__ = ["MODELS", "build_model"]

logger = logging.getLogger(__name__)

MODELS = Registry("model")
MODELS.register("moons_mlp")(moons_mlp)
MODELS.register("digits_cnn")(digits_cnn)
MODELS.register("fashion_cnn")(fashion_cnn)
MODELS.register("svhn_cnn")(svhn_cnn)
MODELS.register("wide_resnet")(wide_resnet)
MODELS.register("wrn_28_4")(wrn_28_4)
MODELS.register("resnet18_in")(resnet18_in)
MODELS.register("unet")(unet)


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Build model ``name`` with keyword arguments ``kwargs``.

    ``name`` is a registered name (``MODELS.names()``) or a user factory
    ``"package.module:function"`` called as ``function(**kwargs)``; the result must be a
    ``torch.nn.Module`` mapping inputs (N, *input_shape) to logits (N, num_classes), or
    for segmentation to per-pixel logits (N, num_classes, H, W).
    Input normalisation, if any, belongs inside the model (inputs stay in [0, 1]).
    """
    model = MODELS.get(name)(**kwargs)
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"model factory {name!r} must return a torch.nn.Module, got {type(model).__name__}"
        )
    n_params = sum(p.numel() for p in model.parameters())
    logger.debug("built model %r with %d parameters", name, n_params)
    return model
