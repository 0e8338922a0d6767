"""The ``ima`` command line: a thin layer over the Python API."""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from pathlib import Path

from . import __version__
from .choices import AUTOATTACK_COMPONENTS, AUTOATTACK_VERSIONS, EVALUATION_ATTACK_NAMES

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ima",
        description="Increasing-Margin Adversarial (IMA) training and robustness evaluation.",
    )
    parser.add_argument("--version", action="version", version=f"ima {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument("--trust-code", action="store_true",
                        help="allow run folders whose config names code outside ima "
                        "('module:function' datasets, models or methods) to import it; "
                        "only for run folders you trust (also: IMA_TRUST_CODE=1)")
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
    p.add_argument("--threads", type=_int(1), help="number of torch threads (sets "
                   "train.threads; allowed with --resume)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_train)

    p = commands.add_parser("evaluate", help="robustness curve of a trained run (100-PGD, "
                            "SPSA, white noise, AutoAttack, minimal norms)")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--eps", type=_eps, help="comma-separated noise levels (default: the "
                   "config's eval.eps)")
    p.add_argument("--norm", choices=("l2", "linf"), help="default: the config's eval.norm")
    p.add_argument("--attack", choices=EVALUATION_ATTACK_NAMES,
                   help="pgd: the paper's 100-PGD (default: "
                   "eval.attack); spsa: black-box SPSA (appendix H.2); uniform-noise, "
                   "gaussian-noise: random noise; autoattack: AutoAttack (APGD-CE, APGD-T, "
                   "FAB-T, Square; also for segmenters); autoattack-art: ART's AutoAttack "
                   "as a cross-check (pip install 'ima[autoattack]'); ddn-min, "
                   "bpgd-min: per-sample minimal adversarial norms (DDN, or BPGD with a "
                   "doubling budget) and the curve read off them")
    p.add_argument("--steps", type=_int(1), help="attack iterations (default: eval.steps for the "
                   "config's attack, else the attack's own: 100, bpgd-min 20)")
    p.add_argument("--split", choices=("train", "val", "test"), help="default: eval.split")
    p.add_argument("--max-samples", type=_int(1), help="evaluate the first N samples only")
    p.add_argument("--per-class", type=_int(1), metavar="K", help="evaluate the first K samples "
                   "of each class only (default 10 for spsa, as appendix H.2; else all)")
    p.add_argument("--draws", type=_int(1), help="noise draws per sample and level (default 10; "
                   "the worst draw counts)")
    p.add_argument("--spsa-samples", type=_int(1), help="SPSA direction pairs per gradient "
                   "estimate (default 2048)")
    p.add_argument("--query-batch", type=_int(1), help="most SPSA queries per forward pass "
                   "(default 4096; bounds memory)")
    p.add_argument("--aa-version", choices=tuple(AUTOATTACK_VERSIONS), help="AutoAttack's version: "
                   "standard (default) or rand (APGD-CE and APGD-DLR with expectation over "
                   "transformation, for randomised models)")
    p.add_argument("--aa-attacks", type=_names(AUTOATTACK_COMPONENTS), metavar="LIST",
                   help="run only these AutoAttack components, in this order, e.g. "
                   f"apgd-ce,square (of {', '.join(AUTOATTACK_COMPONENTS)})")
    p.add_argument("--square-queries", type=_int(1), help="queries of AutoAttack's Square "
                   "(default 5000)")
    p.add_argument("--eot", type=_int(1), help="passes averaged per APGD iterate in "
                   "AutoAttack (default: 20 for --aa-version rand, else 1)")
    p.add_argument("--art-restarts", type=_int(1), help="restarts of each attack of "
                   "autoattack-art (default 5)")
    p.add_argument("--positive-class", metavar="NAME", help="positive class of sensitivity "
                   "and specificity: a class name (an index for data without names); "
                   "default eval.positive_class, else label 1")
    p.add_argument("--no-checks", action="store_true", help="skip the sanity checks")
    p.add_argument("--no-resume", action="store_true", help="start afresh instead of resuming "
                   "a killed evaluation of the same settings from the batches it had finished")
    p.add_argument("--check-samples", type=_int(1), default=100, help="samples the sanity checks "
                   "attack again (default 100)")
    p.add_argument("--epoch", type=_int(1), help="evaluate the checkpoint saved after this epoch")
    p.add_argument("--batch-size", type=_int(1), help="default: data.eval_batch_size")
    p.add_argument("--seed", type=_int(0), default=0, help="seed of the random starts")
    p.add_argument("--threads", type=_int(1), help="number of torch threads")
    p.add_argument("--device", default="auto",
                   help="where the model and attacks run (default auto: CUDA when available)")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"),
                   help="autocast precision of the model's forward pass (default: "
                   "eval.precision, fp32); attack arithmetic stays in fp32")
    p.add_argument("--channels-last", action="store_true", default=None,
                   help="run the model in the channels_last memory format")
    p.add_argument("--compile", action="store_true", default=None,
                   help="torch.compile the model")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_evaluate)

    p = commands.add_parser("report", help="table of evaluation results of several runs")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--eval", default="pgd-l2-test", help="result name under eval/ "
                   "(default pgd-l2-test); several, comma-separated, give one row per run "
                   "and result, e.g. pgd-l2-test,ddn-min-l2-test")
    p.add_argument("--metric", choices=("accuracy", "tvdi", "adi"), default="accuracy",
                   help="what the table shows: accuracy (default), or for segmentation "
                   "the total voxel Dice index (tvdi) or average Dice index (adi)")
    p.add_argument("--csv", metavar="FILE", help="also write the table as CSV")
    p.add_argument("--markdown", metavar="FILE", help="also write the table as Markdown")
    p.add_argument("--ci", action="store_true", help="accuracy cells as 'acc [lo, hi]' with "
                   "the Wilson 95%% interval")
    p.add_argument("--html", metavar="FILE", help="also write a self-contained HTML page "
                   "with the table and figures")
    p.set_defaults(func=_report)
    _add_analysis_commands(commands)
    _add_import_commands(commands)
    _add_measure_command(commands)
    _add_nnunet_commands(commands)
    return parser


def _int(low: int):
    """An argparse type: an integer of at least ``low`` (0 is never a stand-in for a
    default: a flag given is the value used)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value
    return parse


def _real(low: float, high: float | None = None):
    """An argparse type: a finite number in ``[low, high]``."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value) or value < low or (high is not None and value > high):
            bound = f"in [{low}, {high}]" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"must be a finite number {bound}, got {text}")
        return value
    return parse


def _names(allowed: tuple[str, ...]):
    """An argparse type: a comma-separated list of distinct names out of ``allowed``."""
    def parse(text: str) -> list[str]:
        names = [v.strip() for v in text.split(",")]
        unknown = [n for n in names if n not in allowed]
        if not text.strip() or unknown:
            raise argparse.ArgumentTypeError(
                f"expected a comma-separated list of {', '.join(allowed)}, got {text!r}")
        if len(set(names)) != len(names):
            raise argparse.ArgumentTypeError(f"a name is listed twice in {text!r}")
        return names
    return parse


def _eps(text: str) -> list[float]:
    """An argparse type: comma-separated noise levels, each a finite number >= 0."""
    parts = [v.strip() for v in text.split(",")]
    if not text.strip() or any(not v for v in parts):
        raise argparse.ArgumentTypeError(
            f"expected comma-separated noise levels such as 0,0.5,1, got {text!r}")
    return [_real(0.0)(v) for v in parts]


def _evaluate(args) -> int:
    from . import distributed
    from .training import select_device

    ctx = distributed.init(select_device(args.device))
    try:
        return _evaluate_in(args, ctx)
    finally:
        distributed.finish(ctx)


def _evaluate_in(args, ctx) -> int:
    """``ima evaluate`` in one process of ``ctx.world`` (torchrun shards the batches)."""
    import torch

    from .evaluation import evaluate_run
    from .reporting.tables import clinical_tables, robustness_table

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    elif ctx.active:
        torch.set_num_threads(1)
    options = {key: getattr(args, flag) for flag, key in (
        ("draws", "draws"), ("spsa_samples", "n_samples"), ("query_batch", "query_batch"),
        ("aa_version", "version"), ("aa_attacks", "attacks"),
        ("square_queries", "square_queries"), ("eot", "eot"), ("art_restarts", "restarts"))
        if getattr(args, flag) is not None}
    result, path = evaluate_run(
        args.run_dir, epoch=args.epoch, eps=args.eps, norm=args.norm, attack=args.attack,
        steps=args.steps, split=args.split, max_samples=args.max_samples,
        per_class=args.per_class, options=options, batch_size=args.batch_size,
        seed=args.seed, precision=args.precision, channels_last=args.channels_last,
        compile=args.compile, checks=not args.no_checks, check_samples=args.check_samples,
        progress=not args.no_progress, ctx=ctx, resume=not args.no_resume,
        positive_class=args.positive_class,
    )
    if not ctx.is_main:
        return 0
    labelled = [(Path(args.run_dir).resolve().name, result)]
    print(robustness_table(labelled).to_markdown())
    if result.tvdi is not None:
        for metric in ("tvdi", "adi"):
            print(robustness_table(labelled, metric=metric).to_markdown())
    for table in clinical_tables(labelled):
        print(table.to_markdown())
    for check in result.checks:
        verdict = {True: "passed", False: "FAILED", None: "skipped"}[check["passed"]]
        print(f"check {check['name']}: {verdict}: {check['detail']}")
    print(f"wrote {path} ({result.time_s:.1f} s)")
    return 0


def _report(args) -> int:
    from .reporting.tables import load_results, report_tables

    names = [name.strip() for name in args.eval.split(",") if name.strip()]
    results = []
    for name in names:
        for label, result in load_results(args.run_dirs, name):
            results.append((label if len(names) == 1 else f"{label} {name}", result))
    for flag in ("csv", "markdown", "html"):
        _check_output_file(getattr(args, flag), f"--{flag}")
    tables = report_tables(results, metric=args.metric, ci=args.ci)
    table, text = tables[0], "\n".join(t.to_markdown() for t in tables)
    print(text)
    written = []
    if args.csv:
        Path(args.csv).write_text(table.to_csv())
        written.append(args.csv)
    if args.markdown:
        Path(args.markdown).write_text(text)
        written.append(args.markdown)
    if args.html:
        from .reporting.html import html_report

        page = html_report(args.run_dirs, names[0], metric=args.metric, table=table)
        Path(args.html).parent.mkdir(parents=True, exist_ok=True)
        Path(args.html).write_text(page)
        written.append(args.html)
    for path in written:
        print(f"wrote {path}")
    return 0


def _train(args) -> int:
    from .training import train

    for flag, value in (("--resume", args.resume), ("--out", args.out),
                        ("--init-from", args.init_from), ("--config", args.config)):
        if isinstance(value, str) and not value.strip():
            raise UsageError(f"{flag} must name a path, got an empty value")
    out = args.resume if isinstance(args.resume, str) else args.out
    if out is None:
        raise UsageError("ima train needs --out RUN_DIR (or --resume RUN_DIR)")
    if not args.resume and args.config is None:
        raise UsageError("ima train needs --config FILE for a new run")
    if args.resume and args.config is not None:
        raise UsageError("--resume runs the config stored in the run folder; leave out "
                         "--config (change safe settings with --set)")
    overrides = list(args.overrides)
    if args.threads is not None:
        overrides.append(f"train.threads={args.threads}")
    run = train(
        args.config, out, overrides=overrides, resume=bool(args.resume),
        overwrite=args.overwrite, progress=not args.no_progress, init_from=args.init_from,
    )
    last = run.metrics()[-1] if run.metrics() else {}
    summary = ", ".join(f"{k} {last[k]:.4f}" for k in ("train_acc", "val_acc") if k in last)
    print(f"trained {run.config['method']['name']} for {run.epoch} epochs into {run.dir}"
          + (f" ({summary})" if summary else ""))
    return 0


# --- analyses and figures (plot, select, suggest-eps, export) ---------------------------


def _add_analysis_commands(commands) -> None:
    p = commands.add_parser("plot", help="figures of trained runs (PNG and PDF)")
    kinds = p.add_subparsers(dest="figure", metavar="FIGURE", required=True)
    out_help = ("figure file; PNG and PDF are both written (default: RUN_DIR/figures/"
                "NAME.png for one run, NAME.png in the current folder for several)")

    q = kinds.add_parser("boundary", help="decision boundaries of 2-D models (Fig. 6) and "
                         "their distance from the Bayes-optimal boundary (Moons)")
    q.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    q.add_argument("--out", metavar="FILE", help=out_help)
    q.add_argument("--split", choices=("train", "val", "test"), default="test")
    q.add_argument("--resolution", type=_int(1), default=200, help="grid points per axis")
    q.add_argument("--epoch", type=_int(1), help="use the checkpoint saved after this epoch")
    q.set_defaults(func=_plot_boundary)

    q = kinds.add_parser("margins", help="histograms of the margins estimated by IMA/MMA "
                         "(Fig. 7, 10)")
    q.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    q.add_argument("--out", metavar="FILE", help=out_help)
    q.add_argument("--bins", type=_int(1), default=40)
    q.add_argument("--overlay", action="store_true", help="all runs on one axis")
    q.add_argument("--epoch", type=_int(1), help="use the checkpoint saved after this epoch")
    q.set_defaults(func=_plot_margins)

    q = kinds.add_parser("curves", help="training/validation accuracy and margins against "
                         "epoch (Fig. 8, 9)")
    q.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    q.add_argument("--out", metavar="FILE", help=out_help)
    q.set_defaults(func=_plot_curves)

    q = kinds.add_parser("noise", help="accuracy against noise level of several runs")
    q.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    q.add_argument("--eval", default="pgd-l2-test", help="result name under eval/ "
                   "(default pgd-l2-test)")
    q.add_argument("--out", metavar="FILE", help=out_help)
    q.set_defaults(func=_plot_noise)

    q = kinds.add_parser("samples", help="clean and 100-PGD adversarial images, taken in "
                         "turns from each class, beside their amplified perturbations, with "
                         "the predicted labels (Fig. 1, 15)")
    q.add_argument("run_dir", metavar="RUN_DIR")
    q.add_argument("--eps", type=_eps, help="comma-separated noise levels (default: eval.eps)")
    q.add_argument("--n", type=_int(1), default=8, help="number of images (rows)")
    q.add_argument("--steps", type=_int(1), default=100, help="PGD iterations (default 100)")
    q.add_argument("--norm", choices=("l2", "linf"), help="default: the config's eval.norm")
    q.add_argument("--split", choices=("train", "val", "test"), default="test")
    q.add_argument("--seed", type=_int(0), default=0, help="seed of the random starts")
    q.add_argument("--epoch", type=_int(1), help="use the checkpoint saved after this epoch")
    q.add_argument("--threads", type=_int(1), help="number of torch threads")
    q.add_argument("--out", metavar="FILE", help=out_help)
    q.set_defaults(func=_plot_samples)

    p = commands.add_parser("select", help="choose the kept checkpoint (two or more) with "
                            "the largest margins whose validation accuracy meets a threshold "
                            "(appendix C.2)")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--min-val-acc", type=_real(0.0, 1.0), required=True, metavar="FRACTION",
                   help="least clean validation accuracy, e.g. 0.9")
    p.add_argument("--eps", type=_eps, help="comma-separated noise levels (default: eval.eps)")
    p.add_argument("--norm", choices=("l2", "linf"), help="default: the config's eval.norm")
    p.add_argument("--steps", type=_int(1), help="PGD iterations (default: eval.steps, 100)")
    p.add_argument("--split", choices=("train", "val", "test"), default="test",
                   help="split the checkpoints are attacked on (default test; val gives "
                   "appendix H.1's tables)")
    p.add_argument("--max-samples", type=_int(1), help="evaluate the first N samples only")
    p.add_argument("--batch-size", type=_int(1), help="default: data.eval_batch_size")
    p.add_argument("--seed", type=_int(0), default=0, help="seed of the random starts")
    p.add_argument("--no-reuse", action="store_true",
                   help="re-evaluate checkpoints even if results with the same settings exist")
    p.add_argument("--threads", type=_int(1), help="number of torch threads")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_select)

    p = commands.add_parser("suggest-eps", help="a noise level for vanilla adversarial "
                            "training from IMA's margins (appendix C.3)")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--quantile", type=_real(0.0, 1.0), default=0.25,
                   help="quantile of the margins (default 0.25: 75%% of the samples have a "
                   "larger margin)")
    p.add_argument("--epoch", type=_int(1), help="use the checkpoint saved after this epoch")
    p.set_defaults(func=_suggest_eps)

    p = commands.add_parser("export", help="write the trained model for deployment and check "
                            "it against the original")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--format", choices=("torchscript", "onnx", "export"),
                   default="torchscript", help="torchscript (default), onnx (needs "
                   "`pip install 'ima[onnx]'`) or export (torch.export .pt2)")
    p.add_argument("--out", metavar="FILE", help="default: RUN_DIR/export/model-epoch-NNN.*")
    p.add_argument("--epoch", type=_int(1), help="export the checkpoint saved after this epoch")
    p.add_argument("--n-check", type=_int(1), default=16, help="test inputs to compare on")
    p.add_argument("--atol", type=_real(0.0), default=1e-4, help="absolute tolerance")
    p.add_argument("--rtol", type=_real(0.0), default=1e-4,
                   help="tolerance relative to the largest output")
    p.set_defaults(func=_export)


def _figure_out(args, name: str):
    if args.out is not None:
        if not args.out.strip():
            raise UsageError("--out must name a file, got an empty value")
        return Path(args.out)
    dirs = getattr(args, "run_dirs", None) or [args.run_dir]
    return Path(dirs[0]) / "figures" / name if len(dirs) == 1 else Path(name)


def _save(fig, args, name: str) -> None:
    from .reporting.figures import save_figure

    for path in save_figure(fig, _figure_out(args, name)):
        print(f"wrote {path}")


def _plot_boundary(args) -> int:
    from .reporting.figures import plot_boundaries

    fig, comparisons = plot_boundaries(args.run_dirs, split=args.split,
                                       resolution=args.resolution, epoch=args.epoch)
    for run_dir, c in zip(args.run_dirs, comparisons, strict=True):
        if c is None:
            print(f"{run_dir}: no Bayes reference (not Moons data)")
        else:
            print(f"{run_dir}: mean distance to the Bayes boundary {c.mean_distance:.4f} "
                  f"(model->Bayes {c.model_to_reference:.4f}, Bayes->model "
                  f"{c.reference_to_model:.4f}, max {c.hausdorff:.4f}); disagreement "
                  f"{100 * c.disagreement:.2f}% of the data's bounding box")
    _save(fig, args, "boundary")
    return 0


def _plot_margins(args) -> int:
    from .reporting.figures import plot_margins

    _save(plot_margins(args.run_dirs, bins=args.bins, overlay=args.overlay,
                       epoch=args.epoch), args, "margins")
    return 0


def _plot_curves(args) -> int:
    from .reporting.figures import plot_curves

    _save(plot_curves(args.run_dirs), args, "curves")
    return 0


def _plot_noise(args) -> int:
    from .reporting.figures import plot_noise

    _save(plot_noise(args.run_dirs, args.eval), args, "noise")
    return 0


def _plot_samples(args) -> int:
    import torch

    from .analysis import samples_by_class
    from .reporting.figures import plot_samples
    from .runs import load_run

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    run = load_run(args.run_dir, epoch=args.epoch)
    samples = samples_by_class(run, eps=args.eps, n=args.n, steps=args.steps,
                               split=args.split, norm=args.norm, seed=args.seed)
    fig = plot_samples(samples, label=Path(args.run_dir).resolve().name,
                       classes=run.config["model"].get("num_classes"),
                       class_names=run.config["data"].get("class_names"))
    _save(fig, args, "samples")
    return 0


def _select(args) -> int:
    import torch

    from .analysis import (
        epoch_table,
        eps_max_table,
        evaluate_checkpoints,
        select_checkpoint,
        selectable_epochs,
    )
    from .runs import read_config, read_metrics

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    run_dir = Path(args.run_dir)
    config, metrics = read_config(run_dir), read_metrics(run_dir)
    selection = select_checkpoint(metrics, selectable_epochs(run_dir, config),
                                  min_val_acc=args.min_val_acc)
    results = evaluate_checkpoints(
        run_dir, eps=args.eps, norm=args.norm,
        steps=args.steps, split=args.split, max_samples=args.max_samples,
        batch_size=args.batch_size, seed=args.seed, reuse=not args.no_reuse,
        progress=not args.no_progress,
    )
    tables = [eps_max_table(config, results, metrics, selection), epoch_table(results)]
    verdict = ("chosen: " if selection.epoch is not None else "none chosen: ") + selection.reason
    text = "\n".join(t.to_markdown() for t in tables) + f"\n{verdict}\n"
    print(text)
    base = run_dir / "eval" / f"select-{args.split}"
    base.with_suffix(".md").write_text(text)
    base.with_suffix(".csv").write_text(tables[0].to_csv())
    Path(f"{base}-epochs.csv").write_text(tables[1].to_csv())
    print(f"wrote {base}.md, {base}.csv and {base}-epochs.csv")
    return 0 if selection.epoch is not None else 1


def _suggest_eps(args) -> int:
    from .analysis import run_margins, suggest_eps
    from .runs import load_run

    run = load_run(args.run_dir, epoch=args.epoch)
    margins, eps_max, method = run_margins(run)
    if method != "ima":
        print(f"note: {args.run_dir} was trained with {method}, not ima; its margins may be "
              "overestimated (Fig. 7)")
    suggestion = suggest_eps(margins, quantile=args.quantile, eps_max=eps_max, method=method)
    print(f"{args.run_dir} (epoch {run.epoch}):")
    print(suggestion.summary())
    return 0


# --- a dataset's scale before training (measure) ----------------------------------------


def _add_measure_command(commands) -> None:
    p = commands.add_parser(
        "measure", help="before training: how far apart a dataset's classes lie (distance "
        "of each sample to the nearest of another class, L2 and Linf, L2 also as per-pixel "
        "RMS) and the noise levels and eps_max that follow")
    p.add_argument("--config", required=True, help="YAML config naming the data")
    p.add_argument("--split", choices=("train", "val", "test"), default="train",
                   help="default: train")
    p.add_argument("--max-samples", type=_int(2), default=2000, help="measure a seeded random "
                   "subset of this many samples (default 2000)")
    p.add_argument("--seed", type=_int(0), default=0, help="seed of the subset")
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
        help="override a config value (repeatable)")
    p.set_defaults(func=_measure)


def _measure(args) -> int:
    import torch

    from .analysis.data_scale import measure_data
    from .assemble import data_bounds, data_task, dataset_from_config
    from .config import apply_overrides, read_config_file, resolve_data
    from .tasks import ClassificationTask

    # only the data section: the model named in the config is never imported
    raw = apply_overrides(read_config_file(args.config), args.overrides)
    config = {"data": resolve_data(raw.get("data"))}
    data = dataset_from_config(config, args.split)
    if not isinstance(data_task(data), ClassificationTask):
        raise UsageError("ima measure measures class distances of classification data; "
                         f"{config['data']['name']!r} is a segmentation dataset")
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(args.seed))
    picked = [data[int(i)] for i in order[:args.max_samples]]
    x = torch.stack([torch.as_tensor(item[0]) for item in picked])
    y = torch.tensor([int(item[1]) for item in picked])
    scale = measure_data(x, y, bounds=data_bounds(data), max_samples=len(y))
    print(f"{config['data']['name']} ({args.split}): {scale.summary()}")
    return 0


# --- models trained elsewhere (import-model) ----------------------------------------------


def _add_import_commands(commands) -> None:
    p = commands.add_parser(
        "import-model", help="make a run folder from a model trained elsewhere (its factory "
        "named in a config, and its state_dict), for evaluate, report, plot and export")
    p.add_argument("--config", required=True, help="YAML config naming the data and the "
                   "model (model.name: a registered name or your factory 'module:function')")
    p.add_argument("--weights", required=True, metavar="FILE", help="the model's state_dict, "
                   "saved with torch.save(model.state_dict(), FILE) (a whole pickled model "
                   "is not read)")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder to create")
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
        help="override a config value (repeatable), e.g. --set eval.eps=[0,0.5,1]",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing ima run "
                   "folder (only what ima wrote in it)")
    p.set_defaults(func=_import_model)


def _import_model(args) -> int:
    from .importing import import_model

    for flag in ("config", "weights", "out"):
        if not getattr(args, flag).strip():
            raise UsageError(f"--{flag} must name a path, got an empty value")
    run = import_model(args.config, args.weights, args.out, overrides=args.overrides,
                       overwrite=args.overwrite)
    name = run.config["model"]["name"]
    params = sum(p.numel() for p in run.model.parameters())
    print(f"imported {name} ({params} parameters) from {args.weights} into {run.dir} "
          "(epoch 0, no training metrics)")
    if any(":" in str(run.config[s]["name"]) for s in ("data", "model")):
        print(f"its config names your code: open it with --trust-code, e.g. "
              f"ima --trust-code evaluate {run.dir}")
    return 0


# --- nnU-Net v2 (ima.integrations.nnunet) ---------------------------------------------------


def _add_nnunet_commands(commands) -> None:
    from .integrations.nnunet.launcher import TRAINERS  # names only: no nnU-Net, no torch

    p = commands.add_parser("nnunet", help="IMA inside nnU-Net v2: train with ima's trainers, "
                            "evaluate what nnU-Net trained (pip install 'ima[nnunet]')")
    kinds = p.add_subparsers(dest="nnunet_command", metavar="KIND", required=True)
    q = kinds.add_parser("trainer-path", help="print the folder to put in nnUNet_extTrainer so "
                         "that nnUNetv2_train -tr nnUNetTrainerIMA finds ima's trainers")
    q.set_defaults(func=_nnunet_trainer_path)

    q = kinds.add_parser("train", help="nnUNetv2_train for ima's trainers, without nnU-Net's "
                         "lookup of trainers by name (which imports timm)")
    q.add_argument("dataset", metavar="DATASET", help="dataset name or id")
    q.add_argument("configuration", metavar="CONFIGURATION", help="e.g. 2d")
    q.add_argument("fold", metavar="FOLD", help="0-4 or all")
    q.add_argument("-tr", dest="trainer", default="nnUNetTrainerIMA",
                   choices=TRAINERS,
                   help="default nnUNetTrainerIMA")
    q.add_argument("-p", dest="plans", default="nnUNetPlans", help="plans identifier")
    q.add_argument("-device", dest="device", default="cuda", choices=("cuda", "cpu", "mps"),
                   help="default cuda")
    q.add_argument("--c", dest="continue_training", action="store_true",
                   help="continue from the latest checkpoint")
    q.add_argument("--val", dest="validation_only", action="store_true",
                   help="only run the final validation")
    q.add_argument("--npz", action="store_true", help="save the validation's probabilities")
    q.add_argument("--disable_checkpointing", action="store_true")
    q.add_argument("--threads", type=_int(1), help="torch threads (default: torch's)")
    q.set_defaults(func=_nnunet_train)

    q = kinds.add_parser("evaluate", help="100-PGD (or another attack) on the 2-D slices of "
                         "a fold's validation cases; result in FOLD_FOLDER/eval/")
    q.add_argument("fold_folder", metavar="FOLD_FOLDER",
                   help="nnUNet_results/DATASET/TRAINER__PLANS__2d/fold_N")
    q.add_argument("--eps", type=_eps, required=True, help="comma-separated L2 noise levels "
                   "in nnU-Net's normalised units, e.g. 0,1,5,10,15")
    q.add_argument("--cases", help="comma-separated preprocessed cases (default: the fold's "
                   "validation cases)")
    q.add_argument("--split-name", help="name of the result's split (default: validation, or "
                   "cases with --cases)")
    q.add_argument("--checkpoint", default="checkpoint_final.pth")
    q.add_argument("--attack", choices=EVALUATION_ATTACK_NAMES, default="pgd")
    q.add_argument("--steps", type=_int(1), help="attack iterations (default 100)")
    q.add_argument("--batch-size", type=_int(1), default=32, help="slices per batch")
    q.add_argument("--device", default="cpu", help="default cpu")
    q.add_argument("--threads", type=_int(1), help="torch threads (default: torch's)")
    q.add_argument("--no-checks", action="store_true", help="skip the sanity checks")
    q.set_defaults(func=_nnunet_evaluate)


def _nnunet_trainer_path(args) -> int:
    from .integrations.nnunet import trainer_path

    print(trainer_path())
    return 0


def _threads(n) -> None:
    if n is not None:
        import torch

        torch.set_num_threads(n)


def _nnunet_train(args) -> int:
    from .integrations.nnunet.launcher import train

    _threads(args.threads)
    t = train(args.dataset, args.configuration, args.fold, trainer=args.trainer,
              plans=args.plans, device=args.device, continue_training=args.continue_training,
              validation_only=args.validation_only, export_probabilities=args.npz,
              disable_checkpointing=args.disable_checkpointing)
    print(f"{args.trainer}: {t.current_epoch} epochs in {t.output_folder}")
    return 0


def _nnunet_evaluate(args) -> int:
    from .integrations.nnunet.evaluation import evaluate_fold

    _threads(args.threads)
    cases = None
    if args.cases is not None:
        cases = [c.strip() for c in args.cases.split(",") if c.strip()]
        if not cases:
            raise UsageError(f"--cases names no case: {args.cases!r}")
    result, path = evaluate_fold(
        args.fold_folder, eps=args.eps, cases=cases, checkpoint=args.checkpoint,
        attack=args.attack, steps=args.steps, batch_size=args.batch_size, device=args.device,
        split_name=args.split_name, checks=not args.no_checks)
    cells = ", ".join(f"eps {e:g}: accuracy {a:.4f}, TVDI {t:.4f}, ADI {d:.4f}" for e, a, t, d
                      in zip(result.eps, result.accuracy, result.tvdi, result.adi, strict=True))
    print(f"{result.n_samples} slices; {cells}")
    print(f"wrote {path}")
    return 0


def _check_output_file(path, flag: str) -> None:
    """A one-line error when an output file names a folder or sits below a file."""
    if path is None:
        return
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{flag} {str(path)!r} is a folder; give a file name")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UsageError(f"{flag} {str(path)!r}: {str(parent)!r} is a file")
            break


def _export(args) -> int:
    from .exporting import export_model

    _check_output_file(args.out, "--out")

    result = export_model(args.run_dir, format=args.format, path=args.out, epoch=args.epoch,
                          n_check=args.n_check, atol=args.atol, rtol=args.rtol)
    print(result.summary())
    return 0


class UsageError(Exception):
    """A command-line mistake: reported as one line, exit status 2."""


def main(argv: list[str] | None = None) -> int:
    # User factories ("my_module:build") are imported by name; let the current folder
    # hold them (a console script's sys.path starts at its own bin folder). Appended, not
    # prepended: a file in the current folder (a run folder someone sent, say) must never
    # shadow an installed module that ima imports (matplotlib.py, torch.py...).
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())
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
    if args.trust_code:
        os.environ["IMA_TRUST_CODE"] = "1"  # also seen by torchrun's other processes' parse
    try:
        return args.func(args)
    except UsageError as err:
        parser.error(str(err))
    except (ValueError, TypeError, OSError, ImportError) as err:
        if args.verbose:
            raise
        print(f"ima {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
