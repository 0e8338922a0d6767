"""Per-batch cost of BPGD against PGD with the same number of steps, side by side.

Both attacks run on the same model, batch, eps and 20 steps (alpha 4); PGD with
``early_stop=False`` (the last iterate, as vanilla adversarial training uses it) and with
``early_stop=True``. BPGD adds a clean forward pass and 10 bisection forwards on the
samples that crossed, and saves every step after a sample's crossing.

    python benchmarks/attack_cost.py RUN_DIR [--eps 0.3] [--batch-size 128] [--threads 2]
"""

from __future__ import annotations

import argparse

import torch
from common import machine, pick_device, timed

from ima import assemble, bpgd, load_run, pgd


def best_of(fn, repeats, device):
    runs = [timed(fn, device) for _ in range(repeats)]
    return min(t for t, _ in runs), runs[-1][1]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a trained run folder (its model and training data)")
    parser.add_argument("--eps", type=float, nargs="+", default=None,
                        help="noise levels (default: eps_max of the run, or 0.3)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = pick_device(args.device)

    run = load_run(args.run_dir)
    data = run.dataset("train")
    x, y, _ = next(iter(torch.utils.data.DataLoader(data, batch_size=args.batch_size)))
    x, y = x.to(device), y.to(device)
    bounds = assemble.data_bounds(data)
    model = run.model.to(device)
    levels = args.eps or [run.config["method"].get("eps_max", 0.3)]
    print(machine(device, args.threads) + f"; model {run.config['model']['name']}, "
          f"batch {len(y)}, {args.steps} steps")
    for eps in levels:
        common = {"eps": eps, "steps": args.steps, "bounds": bounds}
        t_pgd, r_pgd = best_of(lambda c=common: pgd(model, x, y, **c), args.repeats, device)
        t_es, _ = best_of(lambda c=common: pgd(model, x, y, early_stop=True, **c), args.repeats,
                           device)
        t_b, r_b = best_of(lambda c=common: bpgd(model, x, y, **c), args.repeats, device)
        print(f"eps {eps:g}: crossed {float(r_b.success.float().mean()):.2f} of the batch; "
              f"pgd {1000 * t_pgd:.1f} ms, pgd early-stop {1000 * t_es:.1f} ms, "
              f"bpgd {1000 * t_b:.1f} ms; ratio bpgd / pgd = {t_b / t_pgd:.3f}")


if __name__ == "__main__":
    main()
