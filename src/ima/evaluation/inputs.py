"""What an evaluation attacks: batches from a Dataset or loader, checked inputs, the
per-class subset of appendix H.2, and the pools of batches 100-PGD attacks together."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

__all__ = ["check_inputs", "check_output", "checked_output", "class_labels", "data_batches",
           "eps_values", "first_per_class", "model_device", "pools", "to_cpu"]

def data_batches(data, batch_size: int):
    """Yield ``(x, y)`` from a Dataset or an iterable of ``(x, y[, index])`` batches."""
    if isinstance(data, Dataset):
        data = DataLoader(data, batch_size=batch_size, shuffle=False)
    for batch in data:
        if not isinstance(batch, tuple | list) or len(batch) not in (2, 3):
            raise TypeError("data must yield (x, y) or (x, y, index) batches")
        yield batch[0], batch[1]


def model_device(model: torch.nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def to_cpu(value):
    """Tensors (in dicts, lists and tuples) moved to the CPU, to gather and concatenate."""
    if isinstance(value, torch.Tensor):
        return value.cpu()
    if isinstance(value, dict):
        return {k: to_cpu(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(to_cpu(v) for v in value)
    return value


def class_labels(y: torch.Tensor) -> bool:
    """Whether ``y`` holds one integer class label per sample (classification)."""
    return y.dim() == 1 and not (y.dtype.is_floating_point or y.dtype == torch.bool)


def first_per_class(data, k: int, batch_size: int):
    """The first ``k`` samples of each class of ``data``, in their order, as batches, and
    their positions in ``data`` (appendix H.2's SPSA subset)."""
    xs, ys, where = [], [], []
    seen: dict[int, int] = {}
    position = 0
    for x, y in data_batches(data, batch_size):
        if not class_labels(y):
            raise ValueError("per_class needs one class label per sample (classification)")
        for j, label in enumerate(y.tolist()):
            if seen.get(label, 0) < k:
                seen[label] = seen.get(label, 0) + 1
                xs.append(x[j])
                ys.append(y[j])
                where.append(position + j)
        position += len(y)
    if not xs:
        raise ValueError("data holds no samples to evaluate")
    x, y = torch.stack(xs), torch.stack(ys)
    batches = [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(y), batch_size)]
    return batches, where


def eps_values(eps) -> list:
    """The noise levels of ``eps``: a number, a list or tuple, or a 0-/1-D tensor."""
    if isinstance(eps, torch.Tensor):
        if eps.dim() > 1:
            raise ValueError(f"eps must be a number or a 1-D list of numbers, got a tensor "
                             f"of shape {tuple(eps.shape)}")
        eps = eps.tolist()
    values = list(eps) if isinstance(eps, list | tuple) else [eps]
    if not values:
        raise ValueError("eps must hold at least one noise level, got an empty list")
    return values


@torch.no_grad()
def checked_output(model, x: torch.Tensor, *, who: str = "the model",
                   where: str = "") -> torch.Tensor:
    """``model(x)``, with a one-line ``ValueError`` naming the input shape and torch's first
    line when the model does not take ``x`` (e.g. other input channels), and a
    ``TypeError`` when it returns anything but one tensor of logits. ``who`` names the
    model in the messages, ``where`` says whose inputs (e.g. ``"on test "``)."""
    try:
        out = model(x)
    except (RuntimeError, IndexError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{who} does not fit the data: {where}inputs of shape "
                         f"{tuple(x.shape)} failed: {first}") from None
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"{who} must return one tensor of logits, got a "
                        f"{type(out).__name__}; wrap it to return the logits alone")
    return out


def check_output(model, x: torch.Tensor) -> int:
    """Check the model's output on ``x`` (:func:`checked_output`); return its number of
    classes (the size of the output's second dimension)."""
    out = checked_output(model, x)
    return out.shape[1] if out.dim() > 1 else 1


def check_inputs(x: torch.Tensor, model_dtype: torch.dtype | None) -> None:
    """Inputs must be floating point in the data's range and of the model's dtype: a
    silent conversion could change what is attacked (uint8 pixels are not in [0, 1])."""
    if not torch.is_floating_point(x):
        raise TypeError(f"inputs must be floating point in the data's range (images in "
                        f"[0, 1]), got {x.dtype}; e.g. x.float() / 255 for 8-bit images")
    if model_dtype is not None and x.dtype != model_dtype:
        raise TypeError(f"inputs are {x.dtype} but the model's parameters are {model_dtype}; "
                        "convert one to the other (e.g. x.float())")


#: A pool of 100-PGD takes batches until it holds this many bytes of inputs or batches.
POOL_BYTES, POOL_BATCHES = 128 * 2**20, 32


def pools(batches, pooled: bool):
    """Group ``(position, x, y)`` batches into pools (lists), or one batch per pool; a
    batch whose samples differ in shape or type from the pool's starts a new pool."""
    pool, size = [], 0
    for batch in batches:
        if pool and any(a.shape[1:] != b.shape[1:] or a.dtype != b.dtype
                        for a, b in zip(pool[0][1:], batch[1:], strict=True)):
            yield pool
            pool, size = [], 0
        pool.append(batch)
        size += batch[1].numel() * batch[1].element_size()
        if not pooled or size >= POOL_BYTES or len(pool) >= POOL_BATCHES:
            yield pool
            pool, size = [], 0
    if pool:
        yield pool


