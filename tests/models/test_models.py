"""The networks: output shapes, gradients reach every parameter, registry and factories."""

import pytest
import torch
from torch import nn

from ima.models import MODELS, build_model, digits_cnn, moons_mlp

CASES = [("moons_mlp", {}, (2,), 2), ("digits_cnn", {}, (1, 8, 8), 10)]


@pytest.mark.parametrize(("name", "kwargs", "input_shape", "num_classes"), CASES)
def test_output_shape_and_gradients(name, kwargs, input_shape, num_classes):
    torch.manual_seed(0)
    model = build_model(name, **kwargs)
    x = torch.rand(5, *input_shape)
    logits = model(x)
    assert logits.shape == (5, num_classes)
    nn.functional.cross_entropy(logits, torch.arange(5) % num_classes).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


def test_no_batchnorm_outputs_do_not_depend_on_batch():
    """Methods run the model on per-sample subsets; a sample's logits must not change."""
    torch.manual_seed(0)
    for model, x in ((moons_mlp(), torch.randn(8, 2)), (digits_cnn(), torch.rand(8, 1, 8, 8))):
        model.train()
        full = model(x)
        assert torch.allclose(model(x[3:4]), full[3:4], atol=1e-6)


def test_moons_mlp_is_the_paper_network():
    layers = [type(m).__name__ for m in moons_mlp()]
    assert layers == [
        "Linear", "LeakyReLU", "Linear", "LayerNorm", "LeakyReLU",
        "Linear", "LayerNorm", "LeakyReLU", "Linear",
    ]  # fmt: skip
    widths = [(m.in_features, m.out_features) for m in moons_mlp() if isinstance(m, nn.Linear)]
    assert widths == [(2, 32), (32, 64), (64, 128), (128, 2)]


def test_digits_cnn_options():
    model = digits_cnn(in_channels=3, num_classes=4, width=8)
    assert model(torch.rand(2, 3, 8, 8)).shape == (2, 4)
    with pytest.raises(ValueError, match="width"):
        digits_cnn(width=0)
    with pytest.raises(ValueError, match="num_classes"):
        moons_mlp(num_classes=1)


def test_registry_and_user_factories():
    assert {"moons_mlp", "digits_cnn"} <= set(MODELS.names())
    assert isinstance(build_model("torch.nn:Identity"), nn.Identity)
    lin = build_model("torch.nn:Linear", in_features=3, out_features=2)
    assert isinstance(lin, nn.Linear)
    with pytest.raises(ValueError, match=r"unknown model 'resnet'.*'digits_cnn'"):
        build_model("resnet")
    with pytest.raises(ValueError, match="no_such_module_abc"):
        build_model("no_such_module_abc:net")
    with pytest.raises(TypeError, match="must return a torch.nn.Module, got Tensor"):
        build_model("torch:zeros", size=(2,))
