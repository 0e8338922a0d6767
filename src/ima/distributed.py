"""Data-parallel training and evaluation over processes started by ``torchrun``.

``torchrun --nproc_per_node=N -m ima train ...`` starts N processes; each builds the same
model (same seed), takes its share of every batch of the epoch's sample order, and the
gradients are summed over the processes after each backward pass (gloo on CPU, NCCL on
GPU), weighted so that the step equals the single-process step on the whole batch.
``data.batch_size`` is therefore the global batch: results do not depend on N except
through floating-point summation order and the random starts of the attacks. With N
processes an epoch's last batch is dropped when it holds fewer than N samples.

Why not ``torch.nn.parallel.DistributedDataParallel``: DDP synchronises gradients from
hooks on the parameters and expects every forward pass of the wrapped module to be
followed by a backward pass into the parameters. The attacks inside a training step run
dozens of forward passes whose gradients go to the input only, which breaks that
expectation; so the sum over processes is done explicitly, once per step, over one flat
buffer (what DDP does, without overlapping communication with the backward pass).
Buffers (BatchNorm statistics) follow process 0 after every step, as DDP's
``broadcast_buffers`` does. Margins (:class:`~ima.margins.MarginStore`) recorded by every
process are merged at epoch end, so every process holds the same margins.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = [
    "Context",
    "all_sum",
    "barrier",
    "broadcast_buffers",
    "broadcast_parameters",
    "finish",
    "gather_objects",
    "init",
    "shard_batches",
    "sync_gradients",
    "sync_margins",
]


@dataclass(frozen=True)
class Context:
    """This process's place: ``rank`` of ``world`` processes, and its device."""

    rank: int
    world: int
    device: torch.device
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def init(device: torch.device) -> Context:
    """The process's context from torchrun's environment (``WORLD_SIZE``, ``RANK``,
    ``LOCAL_RANK``); a single process without it. Starts the process group (NCCL for
    CUDA, gloo otherwise) unless the caller already has one."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Context(0, 1, device)
    rank = int(os.environ["RANK"])
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
        torch.cuda.set_device(device)
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if dist.get_world_size() != world:
        raise RuntimeError(
            f"WORLD_SIZE is {world} but the process group has {dist.get_world_size()} processes"
        )
    return Context(rank, world, device, owns)


def finish(ctx: Context) -> None:
    """End the process group if :func:`init` started it."""
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: Context) -> None:
    if ctx.active:
        dist.barrier()


def _comm_device(ctx: Context) -> torch.device:
    """NCCL reduces CUDA tensors only; gloo CPU tensors."""
    return ctx.device if ctx.device.type == "cuda" else torch.device("cpu")


def shard_batches(n: int, batch_size: int, world: int) -> list[tuple[int, int]]:
    """The global batches of an epoch of ``n`` positions: ``(start, stop)`` pairs, the
    last dropped when it has fewer than ``world`` samples (a process would get none)."""
    spans = [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    if world > 1 and spans and spans[-1][1] - spans[-1][0] < world:
        spans.pop()
    return spans


def sync_gradients(model: torch.nn.Module, weight: float, ctx: Context) -> None:
    """Replace each parameter's gradient by the ``weight``-ed sum over the processes.

    weight: this process's share of the global batch (local size / global size), so
    that the sum of per-process batch means is the mean over the global batch. A
    parameter keeps ``grad = None`` only if it got no gradient in any process.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        return
    device = _comm_device(ctx)
    flat = torch.cat([
        (p.grad.detach().reshape(-1).to(device, torch.float32) * weight if p.grad is not None
         else torch.zeros(p.numel(), device=device))
        for p in params
    ] + [torch.tensor([float(p.grad is not None) for p in params], device=device)])
    dist.all_reduce(flat)
    has = flat[-len(params):] > 0
    offset = 0
    for p, got in zip(params, has.tolist(), strict=True):
        piece = flat[offset : offset + p.numel()].view_as(p)
        offset += p.numel()
        if got:
            p.grad = piece.to(p.device, p.dtype).clone()


def broadcast_parameters(model: torch.nn.Module, ctx: Context) -> None:
    """Give every process process 0's parameters and buffers."""
    for tensor in list(model.parameters()) + list(model.buffers()):
        _broadcast(tensor, ctx)


def broadcast_buffers(model: torch.nn.Module, ctx: Context) -> None:
    """Give every process process 0's buffers (BatchNorm statistics, as DDP does)."""
    for tensor in model.buffers():
        _broadcast(tensor, ctx)


def _broadcast(tensor: torch.Tensor, ctx: Context) -> None:
    if tensor.device == _comm_device(ctx):
        dist.broadcast(tensor.data, src=0)
        return
    moved = tensor.detach().to(_comm_device(ctx))
    dist.broadcast(moved, src=0)
    tensor.data.copy_(moved)


def all_sum(values: list[float], ctx: Context) -> list[float]:
    """Element-wise sums of ``values`` over the processes (float64)."""
    if not ctx.active:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=_comm_device(ctx))
    dist.all_reduce(t)
    return t.tolist()


def gather_objects(obj, ctx: Context) -> list:
    """Every process's ``obj`` (picklable), in rank order, on every process."""
    if not ctx.active:
        return [obj]
    out = [None] * ctx.world
    dist.all_gather_object(out, obj)
    return out


def sync_margins(method, ctx: Context) -> None:
    """Merge the margin updates every process recorded this epoch into every process's
    store, in rank order (a sample recorded by several processes keeps the record of
    the highest rank, as a single process keeps its last record). Methods without a
    :class:`~ima.margins.MarginStore` in ``method.margins`` have nothing to merge."""
    from .margins import MarginStore

    store = getattr(method, "margins", None)
    if not ctx.active or not isinstance(store, MarginStore):
        return
    for pending, expanded in gather_objects(store.pending_updates(), ctx):
        store.absorb(pending, expanded)
