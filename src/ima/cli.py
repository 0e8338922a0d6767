"""The ``ima`` command line: a thin layer over the Python API."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from . import __version__

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ima",
        description="Increasing-Margin Adversarial (IMA) training and robustness evaluation.",
    )
    parser.add_argument("--version", action="version", version=f"ima {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = commands.add_parser("train", help="train a model with a method from a YAML config")
    p.add_argument("--config", help="YAML config file (not needed with --resume)")
    p.add_argument("--out", help="run folder to create (or to continue with --resume)")
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
        help="override a config value (repeatable), e.g. --set train.epochs=5",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--resume", nargs="?", const=True, default=False, metavar="RUN_DIR",
        help="continue the run in RUN_DIR (or in --out) from its latest checkpoint",
    )
    mode.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    p.add_argument("--init-from", metavar="RUN_OR_CHECKPOINT", help="start from these weights")
    p.add_argument("--threads", type=int, help="number of torch threads (sets train.threads)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_train)

    p = commands.add_parser("evaluate", help="100-PGD robustness curve of a trained run")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--eps", help="comma-separated noise levels (default: the config's eval.eps)")
    p.add_argument("--norm", choices=("l2", "linf"), help="default: the config's eval.norm")
    p.add_argument("--steps", type=int, help="PGD iterations (default: eval.steps, 100)")
    p.add_argument("--split", choices=("train", "val", "test"), help="default: eval.split")
    p.add_argument("--max-samples", type=int, help="evaluate the first N samples only")
    p.add_argument("--epoch", type=int, help="evaluate the checkpoint saved after this epoch")
    p.add_argument("--batch-size", type=int, help="default: data.eval_batch_size")
    p.add_argument("--seed", type=int, default=0, help="seed of the random starts")
    p.add_argument("--threads", type=int, help="number of torch threads")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_evaluate)

    p = commands.add_parser("report", help="table of evaluation results of several runs")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--eval", default="pgd-l2-test", help="result name under eval/ "
                   "(default pgd-l2-test)")
    p.add_argument("--csv", metavar="FILE", help="also write the table as CSV")
    p.add_argument("--markdown", metavar="FILE", help="also write the table as Markdown")
    p.set_defaults(func=_report)
    return parser


def _parse_eps(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"--eps must be comma-separated numbers, got {text!r}") from None


def _evaluate(args) -> int:
    import torch

    from .evaluation import evaluate, result_path
    from .report import robustness_table
    from .runs import load_run

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    run = load_run(args.run_dir, epoch=args.epoch)
    e = run.config["eval"]
    split = args.split or e["split"]
    result = evaluate(
        run.model, run.dataset(split),
        eps=_parse_eps(args.eps) if args.eps else e["eps"],
        norm=args.norm or e["norm"],
        steps=args.steps or e["steps"],
        split_name=split,
        max_samples=args.max_samples or e["max_samples"],
        batch_size=args.batch_size or run.config["data"]["eval_batch_size"],
        seed=args.seed,
        task=run.method.task,
        progress=not args.no_progress,
    )
    path = result_path(run.dir, result)
    result.save(path)
    print(robustness_table([(run.dir.resolve().name, result)]).to_markdown())
    print(f"wrote {path} ({result.time_s:.1f} s)")
    return 0


def _report(args) -> int:
    from pathlib import Path

    from .report import load_results, robustness_table

    table = robustness_table(load_results(args.run_dirs, args.eval))
    print(table.to_markdown())
    if args.csv:
        Path(args.csv).write_text(table.to_csv())
    if args.markdown:
        Path(args.markdown).write_text(table.to_markdown())
    return 0


def _train(args) -> int:
    from .training import train

    out = args.resume if isinstance(args.resume, str) else args.out
    if out is None:
        raise UsageError("ima train needs --out RUN_DIR (or --resume RUN_DIR)")
    if not args.resume and args.config is None:
        raise UsageError("ima train needs --config FILE for a new run")
    overrides = list(args.overrides)
    if args.threads is not None:
        overrides.append(f"train.threads={args.threads}")
    if args.resume and overrides:
        raise UsageError("--set and --threads cannot change a resumed run's config")
    run = train(
        args.config, out, overrides=overrides, resume=bool(args.resume),
        overwrite=args.overwrite, progress=not args.no_progress, init_from=args.init_from,
    )
    last = run.metrics()[-1] if run.metrics() else {}
    summary = ", ".join(f"{k} {last[k]:.4f}" for k in ("train_acc", "val_acc") if k in last)
    print(f"trained {run.config['method']['name']} for {run.epoch} epochs into {run.dir}"
          + (f" ({summary})" if summary else ""))
    return 0


class UsageError(Exception):
    """A command-line mistake: reported as one line, exit status 2."""


def main(argv: list[str] | None = None) -> int:
    # User factories ("my_module:build") are imported by name; like `python -m`, let the
    # current folder hold them (a console script's sys.path starts at its own bin folder).
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    parser = build_parser()
    args = parser.parse_args(argv)
    # Per-epoch log lines are the progress report when there is no progress bar; beside a
    # bar they would break it, so they are shown only with -v then.
    quiet = not getattr(args, "no_progress", True)
    level = logging.DEBUG if args.verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(message)s")
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except UsageError as err:
        parser.error(str(err))
    except (ValueError, TypeError, FileNotFoundError, FileExistsError) as err:
        if args.verbose:
            raise
        print(f"ima {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
