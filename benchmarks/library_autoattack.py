"""Our AutoAttack against the Adversarial Robustness Toolbox's and torchattacks' on the same
model, inputs and settings, side by side in one process: robust accuracy and time, the
time of ours split over its four attacks, and optionally each component against
torchattacks' same component.

All: untargeted, the given norm and eps, 100 iterations, one restart, Square with
``--square-queries`` (5000) queries. Ours and torchattacks' run the authors' standard
version (APGD-CE, APGD-T and FAB-T over the 9 most likely other classes, Square); ART's is
ART's own list (APGD-CE, APGD-DLR, DeepFool, Square), the one ``ima evaluate --attack
autoattack-art`` runs; torchattacks' runs APGD, APGD-T and FAB for 10 iterations unless
told otherwise, so here they are set to the standard's 100. Robust accuracy: the
fraction of samples classified correctly after the attack (ours: the cascade's verdict;
the others: the model's verdict on their points). Goal: ours at least 5 times faster
than ART at equal or lower robust accuracy.

    python benchmarks/library_autoattack.py RUN_DIR --norm linf --eps 0.1 0.2 \\
        [--max-samples 200] [--components] [--art-restarts 1] [--no-art] [--no-torchattacks]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from common import add_run_arguments, machine, open_run, timed

from ima.attacks import apgd, art_autoattack, autoattack, fab, square
from ima.training import batches


def _fooled(model, x_adv, y):
    with torch.no_grad():
        return model(x_adv).argmax(1) != y


def torchattacks_autoattack(model, x, y, eps, norm, classes, queries):
    import torchattacks

    attack = torchattacks.AutoAttack(model, norm="L2" if norm == "l2" else "Linf", eps=eps,
                                     version="standard", n_classes=classes, seed=0)
    for part in attack._autoattack.attacks:
        if isinstance(part, torchattacks.Square):
            part.n_queries = queries
        else:  # torchattacks leaves APGD, APGD-T and FAB at their default 10 iterations
            part.steps = 100  # the authors' standard version runs 100
    return _fooled(model, attack(x, y), y)


def components(model, x, y, eps, norm, classes, queries, device):
    """Each of our components and torchattacks' same component on all samples: fooled %
    and seconds."""
    import torchattacks

    tnorm = "L2" if norm == "l2" else "Linf"
    pairs = {
        "apgd-ce": (
            lambda: apgd(model, x, y, eps=eps, norm=norm, loss="ce").success,
            lambda: _fooled(model, torchattacks.APGD(model, norm=tnorm, eps=eps, steps=100,
                                                     n_restarts=1, loss="ce", seed=0)(x, y),
                            y)),
        "apgd-t": (
            lambda: autoattack(model, x, y, eps=eps, norm=norm, attacks=["apgd-t"]).success,
            lambda: _fooled(model, torchattacks.APGDT(model, norm=tnorm, eps=eps, steps=100,
                                                      n_restarts=1, n_classes=classes,
                                                      seed=0)(x, y), y)),
        "fab-t": (
            lambda: autoattack(model, x, y, eps=eps, norm=norm, attacks=["fab-t"]).success,
            lambda: _fooled(model, torchattacks.FAB(model, norm=tnorm, eps=eps, steps=100,
                                                    n_restarts=1, multi_targeted=True,
                                                    n_classes=classes, seed=0)(x, y), y)),
        "square": (
            lambda: square(model, x, y, eps=eps, norm=norm, queries=queries).success,
            lambda: _fooled(model, torchattacks.Square(model, norm=tnorm, eps=eps,
                                                       n_queries=queries, n_restarts=1,
                                                       p_init=0.8, seed=0)(x, y), y)),
    }
    print(f"\n| eps {eps:g} | ours fooled % | torchattacks fooled % | ours s | "
          "torchattacks s |")
    print("|---|---|---|---|---|")
    for name, (ours, theirs) in pairs.items():
        torch.manual_seed(0)
        t_ours, mine = timed(ours, device)
        t_theirs, peer = timed(theirs, device)
        print(f"| {name} | {100 * float(mine.float().mean()):.2f} | "
              f"{100 * float(peer.float().mean()):.2f} | {t_ours:.1f} | {t_theirs:.1f} |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_arguments(parser, max_samples=200)
    parser.add_argument("--norm", choices=("l2", "linf"), required=True)
    parser.add_argument("--eps", type=float, nargs="+", required=True)
    parser.add_argument("--square-queries", type=int, default=5000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--components", action="store_true",
                        help="also compare each component with torchattacks' own")
    parser.add_argument("--art-restarts", type=int, default=1,
                        help="ART's restarts (1: ours' settings; 5: autoattack-art's default)")
    parser.add_argument("--no-art", action="store_true")
    parser.add_argument("--no-torchattacks", action="store_true")
    args = parser.parse_args(argv)
    device, run, model = open_run(args)
    data = run.dataset(run.config["eval"]["split"])
    x, y, _ = next(batches(data, args.max_samples, device=device))
    with torch.no_grad():
        classes = model(x[:1]).shape[1]
    print(machine(device, args.threads))
    print(f"run {args.run_dir}; the first {len(y)} samples of {data.split}; {args.norm}; "
          f"Square {args.square_queries} queries; ART {args.art_restarts} restart(s)")
    print("| eps | ours acc | ART acc | torchattacks acc | ours s | ART s | torchattacks s | "
          "ART / ours | ours: APGD-CE / APGD-T / FAB-T / Square s |")
    print("|---|---|---|---|---|---|---|---|---|")
    fab(model, x[:4], y[:4], eps=args.eps[0], norm=args.norm, steps=2)  # warm-up
    for eps in args.eps:
        torch.manual_seed(0)
        t_ours, ours = timed(lambda eps=eps: autoattack(
            model, x, y, eps=eps, norm=args.norm, square_queries=args.square_queries), device)
        acc = [100 * float((~ours.success).float().mean())]
        seconds = [t_ours]
        if args.no_art:
            acc.append(float("nan"))
            seconds.append(float("nan"))
        else:
            np.random.seed(0)  # noqa: NPY002  (ART draws from numpy's global generator)
            t_art, art = timed(lambda eps=eps: art_autoattack(
                model, x, y, eps=eps, norm=args.norm, restarts=args.art_restarts,
                square_queries=args.square_queries, batch_size=args.batch_size), device)
            acc.append(100 * float((~art.success).float().mean()))
            seconds.append(t_art)
        if args.no_torchattacks:
            acc.append(float("nan"))
            seconds.append(float("nan"))
        else:
            t_ta, fooled = timed(lambda eps=eps: torchattacks_autoattack(
                model, x, y, eps, args.norm, classes, args.square_queries), device)
            acc.append(100 * float((~fooled).float().mean()))
            seconds.append(t_ta)
        split = " / ".join(f"{ours.seconds.get(c, 0.0):.1f}" for c in ours.components)
        print(f"| {eps:g} | " + " | ".join(f"{a:.2f}" for a in acc) + " | "
              + " | ".join(f"{s:.1f}" for s in seconds)
              + f" | {seconds[1] / seconds[0]:.1f} | {split} |")
    if args.components:
        for eps in args.eps:
            components(model, x, y, eps, args.norm, classes, args.square_queries, device)


if __name__ == "__main__":
    main()
