"""Time IMA and vanilla 20-PGD adversarial training epochs side by side.

Both methods start from the same trained model (a finished IMA run, so the margins are
those of a realistic, late training state), see the same batches in the same order with
the same batch size and 20 PGD steps, and take real optimizer steps on copies of the
model. The ratio IMA / adv is the figure of merit: IMA should cost no more than vanilla
adversarial training, because BPGD stops attacking a sample once it crosses the
boundary, which pays for the bisection.

    python benchmarks/epoch_cost.py RUN_DIR [--adv-eps 0.3] [--threads 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from common import machine, pick_device, sync

from ima import assemble, load_run
from ima.methods import build_method
from ima.training import batches, epoch_order


def time_epoch(method, model, config, train_set, epoch, max_batches, device, rows=None):
    """Seconds of one epoch; ``rows``: a list to which every forward pass appends its
    number of samples (a hook, so only for the untimed counting run)."""
    model = copy.deepcopy(model).train()
    if rows is not None:
        model.register_forward_pre_hook(lambda m, inp: rows.append(inp[0].shape[0]))
    optimizer, _ = assemble.optimizer_from_config(config, model)
    order = epoch_order(len(train_set), config["train"]["seed"], epoch)
    sync(device)
    began = time.perf_counter()
    stream = batches(train_set, config["data"]["batch_size"], order=order, device=device)
    for i, (x, y, index) in enumerate(stream):
        if max_batches and i >= max_batches:
            break
        out = method(model, x, y, index, epoch)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()
    sync(device)
    return time.perf_counter() - began


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a finished IMA run folder")
    parser.add_argument("--adv-eps", type=float, help="adv's eps (default: IMA's eps_max)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-batches", type=int, default=0, help="0 = the whole epoch")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = pick_device(args.device)

    run = load_run(args.run_dir)
    run.model.to(device)
    if run.config["method"]["name"] != "ima":
        parser.error("RUN_DIR must be an IMA run (its margins set the realistic state)")
    config, train_set = run.config, run.dataset("train")
    c = run.config["method"]
    adv = build_method(
        "adv", num_samples=len(train_set), epochs=config["train"]["epochs"],
        bounds=assemble.data_bounds(train_set), eps=args.adv_eps or c["eps_max"],
        norm=c["norm"], steps=c["steps"], alpha=c["alpha"],
    )
    stats = run.method.margins.stats()
    print(machine(device, args.threads) + f"; run {args.run_dir} after {run.epoch} epochs")
    print(f"margins: mean {stats['margin_mean']:.4f}, median {stats['margin_median']:.4f}, "
          f"max {stats['margin_max']:.4f} (eps_max {c['eps_max']}); adv eps {adv.config.eps}")
    times = {"ima": [], "adv": []}
    for r in range(args.repeats):
        # alternate the order so that warm-up and drift do not favour one method
        for name in (("ima", "adv") if r % 2 == 0 else ("adv", "ima")):
            method = copy.deepcopy(run.method) if name == "ima" else adv
            times[name].append(time_epoch(method, run.model, config, train_set, run.epoch,
                                          args.max_batches, device))
    best = {k: min(v) for k, v in times.items()}
    for k in ("ima", "adv"):
        print(f"{k:>4}: epoch {best[k]:.2f} s (best of {args.repeats}: "
              + ", ".join(f"{t:.2f}" for t in times[k]) + ")")
    print(f"ratio ima / adv = {best['ima'] / best['adv']:.3f}")
    # What the active set can save: forward passes (each costs a fixed launch and
    # dispatch overhead) and rows (each costs arithmetic), untimed
    n = len(train_set) if not args.max_batches else min(
        len(train_set), args.max_batches * config["data"]["batch_size"])
    counts = {}
    for name in ("ima", "adv"):
        rows = []
        method = copy.deepcopy(run.method) if name == "ima" else adv
        time_epoch(method, run.model, config, train_set, run.epoch, args.max_batches, device,
                   rows=rows)
        counts[name] = (len(rows), sum(rows))
        print(f"{name:>4}: {len(rows)} forward passes, {sum(rows) / n:.1f} rows per sample")
    print(f"passes ima / adv = {counts['ima'][0] / counts['adv'][0]:.3f}, rows ima / adv = "
          f"{counts['ima'][1] / counts['adv'][1]:.3f}")


if __name__ == "__main__":
    main()
