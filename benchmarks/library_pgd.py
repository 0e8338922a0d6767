"""Our 100-step PGD against the PGD of an established library (the Adversarial
Robustness Toolbox, ``pip install 'ima[autoattack]'``) on the same model and inputs.

Both: L2 (or Linf), cross-entropy, 100 steps of size eps/10, one uniform random start,
the same batch size. Ours stops attacking a sample at its first misclassified iterate
(``early_stop=True``, as the evaluation does); ART's attacks every sample for all 100
steps. Accuracy: the fraction of samples the model still classifies correctly, ours
counting a sample fooled at any iterate (so never weaker). Goal: faster, with accuracies
that agree or are lower.

    python benchmarks/library_pgd.py RUN_DIR [--eps 0.5 1.0] [--max-samples 500]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from common import add_run_arguments, machine, open_run, timed

from ima import pgd
from ima.training import batches


def art_pgd(model, x, y, eps, norm, steps, batch_size, bounds, classes):
    from art.attacks.evasion import ProjectedGradientDescentPyTorch
    from art.estimators.classification import PyTorchClassifier

    estimator = PyTorchClassifier(
        model=model, loss=torch.nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
        nb_classes=classes, clip_values=bounds, device_type="gpu" if x.is_cuda else "cpu",
    )
    attack = ProjectedGradientDescentPyTorch(
        estimator, norm=2 if norm == "l2" else np.inf, eps=eps, eps_step=eps / 10,
        max_iter=steps, num_random_init=1, batch_size=batch_size, verbose=False,
    )
    adv = attack.generate(x=x.cpu().numpy(), y=y.cpu().numpy())
    return torch.from_numpy(adv).to(x.device)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_arguments(parser)
    parser.add_argument("--eps", type=float, nargs="+", help="default: 2 of eval.eps")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=250)
    args = parser.parse_args(argv)
    device, run, model = open_run(args)
    e = run.config["eval"]
    levels = args.eps or [x for x in e["eps"] if x > 0][1:3]
    data = run.dataset(e["split"])
    x, y, _ = next(batches(data, args.max_samples, device=device))
    bounds = getattr(data, "bounds", (0.0, 1.0))
    with torch.no_grad():
        classes = model(x[:1]).shape[1]
    print(machine(device, args.threads))
    print(f"run {args.run_dir}; {len(y)} samples; {args.steps}-step PGD, {e['norm']}, CE, "
          f"step eps/10, batch {args.batch_size}")
    print("| eps | ours acc | ART acc | ours s | ART s | ART / ours |")
    print("|---|---|---|---|---|---|")
    pgd(model, x[:16], y[:16], eps=levels[0], norm=e["norm"], steps=5, bounds=bounds)  # warm-up
    for eps in levels:
        def ours(eps=eps):
            robust = []
            for i in range(0, len(y), args.batch_size):
                xb, yb = x[i : i + args.batch_size], y[i : i + args.batch_size]
                r = pgd(model, xb, yb, eps=eps, norm=e["norm"], steps=args.steps,
                        step_size=eps / 10, early_stop=True, bounds=bounds)
                robust.append(~r.success)
            return torch.cat(robust)

        torch.manual_seed(0)
        t_ours, robust = timed(ours, device)
        np.random.seed(0)  # noqa: NPY002  (ART draws from numpy's global generator)
        t_art, adv = timed(lambda eps=eps: art_pgd(model, x, y, eps, e["norm"], args.steps,
                                                   args.batch_size, bounds, classes), device)
        with torch.no_grad():
            art_acc = float((model(adv).argmax(1) == y).float().mean())
        print(f"| {eps:g} | {100 * float(robust.float().mean()):.2f} | {100 * art_acc:.2f} | "
              f"{t_ours:.2f} | {t_art:.2f} | {t_art / t_ours:.2f} |")


if __name__ == "__main__":
    main()
