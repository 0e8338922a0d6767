"""Speed options for a model: mixed precision, ``channels_last`` and ``torch.compile``.

``accelerate(model, ...)`` returns the module to *run* (training steps, attacks,
evaluation); the model passed in stays the one whose ``state_dict`` is saved and whose
parameters the optimizer holds, so checkpoints never depend on the speed options.

Mixed precision runs the model's forward pass under ``torch.autocast`` and casts its
output back to float32, so everything the attacks do with it (losses, the gradient with
respect to the input, norms, projections, bisection) stays in float32: the input keeps
its dtype, and only the arithmetic inside the network is reduced. ``bf16`` works on CPU
and GPU; ``fp16`` needs CUDA, and the training loop then scales the loss
(``torch.amp.GradScaler``). Attack gradients are not scaled: bf16, whose exponent range is
float32's, is the safer choice for adversarial training. All options are off by default.
"""

from __future__ import annotations

import torch

from .validation import check_choice

__all__ = ["PRECISIONS", "Accelerated", "accelerate", "check_precision"]

#: Names of the supported precisions and the autocast dtype of each (None: no autocast).
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str, device=None) -> str:
    """Validate a precision name, and that the device supports it (fp16: CUDA only)."""
    check_choice("precision", precision, tuple(PRECISIONS))
    if precision == "fp16" and device is not None and torch.device(device).type != "cuda":
        raise ValueError(
            f"precision 'fp16' needs a CUDA device, got {str(device)!r}; use 'bf16' on CPU"
        )
    return precision


class Accelerated(torch.nn.Module):
    """Runs ``model`` with its inputs in ``channels_last`` and its forward pass under
    autocast; returns float32 outputs. The wrapped model is ``self.model`` (compiled or
    not); parameters and modes are shared with the original."""

    def __init__(self, model: torch.nn.Module, *, precision: str = "fp32",
                 channels_last: bool = False):
        super().__init__()
        self.model = model
        self.precision = check_precision(precision)
        self.channels_last = bool(channels_last)

    def forward(self, x: torch.Tensor):
        if self.channels_last and x.dim() in (4, 5):
            fmt = torch.channels_last if x.dim() == 4 else torch.channels_last_3d
            x = x.contiguous(memory_format=fmt)
        dtype = PRECISIONS[self.precision]
        if dtype is None:
            return self.model(x)
        with torch.autocast(device_type=x.device.type, dtype=dtype):
            out = self.model(x)
        return out.float() if isinstance(out, torch.Tensor) and out.is_floating_point() else out


def _memory_format(model: torch.nn.Module):
    """channels_last_3d for a model with 3-D convolutions, else channels_last."""
    if any(isinstance(m, torch.nn.Conv3d | torch.nn.ConvTranspose3d) for m in model.modules()):
        return torch.channels_last_3d
    return torch.channels_last


def accelerate(
    model: torch.nn.Module,
    *,
    precision: str = "fp32",
    channels_last: bool = False,
    compile: bool = False,
    device=None,
) -> torch.nn.Module:
    """The module to run ``model`` with: ``model`` itself when every option is off.

    precision: ``"fp32"`` (default), ``"bf16"`` or ``"fp16"`` (CUDA only); channels_last:
    convert the weights (in place) and the inputs to the channels-last memory format;
    compile: ``torch.compile`` the model (dynamic shapes, since the attacks' working set
    shrinks as samples leave it). ``device``: where it will run, to validate
    ``precision`` (default: the device of the model's parameters).
    """
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    check_precision(precision, device)
    for name, flag in (("channels_last", channels_last), ("compile", compile)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be True or False, got {flag!r}")
    if channels_last:
        model.to(memory_format=_memory_format(model))
    runner = torch.compile(model, dynamic=True) if compile else model
    if precision == "fp32" and not channels_last:
        return runner
    return Accelerated(runner, precision=precision, channels_last=channels_last)
