"""Training throughput with 1 and 2 processes (torchrun, gloo on CPU / NCCL on GPU).

Trains the same config for 2 epochs with each layout (``train.threads`` threads per
process) and reports the second epoch's samples per second (the first pays for start-up).

    python benchmarks/distributed_throughput.py [--config configs/digits-ima.yaml] [--threads 1]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from common import machine

from ima.runs import read_metrics


def train_once(config, out, nproc, threads, device):
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone",
                 f"--nproc_per_node={nproc}", "-m", "ima"] if nproc > 1
                else [sys.executable, "-m", "ima"])
    cmd = [*launcher, "train", "--config", config, "--out", str(out), "--no-progress",
           "--set", "train.epochs=2", "--set", f"train.threads={threads}",
           "--set", f"train.device={device}"]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return read_metrics(out)[-1]["time_s"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/digits-ima.yaml")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    from ima import assemble, load_config

    n = len(assemble.dataset_from_config(load_config(args.config), "train"))
    print(machine(torch.device(args.device), args.threads))
    print(f"config {args.config}: {n} training samples per epoch")
    layouts = [(1, args.threads), (2, args.threads)]
    if args.device == "cpu":
        layouts.append((1, 2 * args.threads))  # the same cores as 2 processes, in threads
    with tempfile.TemporaryDirectory() as tmp:
        seconds = {}
        for nproc, threads in layouts:
            out = Path(tmp) / f"p{nproc}t{threads}"
            seconds[nproc, threads] = train_once(args.config, out, nproc, threads, args.device)
    base = seconds[1, args.threads]
    print("| processes x threads | epoch s | samples/s | speed-up |")
    print("|---|---|---|---|")
    for (nproc, threads), s in seconds.items():
        print(f"| {nproc} x {threads} | {s:.2f} | {n / s:.0f} | {base / s:.2f} |")


if __name__ == "__main__":
    main()
