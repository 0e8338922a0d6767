"""The paper's Fashion-MNIST and SVHN networks (section 3.2)."""

from __future__ import annotations

from torch import nn

from ima.validation import check_int

__all__ = ["fashion_cnn", "svhn_cnn"]


def _conv(c_in: int, c_out: int, kernel: int, stride: int, padding: int) -> nn.Conv2d:
    """COV(a, b, c, d, e) in the paper's notation."""
    return nn.Conv2d(c_in, c_out, kernel_size=kernel, stride=stride, padding=padding)


def fashion_cnn(*, in_channels: int = 1, num_classes: int = 10) -> nn.Sequential:
    """COV(1,64,5,2,2)-LR-COV(64,128,5,2,2)-IN-LR-COV(128,256,5,2,2)-IN-LR-COV(256,512,4,1,0)
    -Flatten-LN-LR-Linear(512,10), the paper's Fashion-MNIST network (section 3.2).

    Input (N, in_channels, 28, 28) in [0, 1], output logits (N, num_classes). Spatial
    sizes 28 -> 14 -> 7 -> 4 -> 1: the last convolution covers the whole 4x4 map. IN is
    InstanceNorm and LN LayerNorm, both with learnable affine maps (the paper does not
    say; affine is the usual choice); LR is LeakyReLU with PyTorch's default slope 0.01.
    No BatchNorm, so a sample's output does not depend on the rest of its batch. About
    3.1M parameters.
    """
    in_channels = check_int("in_channels", in_channels, low=1)
    num_classes = check_int("num_classes", num_classes, low=2)
    return nn.Sequential(
        _conv(in_channels, 64, 5, 2, 2),  # 14x14
        nn.LeakyReLU(),
        _conv(64, 128, 5, 2, 2),  # 7x7
        nn.InstanceNorm2d(128, affine=True),
        nn.LeakyReLU(),
        _conv(128, 256, 5, 2, 2),  # 4x4
        nn.InstanceNorm2d(256, affine=True),
        nn.LeakyReLU(),
        _conv(256, 512, 4, 1, 0),  # 1x1
        nn.Flatten(),
        nn.LayerNorm(512),
        nn.LeakyReLU(),
        nn.Linear(512, num_classes),
    )


def svhn_cnn(*, in_channels: int = 3, num_classes: int = 10) -> nn.Sequential:
    """The paper's SVHN network (section 3.2), input (N, 3, 32, 32) in [0, 1]:

    COV(3,32,3,1,1)-LR-COV(32,32,3,2,1)-IN-LR-COV(32,64,3,1,1)-IN-LR-COV(64,64,3,2,1)-IN-LR
    -COV(64,128,3,1,1)-IN-LR-COV(128,128,3,2,1)-IN-LR-COV(128,256,4,1,0)-Flatten-LN-LR
    -Linear(256,10).

    Output logits (N, num_classes). Spatial sizes 32 -> 32 -> 16 -> 16 -> 8 -> 8 -> 4 -> 1.
    IN, LN (learnable affine maps) and LR (slope 0.01) as in ``fashion_cnn``; no
    BatchNorm. About 0.8M parameters.
    """
    in_channels = check_int("in_channels", in_channels, low=1)
    num_classes = check_int("num_classes", num_classes, low=2)
    return nn.Sequential(
        _conv(in_channels, 32, 3, 1, 1),  # 32x32
        nn.LeakyReLU(),
        _conv(32, 32, 3, 2, 1),  # 16x16
        nn.InstanceNorm2d(32, affine=True),
        nn.LeakyReLU(),
        _conv(32, 64, 3, 1, 1),  # 16x16
        nn.InstanceNorm2d(64, affine=True),
        nn.LeakyReLU(),
        _conv(64, 64, 3, 2, 1),  # 8x8
        nn.InstanceNorm2d(64, affine=True),
        nn.LeakyReLU(),
        _conv(64, 128, 3, 1, 1),  # 8x8
        nn.InstanceNorm2d(128, affine=True),
        nn.LeakyReLU(),
        _conv(128, 128, 3, 2, 1),  # 4x4
        nn.InstanceNorm2d(128, affine=True),
        nn.LeakyReLU(),
        _conv(128, 256, 4, 1, 0),  # 1x1
        nn.Flatten(),
        nn.LayerNorm(256),
        nn.LeakyReLU(),
        nn.Linear(256, num_classes),
    )
