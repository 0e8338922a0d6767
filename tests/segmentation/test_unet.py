"""The 2-D U-Net: output shape for any input size, gradients, batch independence, checks."""

import pytest
import torch
from torch import nn

from ima.models import MODELS, build_model, unet


@pytest.mark.parametrize(("size", "depth"), [((16, 16), 2), ((50, 35), 3), ((9, 13), 3)])
def test_output_shape_any_size_and_gradients(size, depth):
    torch.manual_seed(0)
    model = build_model("unet", in_channels=2, num_classes=3, width=4, depth=depth)
    x = torch.rand(2, 2, *size)
    out = model(x)
    assert out.shape == (2, 3, *size)
    y = torch.randint(0, 3, (2, *size))
    nn.functional.cross_entropy(out, y).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_structure_and_no_batchnorm():
    model = unet(width=8, depth=3, max_width=16)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert max(c.out_channels for c in convs) == 16  # widths 8, 16, 16, 16
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert any(isinstance(m, nn.InstanceNorm2d) for m in model.modules())
    assert "unet" in MODELS.names()
    model.train()
    x = torch.rand(4, 1, 16, 16)
    torch.testing.assert_close(model(x[1:2]), model(x)[1:2], atol=1e-5, rtol=1e-5)


def test_bad_arguments_and_inputs():
    with pytest.raises(ValueError, match="num_classes"):
        unet(num_classes=1)
    with pytest.raises(ValueError, match="width"):
        unet(width=0)
    with pytest.raises(ValueError, match="max_width"):
        unet(width=16, max_width=8)
    model = unet(width=4, depth=3)
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        model(torch.rand(2, 3, 16, 16))
    with pytest.raises(ValueError, match="at least 9 pixels.*lower model.depth"):
        model(torch.rand(1, 1, 8, 16))
