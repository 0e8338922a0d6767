"""Shared bits of the benchmarks: the machine line, timing with device synchronisation."""

from __future__ import annotations

import os
import platform
import time

import torch


def machine(device: torch.device, threads: int | None = None) -> str:
    """One line naming the machine a benchmark ran on."""
    if device.type == "cuda":
        where = torch.cuda.get_device_name(device)
    else:
        where = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    threads = torch.get_num_threads() if threads is None else threads
    return f"machine: {where}; torch {torch.__version__}; {threads} torch threads"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device):
    """(seconds, result) of ``fn()``, synchronising the device before and after."""
    sync(device)
    began = time.perf_counter()
    result = fn()
    sync(device)
    return time.perf_counter() - began, result


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def add_run_arguments(parser, *, max_samples: int = 500) -> None:
    """RUN_DIR, --max-samples, --device and --threads, shared by the run benchmarks."""
    parser.add_argument("run_dir")
    parser.add_argument("--max-samples", type=int, default=max_samples)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=2)


def open_run(args):
    """Set the threads; return (device, run, its model on the device in eval mode)."""
    from ima import load_run

    torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    run = load_run(args.run_dir)
    return device, run, run.model.to(device).eval()
