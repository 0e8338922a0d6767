"""Speed options (mixed precision, channels_last, torch.compile) agree with the plain path.

Stated tolerances: channels_last is the same arithmetic in another memory order (outputs
within 1e-5); bf16 autocast keeps 8 bits of mantissa (logits within 0.1 on unit-scale
networks; attack success sets and trained accuracies within a few samples); compiled
models compute the same as eager ones up to kernel fusion (outputs within 1e-4).
"""

from __future__ import annotations

import pytest
import torch

from helpers import tiny_config
from ima import load_config, pgd, train
from ima.acceleration import Accelerated, accelerate
from ima.data import ArrayDataset
from ima.models import build_model
from ima.training import batches

CUDA = torch.cuda.is_available()


def _digits_like(seed=0, n=64):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


def _cnn(seed=0):
    torch.manual_seed(seed)
    return build_model("digits_cnn").eval()


def test_all_options_off_returns_the_model_itself():
    model = _cnn()
    assert accelerate(model) is model


def test_channels_last_gives_the_same_outputs_and_input_gradients():
    x, y = _digits_like()
    plain = _cnn()
    fast = accelerate(_cnn(), channels_last=True)
    assert isinstance(fast, Accelerated)
    assert all(p.is_contiguous(memory_format=torch.channels_last)
               for p in fast.model.parameters() if p.dim() == 4)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_a, out_b = plain(xa), fast(xb)
    assert torch.allclose(out_a, out_b, atol=1e-5)
    ga = torch.autograd.grad(torch.nn.functional.cross_entropy(out_a, y), xa)[0]
    gb = torch.autograd.grad(torch.nn.functional.cross_entropy(out_b, y), xb)[0]
    assert torch.allclose(ga, gb, atol=1e-6)
    # the weights saved from an accelerated model load into a plain one
    fresh = build_model("digits_cnn")
    fresh.load_state_dict(fast.model.state_dict())
    assert torch.allclose(fresh.eval()(x), out_a, atol=1e-5)


def test_bf16_autocast_keeps_outputs_and_attack_arithmetic_in_float32():
    x, y = _digits_like()
    plain, fast = _cnn(), accelerate(_cnn(), precision="bf16")
    out = fast(x)
    assert out.dtype == torch.float32
    assert (out - plain(x)).abs().max() < 0.1
    r_fast = pgd(fast, x, y, eps=1.0, steps=10, early_stop=True)
    assert r_fast.x.dtype == torch.float32
    delta = (r_fast.x - x).flatten(1).norm(dim=1)
    assert bool((delta <= 1.0 + 1e-5).all())  # projection still exact in float32
    r_plain = pgd(plain, x, y, eps=1.0, steps=10, early_stop=True)
    assert (r_fast.success != r_plain.success).sum() <= 4  # of 64


def test_bf16_training_reaches_the_accuracy_of_fp32(tmp_path):
    config = tiny_config("ima", epochs=4)
    plain = train(config, tmp_path / "fp32", progress=False)
    config["train"]["precision"] = "bf16"
    fast = train(config, tmp_path / "bf16", progress=False)
    assert fast.config["train"]["precision"] == "bf16"
    a, b = plain.metrics()[-1], fast.metrics()[-1]
    assert abs(a["val_acc"] - b["val_acc"]) <= 0.05
    assert abs(a["margin_mean"] - b["margin_mean"]) <= 0.1 * a["margin_mean"]


def test_compile_option_wraps_the_model_in_torch_compile_and_saves_plain_weights():
    model = _cnn()
    fast = accelerate(model, compile=True)
    assert isinstance(fast, torch._dynamo.eval_frame.OptimizedModule)
    assert fast._orig_mod is model  # the saved weights stay those of the plain model


@pytest.mark.slow  # inductor compiles C++ kernels: about a minute on 2 CPU cores
def test_compiled_model_agrees_with_eager_in_attacks_of_shrinking_batches():
    pytest.importorskip("torch._inductor")
    x, y = _digits_like(n=32)
    plain = _cnn()
    fast = accelerate(_cnn(), compile=True)
    with torch.no_grad():
        assert torch.allclose(fast(x), plain(x), atol=1e-4)
    torch.manual_seed(0)
    r_plain = pgd(plain, x, y, eps=1.0, steps=5, early_stop=True)
    torch.manual_seed(0)
    r_fast = pgd(fast, x, y, eps=1.0, steps=5, early_stop=True)
    assert (r_fast.success != r_plain.success).sum() <= 1
    assert torch.allclose(r_fast.x, r_plain.x, atol=1e-3)


def test_config_rejects_unknown_precision_and_fp16_without_cuda(tmp_path):
    config = tiny_config("ce", epochs=1)
    config["train"]["precision"] = "int8"
    with pytest.raises(ValueError, match="train.precision"):
        train(config, tmp_path / "a", progress=False)
    config["train"]["precision"] = "fp32"
    config["train"]["compile"] = "yes"
    with pytest.raises(TypeError, match="train.compile must be true or false"):
        train(config, tmp_path / "b", progress=False)
    with pytest.raises(ValueError, match="fp16' needs a CUDA device"):
        accelerate(_cnn(), precision="fp16", device="cpu")
    config["train"].update(compile=False, precision="fp16", device="cpu")
    with pytest.raises(ValueError, match="fp16' needs a CUDA device"):
        train(config, tmp_path / "c", progress=False)
    assert not (tmp_path / "c").exists()  # failed before making the run folder


def test_configs_default_to_the_plain_path():
    config = load_config("configs/moons-ima.yaml")
    for section in ("train", "eval"):
        assert config[section]["precision"] == "fp32"
        assert config[section]["channels_last"] is False
        assert config[section]["compile"] is False


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_cuda_mixed_precision_and_channels_last_agree_with_fp32(precision):
    x, y = _digits_like(n=256)
    x, y = x.cuda(), y.cuda()
    plain = _cnn().cuda()
    fast = accelerate(_cnn().cuda(), precision=precision, channels_last=True)
    assert (fast(x) - plain(x)).abs().max() < 0.1
    torch.manual_seed(0)
    r_plain = pgd(plain, x, y, eps=1.0, steps=20, early_stop=True)
    torch.manual_seed(0)
    r_fast = pgd(fast, x, y, eps=1.0, steps=20, early_stop=True)
    assert (r_fast.success != r_plain.success).sum() <= 8  # of 256
    assert bool(((r_fast.x - x).flatten(1).norm(dim=1) <= 1.0 + 1e-5).all())


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_cuda_fp16_training_with_loss_scaling(tmp_path):
    config = tiny_config("ima", epochs=4, train={"device": "cuda"})
    plain = train(config, tmp_path / "fp32", progress=False)
    config["train"].update(precision="fp16", channels_last=True)
    fast = train(config, tmp_path / "fp16", progress=False)
    assert abs(plain.metrics()[-1]["val_acc"] - fast.metrics()[-1]["val_acc"]) <= 0.05
    x, _, _ = next(batches(fast.dataset("train"), 8))
    assert torch.isfinite(fast.model(x)).all()


def test_in_memory_data_stays_on_the_cpu_for_cpu_training():
    x, y = _digits_like(n=10)
    ds = ArrayDataset(x, y, num_classes=10, name="d", split="train")
    assert ds.resident("cpu")[0] is ds.x


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_in_memory_data_is_copied_to_the_gpu_once_and_sliced_there():
    x, y = _digits_like(n=100)
    ds = ArrayDataset(x, y, num_classes=10, name="d", split="train")
    first = ds.resident("cuda")
    assert first[0].is_cuda and ds.resident("cuda")[0] is first[0]
    order = torch.randperm(100)
    for (xg, yg, ig), (xc, yc, ic) in zip(batches(ds, 32, order=order, device="cuda"),
                                          batches(ds, 32, order=order), strict=True):
        assert xg.is_cuda and torch.equal(xg.cpu(), xc) and torch.equal(yg.cpu(), yc)
        assert torch.equal(ig.cpu(), ic)
