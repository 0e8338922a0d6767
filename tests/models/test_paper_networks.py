"""The paper's image networks (sections 3.2, 3.4): shapes on their datasets' inputs,
gradients to every parameter, the layer lists of section 3.2, registry names."""

import pytest
import torch
from torch import nn

from ima.models import (
    MODELS,
    build_model,
    fashion_cnn,
    resnet18_in,
    svhn_cnn,
    wide_resnet,
    wrn_28_4,
)

CASES = [
    ("fashion_cnn", {}, (1, 28, 28), 10),
    ("svhn_cnn", {}, (3, 32, 32), 10),
    ("wrn_28_4", {}, (3, 32, 32), 10),
    ("resnet18_in", {}, (1, 224, 224), 2),
]


@pytest.mark.parametrize(("name", "kwargs", "input_shape", "num_classes"), CASES)
def test_output_shape_and_gradients(name, kwargs, input_shape, num_classes):
    torch.manual_seed(0)
    model = build_model(name, **kwargs)
    x = torch.rand(2, *input_shape)
    logits = model(x)
    assert logits.shape == (2, num_classes) and torch.isfinite(logits).all()
    nn.functional.cross_entropy(logits, torch.tensor([0, 1])).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


def _convs(model):
    return [
        (m.in_channels, m.out_channels, m.kernel_size[0], m.stride[0], m.padding[0])
        for m in model.modules() if isinstance(m, nn.Conv2d)
    ]


def test_fashion_cnn_is_the_papers_network():
    model = fashion_cnn()
    assert _convs(model) == [
        (1, 64, 5, 2, 2), (64, 128, 5, 2, 2), (128, 256, 5, 2, 2), (256, 512, 4, 1, 0),
    ]  # fmt: skip
    assert [type(m).__name__ for m in model] == [
        "Conv2d", "LeakyReLU", "Conv2d", "InstanceNorm2d", "LeakyReLU",
        "Conv2d", "InstanceNorm2d", "LeakyReLU", "Conv2d",
        "Flatten", "LayerNorm", "LeakyReLU", "Linear",
    ]  # fmt: skip
    assert (model[-1].in_features, model[-1].out_features) == (512, 10)
    # 28 -> 14 -> 7 -> 4 -> 1
    assert model[:9](torch.rand(1, 1, 28, 28)).shape == (1, 512, 1, 1)


def test_svhn_cnn_is_the_papers_network():
    model = svhn_cnn()
    assert _convs(model) == [
        (3, 32, 3, 1, 1), (32, 32, 3, 2, 1), (32, 64, 3, 1, 1), (64, 64, 3, 2, 1),
        (64, 128, 3, 1, 1), (128, 128, 3, 2, 1), (128, 256, 4, 1, 0),
    ]  # fmt: skip
    names = [type(m).__name__ for m in model]
    assert names.count("InstanceNorm2d") == 5 and names[0:2] == ["Conv2d", "LeakyReLU"]
    assert names[-4:] == ["Flatten", "LayerNorm", "LeakyReLU", "Linear"]
    assert (model[-1].in_features, model[-1].out_features) == (256, 10)


def test_no_batchnorm_outputs_do_not_depend_on_batch():
    torch.manual_seed(0)
    for model, shape in ((fashion_cnn(), (1, 28, 28)), (svhn_cnn(), (3, 32, 32)),
                         (resnet18_in(), (1, 64, 64))):
        assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
        model.train()
        x = torch.rand(3, *shape)
        assert torch.allclose(model(x[1:2]), model(x)[1:2], atol=1e-5)


def test_wide_resnet_structure_and_options():
    model = wrn_28_4()
    n_params = sum(p.numel() for p in model.parameters())
    assert 5_800_000 < n_params < 5_900_000  # WRN-28-4
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 25
    assert not any(isinstance(m, nn.Dropout) for m in model.modules())
    small = wide_resnet(depth=10, width=1, num_classes=3, in_channels=1, dropout=0.3)
    assert small(torch.rand(2, 1, 32, 32)).shape == (2, 3)
    with pytest.raises(ValueError, match=r"depth must be 6n \+ 4"):
        wide_resnet(depth=27)
    with pytest.raises(ValueError, match="dropout"):
        wide_resnet(dropout=1.0)


def test_resnet18_in_options():
    model = resnet18_in(in_channels=3, num_classes=5)
    assert sum(isinstance(m, nn.InstanceNorm2d) for m in model.modules()) == 20
    assert model(torch.rand(1, 3, 64, 64)).shape == (1, 5)
    assert 11_100_000 < sum(p.numel() for p in resnet18_in().parameters()) < 11_200_000
    with pytest.raises(ValueError, match="num_classes"):
        resnet18_in(num_classes=1)


def test_registered_names():
    assert {"fashion_cnn", "svhn_cnn", "wide_resnet", "wrn_28_4", "resnet18_in"} <= set(
        MODELS.names()
    )
