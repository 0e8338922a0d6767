"""The paper's Moons network (section 3.1)."""

from __future__ import annotations

from torch import nn

from ima.validation import check_int

__all__ = ["moons_mlp"]


def moons_mlp(*, in_features: int = 2, num_classes: int = 2) -> nn.Sequential:
    """Linear(2,32)-LR-Linear(32,64)-LN-LR-Linear(64,128)-LN-LR-Linear(128,2), section 3.1.

    Input (N, in_features), output logits (N, num_classes). LR is LeakyReLU with
    PyTorch's default slope 0.01 (the paper does not give one); LN is LayerNorm with a
    learnable affine map. No BatchNorm: adversarial methods run the model on per-sample
    subsets of a batch, which must not change any sample's output.
    """
    in_features = check_int("in_features", in_features, low=1)
    num_classes = check_int("num_classes", num_classes, low=2)
    return nn.Sequential(
        nn.Linear(in_features, 32),
        nn.LeakyReLU(),
        nn.Linear(32, 64),
        nn.LayerNorm(64),
        nn.LeakyReLU(),
        nn.Linear(64, 128),
        nn.LayerNorm(128),
        nn.LeakyReLU(),
        nn.Linear(128, num_classes),
    )
