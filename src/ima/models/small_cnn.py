"""A small CNN for 1x8x8 digit images, in the style of the paper's Fashion-MNIST network."""

from __future__ import annotations

from torch import nn

from ima.validation import check_int

__all__ = ["digits_cnn"]


def digits_cnn(*, in_channels: int = 1, num_classes: int = 10, width: int = 32) -> nn.Sequential:
    """COV(c,w,3,1,1)-LR-COV(w,2w,3,2,1)-IN-LR-COV(2w,4w,4,1,0)-Flatten-LN-LR-Linear(4w,K).

    Input (N, in_channels, 8, 8) in [0, 1], output logits (N, num_classes). Same pattern
    as the paper's Fashion-MNIST network (section 3.2): strided convolutions, a last
    convolution whose kernel covers the whole 4x4 map, InstanceNorm (IN) and LayerNorm
    (LN) with learnable affine maps, LeakyReLU (LR, slope 0.01). No BatchNorm, since
    adversarial methods run the model on per-sample subsets of a batch. No IN on the
    first 8x8 map (as in the paper) nor on the final 1x1 map, where it would be
    degenerate. About 150k parameters with ``width=32``.
    """
    in_channels = check_int("in_channels", in_channels, low=1)
    num_classes = check_int("num_classes", num_classes, low=2)
    width = check_int("width", width, low=1)
    w1, w2, w3 = width, 2 * width, 4 * width
    return nn.Sequential(
        nn.Conv2d(in_channels, w1, kernel_size=3, stride=1, padding=1),  # 8x8
        nn.LeakyReLU(),
        nn.Conv2d(w1, w2, kernel_size=3, stride=2, padding=1),  # 4x4
        nn.InstanceNorm2d(w2, affine=True),
        nn.LeakyReLU(),
        nn.Conv2d(w2, w3, kernel_size=4, stride=1, padding=0),  # 1x1
        nn.Flatten(),
        nn.LayerNorm(w3),
        nn.LeakyReLU(),
        nn.Linear(w3, num_classes),
    )
