"""A 2-D U-Net in the style of nnU-Net's, for the segmentation experiments of section 4."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ima.validation import check_int

__all__ = ["UNet", "unet"]


def _stage(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    """Two (conv 3x3 - InstanceNorm - LeakyReLU) blocks; the first may downsample."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1),
        nn.InstanceNorm2d(c_out, affine=True),
        nn.LeakyReLU(0.01),
        nn.Conv2d(c_out, c_out, kernel_size=3, stride=1, padding=1),
        nn.InstanceNorm2d(c_out, affine=True),
        nn.LeakyReLU(0.01),
    )


class UNet(nn.Module):
    """U-Net: ``depth`` strided-convolution downsamplings, transposed-convolution
    upsamplings with skip connections, a 1x1 convolution to the class logits.

    Input (N, in_channels, H, W) in [0, 1], any H and W: the input is zero-padded
    (bottom and right) to a multiple of ``2**depth`` and the logits are cropped back, so
    the output is (N, num_classes, H, W). Stage ``s`` has ``min(width * 2**s, max_width)``
    channels. As in nnU-Net: InstanceNorm with affine maps, LeakyReLU(0.01), downsampling
    by stride-2 convolutions, no deep supervision. No BatchNorm, because adversarial
    methods run the model on per-sample subsets of a batch (an image's logits do not
    depend on the rest of its batch).
    """

    def __init__(self, *, in_channels=1, num_classes=2, width=32, depth=4, max_width=512):
        super().__init__()
        self.in_channels = check_int("in_channels", in_channels, low=1)
        self.num_classes = check_int("num_classes", num_classes, low=2)
        width = check_int("width", width, low=1)
        self.depth = check_int("depth", depth, low=0)
        max_width = check_int("max_width", max_width, low=width)
        widths = [min(width * 2**s, max_width) for s in range(self.depth + 1)]
        self.down = nn.ModuleList(
            _stage(in_channels if s == 0 else widths[s - 1], widths[s], 1 if s == 0 else 2)
            for s in range(self.depth + 1)
        )
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(widths[s + 1], widths[s], kernel_size=2, stride=2)
            for s in reversed(range(self.depth))
        )
        self.merge = nn.ModuleList(
            _stage(2 * widths[s], widths[s], 1) for s in reversed(range(self.depth))
        )
        self.head = nn.Conv2d(widths[0], num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"unet expects inputs of shape (N, {self.in_channels}, H, W), "
                f"got {tuple(x.shape)}"
            )
        height, width = x.shape[2:]
        k = 2**self.depth
        pad_h, pad_w = -height % k, -width % k
        if (height + pad_h) // k < 2 or (width + pad_w) // k < 2:
            # InstanceNorm needs more than one value per channel at the deepest stage.
            raise ValueError(
                f"unet with depth {self.depth} needs inputs of at least {k + 1} pixels "
                f"per side (the deepest map must be at least 2x2), got {height}x{width}; "
                "lower model.depth"
            )
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        skips = []
        for s, stage in enumerate(self.down):
            x = stage(x)
            if s < self.depth:
                skips.append(x)
        for up, merge in zip(self.up, self.merge, strict=True):
            x = merge(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x)[:, :, :height, :width]


def unet(*, in_channels=1, num_classes=2, width=32, depth=4, max_width=512) -> UNet:
    """The 2-D U-Net of :class:`UNet` (registered as ``"unet"``).

    depth: number of downsamplings (nnU-Net picks 5-6 for 320x320 patches and 3-4 for
    Hippocampus' 56x40); width: channels of the first stage, doubled per stage up to
    ``max_width`` (32 and 512, as nnU-Net's 2-D networks).
    """
    return UNet(
        in_channels=in_channels, num_classes=num_classes, width=width, depth=depth,
        max_width=max_width,
    )
