"""The robustness curve at K noise levels against K independent 100-PGD evaluations.

``ima.evaluate`` attacks a sample at a larger eps only if it survived every smaller one
(a point adversarial at eps e is adversarial at any larger eps), so the curve should cost
much less than K separate evaluations, and its accuracies can only be equal or lower
(never a weaker attack). Goal: time ratio at most 0.5 at 5 levels.

    python benchmarks/curve_cost.py RUN_DIR [--levels 5] [--max-samples 500] [--device auto]
"""

from __future__ import annotations

import argparse

import torch
from common import machine, pick_device, timed

from ima import evaluate, load_run


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--levels", type=int, default=5, help="the first K nonzero eval.eps")
    parser.add_argument("--max-samples", type=int, default=500)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = pick_device(args.device)

    run = load_run(args.run_dir)
    model = run.model.to(device)
    e = run.config["eval"]
    levels = [x for x in e["eps"] if x > 0][: args.levels]
    data = run.dataset(e["split"])
    common = dict(norm=e["norm"], steps=100, max_samples=args.max_samples, checks=False,
                  task=run.method.task, batch_size=run.config["data"]["eval_batch_size"])
    print(machine(device, args.threads))
    print(f"run {args.run_dir}; {args.max_samples} samples of {e['split']}; "
          f"100-PGD ({e['norm']}, CE and margin loss) at eps {levels}")

    t_curve, curve = timed(lambda: evaluate(model, data, eps=levels, **common), device)
    t_each, single = 0.0, []
    for eps in levels:
        t, r = timed(lambda eps=eps: evaluate(model, data, eps=[eps], **common), device)
        t_each += t
        single.append(r.accuracy[-1])
    print("| eps | curve accuracy | independent accuracy |")
    print("|---|---|---|")
    for eps, a, b in zip(levels, curve.accuracy[1:], single, strict=True):
        print(f"| {eps:g} | {100 * a:.2f} | {100 * b:.2f} |")
    print(f"curve {t_curve:.2f} s, {len(levels)} independent runs {t_each:.2f} s, "
          f"ratio {t_curve / t_each:.3f}")
    weaker = [eps for eps, a, b in zip(levels, curve.accuracy[1:], single, strict=True) if a > b]
    print("curve never weaker" if not weaker else f"curve accuracy higher at eps {weaker}")


if __name__ == "__main__":
    main()
