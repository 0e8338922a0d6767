"""The robustness curve at K noise levels against K independent 100-PGD evaluations.

``ima.evaluate`` attacks a sample at a larger eps only if it survived every smaller one
(a point adversarial at eps e is adversarial at any larger eps), so the curve should cost
much less than K separate evaluations, and its accuracies can only be equal or lower
(never a weaker attack). Goal: time ratio at most 0.5 at 5 levels.

Two baselines, each a 100-PGD run per level with cross-entropy and margin loss and a
random start: "independent" is ``ima.evaluate`` at one level at a time (so it also stops
attacking a sample at its first adversarial iterate); "standard" attacks every
clean-correct sample for all 100 steps and judges the last iterate, as attack libraries
do by default. Also timed: the curve with each batch attacked alone (no refilling of the
working set across batches), to show what refilling saves.

    python benchmarks/curve_cost.py RUN_DIR [--levels 5] [--max-samples 500] [--batch-size B]
        [--repeats 3] [--device auto]
"""

from __future__ import annotations

import argparse

import torch
from common import add_run_arguments, machine, open_run, timed

from ima import evaluate, pgd
from ima.evaluation import inputs as evaluation
from ima.training import batches


def standard_pgd(model, data, eps, norm, steps, losses, task, batch_size, max_samples):
    """Per-level robust fraction of full-length PGD (no early stop), worst case over losses."""
    robust = n = 0
    device = next(model.parameters()).device
    for x, y, _ in batches(data, batch_size, order=None, device=device):
        x, y = x[: max_samples - n], y[: max_samples - n]
        with torch.no_grad():
            alive = task.correct(model(x), y)
        for loss in losses:
            r = pgd(model, x, y, eps=eps, norm=norm, steps=steps, step_size=eps / 10,
                    loss=loss, early_stop=False, bounds=getattr(data, "bounds", (0.0, 1.0)),
                    task=task)
            alive &= ~r.success
        robust += int(alive.sum())
        n += len(y)
        if n >= max_samples:
            break
    return robust / n


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_arguments(parser)
    parser.add_argument("--levels", type=int, default=5, help="the first K nonzero eval.eps")
    parser.add_argument("--repeats", type=int, default=1,
                        help="time the curve with and without refilling this many times")
    parser.add_argument("--batch-size", type=int,
                        help="samples attacked at once (default: the run's eval_batch_size)")
    args = parser.parse_args(argv)
    device, run, model = open_run(args)
    e = run.config["eval"]
    levels = [x for x in e["eps"] if x > 0][: args.levels]
    data = run.dataset(e["split"])
    common = dict(norm=e["norm"], steps=100, max_samples=args.max_samples, checks=False,
                  task=run.method.task,
                  batch_size=args.batch_size or run.config["data"]["eval_batch_size"])
    print(machine(device, args.threads))
    print(f"run {args.run_dir}; {args.max_samples} samples of {e['split']}; "
          f"100-PGD ({e['norm']}, CE and margin loss) at eps {levels}")

    evaluate(model, data, eps=levels, **{**common, "max_samples": 16})  # warm-up
    pool, times = evaluation.POOL_BATCHES, {"curve": [], "alone": []}
    curve = alone = None
    for r in range(args.repeats):  # alternating, best of the repeats
        for name in (("curve", "alone") if r % 2 == 0 else ("alone", "curve")):
            # "alone": one batch at a time, no refilling across batches
            evaluation.POOL_BATCHES = pool if name == "curve" else 1
            t, result = timed(lambda: evaluate(model, data, eps=levels, **common), device)
            times[name].append(t)
            curve, alone = (result, alone) if name == "curve" else (curve, result)
    evaluation.POOL_BATCHES = pool
    t_curve, t_alone = min(times["curve"]), min(times["alone"])
    passes = {}
    for name in ("curve", "alone"):  # untimed: forward passes and the rows they carry
        rows = []
        hook = model.register_forward_pre_hook(lambda m, inp, rows=rows: rows.append(
            inp[0].shape[0]))
        evaluation.POOL_BATCHES = pool if name == "curve" else 1
        evaluate(model, data, eps=levels, **common)
        hook.remove()
        passes[name] = (len(rows), sum(rows))
    evaluation.POOL_BATCHES = pool
    if alone.robust != curve.robust:
        print("warning: the curve without refilling differs (floating point across batch sizes)")
    t_each, single, t_std, std = 0.0, [], 0.0, []
    task = run.method.task
    for eps in levels:
        t, r = timed(lambda eps=eps: evaluate(model, data, eps=[eps], **common), device)
        t_each += t
        single.append(r.accuracy[-1])
        t, a = timed(lambda eps=eps: standard_pgd(
            model, data, eps, e["norm"], 100, task.attack_losses, task,
            common["batch_size"], args.max_samples), device)
        t_std += t
        std.append(a)
    print("| eps | curve accuracy | independent accuracy | standard accuracy |")
    print("|---|---|---|---|")
    for eps, a, b, c in zip(levels, curve.accuracy[1:], single, std, strict=True):
        print(f"| {eps:g} | {100 * a:.2f} | {100 * b:.2f} | {100 * c:.2f} |")
    print(f"curve without refilling (one batch at a time) {t_alone:.2f} s; refilled / "
          f"not {t_curve / t_alone:.3f}; forward passes {passes['curve'][0]} against "
          f"{passes['alone'][0]} ({passes['curve'][0] / passes['alone'][0]:.3f}), rows "
          f"{passes['curve'][1]} against {passes['alone'][1]}")
    print(f"curve {t_curve:.2f} s; {len(levels)} independent runs {t_each:.2f} s, ratio "
          f"{t_curve / t_each:.3f}; {len(levels)} standard runs {t_std:.2f} s, ratio "
          f"{t_curve / t_std:.3f}")
    # Every sample still robust at a level is attacked there for all steps with every
    # loss, by the curve as by any per-level run that is not weaker; the standard runs
    # attack every clean-correct sample so: the floor of the ratio of their rows.
    floor = sum(curve.accuracy[1:]) / (len(levels) * curve.accuracy[0])
    print(f"floor of the rows of curve / standard (robust samples attacked for all steps): "
          f"{floor:.3f}")
    for name, other in (("independent", single), ("standard", std)):
        weaker = [eps for eps, a, b in zip(levels, curve.accuracy[1:], other, strict=True)
                  if a > b + 1e-6]  # float32 means
        print(f"curve never weaker than {name}" if not weaker
              else f"curve accuracy above {name} at eps {weaker}")


if __name__ == "__main__":
    main()
