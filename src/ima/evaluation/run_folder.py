"""A run folder's evaluation (``evaluate_run``): what ``ima evaluate``, ``ima select`` and
the benchmarks call. Defaults come from the run's ``eval`` config section; a value given
is the value used. The result is saved under ``eval/`` (:func:`save_result`), and an
evaluation that is killed resumes from the batches it had finished (kept in
``eval/.partial-<settings>.pt`` until the result is written)."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from ..tasks import SegmentationTask
from .attacks import evaluation_attack
from .engine import evaluate
from .results import EvaluationResult, save_result

__all__ = ["evaluate_run"]

logger = logging.getLogger(__name__)

#: SPSA is evaluated on the first 10 samples of each class by default (appendix H.2).
SPSA_PER_CLASS = 10


def _given(value, default):
    return default if value is None else value


def evaluate_run(
    run_dir,
    *,
    epoch: int | None = None,
    eps=None,
    norm: str | None = None,
    attack: str | None = None,
    steps: int | None = None,
    split: str | None = None,
    max_samples: int | None = None,
    per_class: int | None = None,
    positive_class=None,
    options: dict | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    device="auto",
    precision: str | None = None,
    channels_last: bool | None = None,
    compile: bool | None = None,
    checks: bool = True,
    check_samples: int = 100,
    progress: bool = False,
    ctx=None,
    save: bool = True,
    resume: bool = True,
    trust_code: bool | None = None,
) -> tuple[EvaluationResult, Path | None]:
    """Evaluate the latest checkpoint of a run folder (or the one after ``epoch`` epochs);
    return the result and, with ``save``, the file it was written to (on the main process).

    Unset settings come from the run's config (``eval.eps``, ``eval.norm``,
    ``eval.attack``, ``eval.steps`` for the config's own attack, ``eval.split``,
    ``eval.max_samples``, ``eval.positive_class``, ``data.eval_batch_size`` and the speed
    options); the class names are the run's data's (``data.class_names`` of its
    config.yaml, or those its dataset gives). SPSA without
    ``max_samples`` or ``per_class`` takes the first 10 samples of each class (appendix
    H.2). The stored results of the run (``eval/*.json``) are the references of the
    white-box versus black-box check. ``resume``: keep finished batches in a file under
    ``eval/`` and start from them if a previous evaluation of the same settings was
    killed. device: ``"auto"`` (CUDA when available), or a torch device.
    """
    from ..acceleration import Accelerated, accelerate
    from ..runs import load_run
    from ..training import select_device

    run = load_run(run_dir, epoch=epoch, trust_code=trust_code)
    e = run.config["eval"]
    where = ctx.device if ctx is not None else select_device(device)
    net = accelerate(run.model.to(where), precision=_given(precision, e["precision"]),
                     channels_last=_given(channels_last, e["channels_last"]),
                     compile=_given(compile, e["compile"]), device=where)
    attack = _given(attack, e["attack"])
    classification = not isinstance(run.method.task, SegmentationTask)
    if per_class is None and attack == "spsa" and max_samples is None and classification:
        per_class = SPSA_PER_CLASS
    split = _given(split, e["split"])
    settings = dict(
        eps=_given(eps, e["eps"]), norm=_given(norm, e["norm"]), attack=attack,
        steps=_given(steps, e["steps"] if attack == e["attack"]
                     and evaluation_attack(attack).default_steps is not None else None),
        split_name=split,
        max_samples=_given(max_samples, None if per_class else e["max_samples"]),
        per_class=per_class, options=options,
        batch_size=_given(batch_size, run.config["data"]["eval_batch_size"]), seed=seed,
        positive_class=_given(positive_class, e["positive_class"]),
    )
    speed = {k: getattr(net, k, None) for k in ("precision", "channels_last")}
    speed["compile"] = _given(compile, e["compile"])
    partial = _partial_path(run.dir, run.epoch, {**settings, **speed}, ctx) if resume else None
    active = ctx if ctx is not None and ctx.active else None
    result = evaluate(net, run.dataset(split), task=run.method.task, progress=progress,
                      checks=checks, check_samples=check_samples,
                      references=_references(run.dir), ctx=active, partial=partial,
                      **settings)
    if isinstance(net, Accelerated):
        result.params = {**result.params, "precision": net.precision,
                         "channels_last": net.channels_last}
    result.epoch = run.epoch
    result.checkpoint = "latest" if epoch is None else f"epoch-{epoch:03d}"
    if not save or (ctx is not None and not ctx.is_main):
        return result, None
    return result, save_result(run.dir, result)


def _references(run_dir: Path) -> dict:
    """The run's stored results, by file name (files that are not results are skipped)."""
    out = {}
    for path in sorted((run_dir / "eval").glob("*.json")):
        try:
            out[path.name] = EvaluationResult.load(path)
        except (ValueError, TypeError) as err:
            logger.debug("skipping %s: %s", path, err)
    return out


def _partial_path(run_dir: Path, epoch: int, settings: dict, ctx) -> Path:
    """Where an evaluation of these settings keeps its finished batches (one file per
    process under torchrun); the engine checks the settings stored in it as well."""
    key = hashlib.sha256(repr((epoch, sorted(settings.items()))).encode()).hexdigest()[:16]
    rank = "" if ctx is None or not ctx.active else f"-rank{ctx.rank}"
    return run_dir / "eval" / f".partial-{key}{rank}.pt"
