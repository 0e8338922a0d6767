"""Wide residual networks (Zagoruyko & Komodakis 2016): the paper's CIFAR-10 network."""

from __future__ import annotations

import torch
from torch import nn

from ima.validation import check_int, check_real

__all__ = ["WideResNet", "wide_resnet", "wrn_28_4"]


class _Block(nn.Module):
    """Pre-activation basic block: BN-ReLU-conv3x3(stride)-BN-ReLU-(dropout)-conv3x3.

    When the width or resolution changes, the shortcut is a 1x1 convolution of the
    activated input (as in the reference implementation), else the identity.
    """

    def __init__(self, c_in: int, c_out: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.shortcut = (
            None
            if c_in == c_out and stride == 1
            else nn.Conv2d(c_in, c_out, 1, stride=stride, padding=0, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.bn1(x))
        out = self.conv2(self.dropout(torch.relu(self.bn2(self.conv1(a)))))
        return out + (x if self.shortcut is None else self.shortcut(a))


class WideResNet(nn.Module):
    """WRN-depth-width; see ``wide_resnet``."""

    def __init__(
        self, *, depth: int, width: int, num_classes: int, in_channels: int, dropout: float
    ) -> None:
        super().__init__()
        n = (depth - 4) // 6
        widths = [16, 16 * width, 32 * width, 64 * width]
        self.conv = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        groups = []
        for g, stride in enumerate((1, 2, 2)):
            blocks = [
                _Block(widths[g] if i == 0 else widths[g + 1], widths[g + 1],
                       stride if i == 0 else 1, dropout)
                for i in range(n)
            ]
            groups.append(nn.Sequential(*blocks))
        self.groups = nn.Sequential(*groups)
        self.bn = nn.BatchNorm2d(widths[3])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[3], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn(self.groups(self.conv(x))))
        return self.fc(self.pool(out).flatten(1))


def wide_resnet(
    *,
    depth: int = 28,
    width: int = 4,
    num_classes: int = 10,
    in_channels: int = 3,
    dropout: float = 0.0,
) -> WideResNet:
    """WRN-depth-width, the CIFAR-10 network of section 3.2 (WRN-28-4 by default).

    Input (N, in_channels, 32, 32) in [0, 1] (any size works: the final pooling is
    adaptive; 32x32 gives the standard 8x8 map), output logits (N, num_classes).
    The standard architecture used by the MMA paper, which the paper follows: a 3x3
    convolution to 16 channels, three groups of ``(depth - 4) / 6`` pre-activation
    basic blocks of widths 16, 32 and 64 times ``width`` (the second and third groups
    halve the resolution), BN-ReLU, global average pooling and a linear layer; He
    initialisation. WRN-28-4 has about 5.8M parameters.

    Unlike the paper's other networks this one has BatchNorm, as the standard WRN does.
    In training mode a sample's output then depends on its batch; attacks run models in
    eval mode (running statistics), so their results do not. ``dropout`` (between the
    two convolutions of a block) is 0, as in the MMA paper's training. No input
    normalisation: the first BatchNorm sees the convolved [0, 1] input.
    """
    depth = check_int("depth", depth, low=10)
    if (depth - 4) % 6:
        raise ValueError(f"depth must be 6n + 4 (10, 16, 22, 28, ...), got {depth}")
    width = check_int("width", width, low=1)
    num_classes = check_int("num_classes", num_classes, low=2)
    in_channels = check_int("in_channels", in_channels, low=1)
    dropout = check_real("dropout", dropout, low=0.0, high=1.0, high_open=True)
    return WideResNet(
        depth=depth, width=width, num_classes=num_classes, in_channels=in_channels,
        dropout=dropout,
    )


def wrn_28_4(*, num_classes: int = 10, in_channels: int = 3) -> WideResNet:
    """WRN-28-4 (``wide_resnet(depth=28, width=4)``), the paper's CIFAR-10 network."""
    return wide_resnet(depth=28, width=4, num_classes=num_classes, in_channels=in_channels)
