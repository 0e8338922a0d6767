"""ResNet-18 with instance normalisation: the paper's COVID-19 CT network (section 3.4)."""

from __future__ import annotations

import torch
from torch import nn

from ima.validation import check_int

__all__ = ["ResNetIN", "resnet18_in"]


def _norm(channels: int) -> nn.InstanceNorm2d:
    return nn.InstanceNorm2d(channels, affine=True)


class _Block(nn.Module):
    """Basic block: conv3x3(stride)-IN-ReLU-conv3x3-IN, plus the shortcut, then ReLU.

    The shortcut is a 1x1 convolution and IN when the width or resolution changes.
    """

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.norm1 = _norm(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.norm2 = _norm(c_out)
        self.shortcut = (
            None
            if c_in == c_out and stride == 1
            else nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), _norm(c_out))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.norm2(self.conv2(torch.relu(self.norm1(self.conv1(x)))))
        return torch.relu(out + (x if self.shortcut is None else self.shortcut(x)))


class ResNetIN(nn.Module):
    """ResNet-18 layout with InstanceNorm; see ``resnet18_in``."""

    def __init__(self, *, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False),
            _norm(64),
            nn.ReLU(),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        layers = []
        c_in = 64
        for c_out, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers.append(nn.Sequential(_Block(c_in, c_out, stride), _Block(c_out, c_out, 1)))
            c_in = c_out
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.InstanceNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.layers(self.stem(x))).flatten(1))


def resnet18_in(*, in_channels: int = 1, num_classes: int = 2) -> ResNetIN:
    """ResNet-18 (He et al. 2016) with InstanceNorm for BatchNorm, section 3.4.

    Input (N, in_channels, H, W) in [0, 1], by default one grey CT channel at 224x224;
    output logits (N, num_classes), by default 2 (0 uninfected, 1 infected). The
    torchvision ResNet-18 layout: 7x7 stride-2 convolution, 3x3 max pooling, four stages
    of two basic blocks (64, 128, 256, 512 channels; stages 2-4 halve the resolution),
    adaptive average pooling (so any input of at least about 64x64 works; 224x224 ends
    on a 7x7 map) and a linear layer. As in the paper, every BatchNorm is an
    InstanceNorm (learnable affine map, no running statistics: batch-size independent,
    the same in training and eval mode). Trained from scratch: no pretrained weights.
    About 11.2M parameters.
    """
    in_channels = check_int("in_channels", in_channels, low=1)
    num_classes = check_int("num_classes", num_classes, low=2)
    return ResNetIN(in_channels=in_channels, num_classes=num_classes)
