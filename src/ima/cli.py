"""The ``ima`` command line: a thin layer over the Python API."""

from __future__ import annotations

import argparse
import logging
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
    return parser


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
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s"
    )
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
