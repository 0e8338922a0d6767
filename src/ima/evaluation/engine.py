"""Robustness curves (``ima.evaluate``): the orchestration every evaluation attack shares.

Protocol of the default attack, 100-PGD (section 3): for each noise level ``eps``, 100
PGD iterations of step ``eps / 10`` from a random start, run once with cross-entropy and
once with the margin (Carlini-Wagner) loss; a sample is robust at ``eps`` only if it is
classified correctly on clean data and neither run finds an adversarial point (worst case
per sample). A point adversarial at some ``eps`` lies in every larger ball, so a sample
fooled at a smaller level is counted as fooled at all larger levels without being
attacked again. Accuracy is over all samples of the split, or over its first
``max_samples``.

:func:`evaluate` only orchestrates: it checks the inputs, cuts the data into batches (and,
for attacks that take them, pools of up to 32 batches), gives every batch the seed of its
position (so a result does not depend on pooling or on the number of processes, up to
float rounding between forward passes of different sizes), hands the batches to the
evaluation attack (:mod:`ima.evaluation.attacks`: each implements one interface), and
assembles the :class:`~ima.evaluation.results.EvaluationResult`: Wilson intervals, per-class
accuracies (sensitivity and specificity of a named positive class for binary models), the
confusion matrix at each level (from the robust masks and one clean pass per batch, made
here), the data's class names, for segmentation the TVDI and ADI of appendix I, and the
sanity checks of :mod:`ima.evaluation.sanity`. With ``partial=`` it keeps what it has
finished in a file and resumes from it.

Segmentation (a :class:`~ima.tasks.SegmentationTask`: correct means Dice above its
threshold): each PGD run goes its full ``steps`` on every sample (a Dice can always drop
further); a sample counts as fooled by a run if any iterate was wrong, and the point whose
Dice is scored is, per sample, the last iterate with the lowest Dice over the runs of
every loss at this and every smaller level. An image without a Dice at a level (empty
truth and prediction under ``empty_dice="skip"``) is not counted in that level's accuracy.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import distributed, lp
from ..assemble import data_bounds, data_class_names, data_task
from ..data.dataset import check_class_names
from ..modes import eval_mode, kept_random_state
from ..stats import wilson_interval
from ..tasks import get_task
from ..validation import check_bounds, check_int, check_real
from .attacks import Setting, evaluation_attack
from .inputs import (
    check_inputs,
    check_output,
    class_labels,
    data_batches,
    eps_values,
    first_per_class,
    model_device,
    pools,
    to_cpu,
)
from .results import (
    EvaluationResult,
    auc,
    confusion_matrices,
    overlap_metrics,
    per_class_stats,
    positive_index,
)
from .sanity import cross_checks, run_checks

__all__ = ["evaluate"]

logger = logging.getLogger(__name__)


@dataclass
class _Plan:
    """One evaluation's validated settings."""

    attack: object
    setting: Setting
    levels: list[float]
    seed: int
    max_samples: int | None
    subset: str | None
    indices: list[int] | None
    checks: bool
    check_samples: int
    clean_level_added: bool
    class_names: list[str] | None
    positive_class: object


def evaluate(
    model: torch.nn.Module,
    data,
    *,
    eps,
    norm: str = "l2",
    attack: str = "pgd",
    steps: int | None = None,
    losses=None,
    random_start: bool = True,
    bounds="auto",
    split_name: str | None = None,
    max_samples: int | None = None,
    batch_size: int = 512,
    seed: int = 0,
    task="auto",
    progress: bool = False,
    per_class: int | None = None,
    options: dict | None = None,
    checks: bool = True,
    check_samples: int = 100,
    references=(),
    ctx=None,
    partial=None,
    class_names="auto",
    positive_class=None,
) -> EvaluationResult:
    """Accuracy of ``model`` under an attack (100-PGD by default) at each noise level of
    ``eps`` (L2 or Linf).

    data: a Dataset or an iterable of batches yielding ``(x, y)`` or ``(x, y, index)``.
    eps: absolute perturbation norms (a number, a list or a 1-D tensor); 0 (clean
    accuracy) is added if missing (``result.clean_level_added`` says so) and the levels
    are sorted. bounds: the valid input
    range; ``"auto"`` reads ``data.bounds`` (or ``data.dataset.bounds``), defaulting to
    ``(0, 1)``; None = unbounded. max_samples: evaluate the first ``max_samples`` samples
    only (recorded as the subset). losses: the losses of the PGD runs; None is the task's
    ``attack_losses``. task: ``"auto"`` reads ``data.task`` like bounds; None is
    classification. The model's mode and parameters are left as they were; results are
    reproducible for a given ``seed`` (the random starts).

    attack: a name of :data:`~ima.evaluation.attacks.EVALUATION_ATTACKS` (``"pgd"``,
    ``"spsa"``, ``"uniform-noise"``, ``"gaussian-noise"``, ``"autoattack"``,
    ``"ddn-min"``, ``"bpgd-min"``); steps: its iterations, None for its default (100;
    ``bpgd-min`` 20); options: its own settings, e.g. ``{"n_samples": 2048}`` for SPSA
    (unknown keys are errors). per_class: the first ``per_class`` samples of each class
    only (appendix H.2; classification; not with ``max_samples``).
    checks: run the sanity checks on the first ``check_samples`` samples and record them
    in ``result.checks``; references: results of other attacks on the same data (a
    sequence, or a mapping from a label to a result) for the white-box versus black-box
    check. ctx: the :class:`ima.distributed.Context` of a torchrun process group (each
    process attacks every ``world``-th batch; all get the whole result). partial: a file
    where finished batches are kept, so that a killed evaluation resumes from them with
    the result of an uninterrupted run (one file per process under torchrun).
    class_names: the classes' names in label order, recorded in the result; ``"auto"``
    reads ``data.class_names`` like bounds (None: the data has none). positive_class: the
    positive class of a binary model's sensitivity and specificity, a class name (or a
    label for data without names); None is label 1. The result records it
    (``positive_class``, ``positive_class_name``); a name that is not a class is a
    ``ValueError`` naming the choices.
    """
    task = data_task(data) if task == "auto" else get_task(task)
    if bounds == "auto":
        bounds = data_bounds(data)
    if isinstance(class_names, str) and class_names == "auto":
        class_names = data_class_names(data)
    plan = _plan(attack=attack, norm=norm, steps=steps, losses=losses, task=task,
                 random_start=random_start, bounds=bounds, eps=eps, batch_size=batch_size,
                 seed=seed, max_samples=max_samples, per_class=per_class, options=options,
                 checks=checks, check_samples=check_samples, class_names=class_names,
                 positive_class=positive_class)
    if per_class is not None:
        data, plan.indices = first_per_class(data, per_class, batch_size)
    began = time.perf_counter()
    with kept_random_state(), eval_mode(model):
        parts, n, kept = _attack_batches(model, data, plan, ctx, progress, partial)
        found = _sanity(model, plan, parts, kept, ctx)
    result = _result(plan, parts, n, split_name, found)
    result.time_s = time.perf_counter() - began
    if plan.checks:
        result.checks += cross_checks(result, _labelled(references))
    logger.info("evaluated %d samples: %s", n, ", ".join(
        f"eps {e:g}: {a:.4f}" for e, a in zip(plan.levels, result.accuracy, strict=True)))
    return result


def _plan(*, attack, norm, steps, losses, task, random_start, bounds, eps, batch_size, seed,
          max_samples, per_class, options, checks, check_samples, class_names,
          positive_class) -> _Plan:
    """Validate the settings (one-line errors naming the parameter)."""
    chosen = evaluation_attack(attack)
    lp.check_norm(norm)
    if norm not in chosen.norms:
        raise ValueError(f"attack {attack!r} supports norm "
                         f"{', '.join(map(repr, chosen.norms))}, got {norm!r}")
    if steps is None:
        steps = chosen.default_steps
    elif chosen.default_steps is None:
        raise ValueError(f"attack {attack!r} has no iterations: steps does not apply")
    if steps is not None:
        check_int("steps", steps, low=1)
    check_int("batch_size", batch_size, low=1)
    check_int("seed", seed, low=0)
    check_int("check_samples", check_samples, low=1)
    if max_samples is not None:
        check_int("max_samples", max_samples, low=1)
    if per_class is not None:
        check_int("per_class", per_class, low=1)
        if max_samples is not None:
            raise ValueError("give max_samples or per_class, not both")
    losses = task.attack_losses if losses is None else tuple(losses)
    if not losses:
        raise ValueError("losses must name at least one loss")
    for loss in losses:
        task.check_loss(loss)
    levels = sorted({check_real("eps", e, low=0.0) for e in eps_values(eps)})
    clean_level_added = levels[0] != 0.0
    if clean_level_added:
        levels.insert(0, 0.0)
    names = check_class_names(class_names, key="class_names")
    if names is not None:  # a bad positive class fails before any attack
        positive_index(positive_class, names, len(names))
    setting = Setting(norm=norm, steps=steps, losses=losses, random_start=random_start,
                      bounds=check_bounds(bounds), task=task,
                      options=chosen.resolve(options, levels), batch_size=batch_size)
    subset = (f"first {per_class} samples of each class" if per_class is not None
              else None if max_samples is None else f"first {max_samples} samples")
    return _Plan(chosen, setting, levels, seed, max_samples, subset, None, checks,
                 check_samples, clean_level_added, None if names is None else list(names),
                 positive_class)


def _attack_batches(model, data, plan: _Plan, ctx, progress: bool, partial):
    """Attack this process's batches; return every process's outcomes by batch position,
    the number of samples, and the first ``check_samples`` samples for the sanity checks."""
    rank, world = (0, 1) if ctx is None else (ctx.rank, ctx.world)
    device, dtype = model_device(model), next((p.dtype for p in model.parameters()), None)
    store = _PartialStore(partial, plan, world)
    parts = store.load()
    kept, count, classes = [], [0], [None]

    def own_batches():
        for position, (x, y) in enumerate(data_batches(data, plan.setting.batch_size)):
            if plan.max_samples is not None:
                if count[0] >= plan.max_samples:
                    break
                x, y = x[: plan.max_samples - count[0]], y[: plan.max_samples - count[0]]
            count[0] += len(y)
            check_inputs(x, dtype)
            if position == 0:
                classes[0] = check_output(model, x[:1].to(device))
                if class_labels(y):
                    _check_classes(plan, classes[0])
            room = plan.check_samples - sum(len(c[1]) for c in kept)
            # the checks batch their samples together: those of the first batch's size
            same = not kept or kept[0][0].shape[1:] == x.shape[1:]
            if plan.checks and room > 0 and same:
                kept.append((x[:room].to(device), y[:room].to(device)))
            if position % world == rank and position not in parts:
                yield position, x.to(device), y.to(device)

    bar = _progress_bar(plan, data, progress)
    for pool in pools(own_batches(), plan.attack.pooled(plan.setting.task)):
        batches = [(x, y, plan.seed * 1_000_003 + position) for position, x, y in pool]
        predicted = [_clean_predictions(model, x, y) for _, x, y in pool]
        outcomes = plan.attack.attack(model, batches, plan.levels, plan.setting)
        for (position, x, y), outcome, guess in zip(pool, outcomes, predicted, strict=True):
            parts[position] = to_cpu(_part(outcome, x, y, guess, classes[0]))
        store.save(parts)
        if bar is not None:
            bar.update(sum(len(b[2]) for b in pool) * world)
    if bar is not None:
        bar.close()
    if ctx is not None and ctx.active:
        parts = {k: v for share in distributed.gather_objects(parts, ctx)
                 for k, v in share.items()}
    if count[0] == 0:
        raise ValueError("data holds no samples to evaluate")
    store.remove()
    return [parts[k] for k in sorted(parts)], count[0], kept


def _check_classes(plan: _Plan, num_classes: int) -> None:
    """The data's class names must be the model's classes; the positive class one of them
    (checked on the first batch, before any attack)."""
    names = plan.class_names
    if names is not None and len(names) != num_classes:
        raise ValueError(
            f"the data names {len(names)} classes {names} but the model outputs "
            f"{num_classes} logits per sample"
        )
    positive_index(plan.positive_class, names, num_classes)


def _part(outcome, x, y, predicted, num_classes: int) -> dict:
    """One batch's outcome as stored: masks, per-loss masks, radii, extra values, overlaps,
    the number of input values per sample, and for classification the labels, the clean
    predictions and the model's number of classes."""
    part = {"robust": outcome.robust, "per_loss": outcome.per_loss, "radii": outcome.radii,
            "extra": outcome.extra, "overlap": outcome.overlap,
            "input_values": x[0].numel()}
    if class_labels(y):
        part["labels"], part["num_classes"], part["predicted"] = y, num_classes, predicted
    return part


def _clean_predictions(model, x, y) -> torch.Tensor | None:
    """The model's classes on clean ``x`` (classification; None for segmentation), leaving
    the random state as it was (a model that draws random numbers must not shift the
    attacks' draws)."""
    if not class_labels(y):
        return None
    with torch.no_grad(), kept_random_state():
        return model(x).argmax(dim=1)


def _progress_bar(plan: _Plan, data, progress: bool):
    if not progress:
        return None
    from tqdm.auto import tqdm

    total = len(plan.indices) if plan.indices is not None else _length(data)
    if total is not None and plan.max_samples is not None:
        total = min(total, plan.max_samples)
    return tqdm(desc=plan.attack.described(plan.attack.params(plan.setting)), total=total,
                unit="sample")


def _length(data) -> int | None:
    dataset = getattr(data, "dataset", data)
    try:
        return len(dataset)
    except TypeError:
        return None


def _sanity(model, plan: _Plan, parts, kept, ctx) -> list[dict]:
    if not (plan.checks and parts) or (ctx is not None and ctx.rank != 0):
        return []
    robust = torch.cat([p["robust"] for p in parts], dim=1)
    radii = [p["radii"] for p in parts if p.get("radii") is not None]
    torch.manual_seed(plan.seed)
    return run_checks(plan.attack, model, plan.setting, plan.levels, kept, robust,
                      torch.cat(radii) if radii else None)


def _result(plan: _Plan, parts, n: int, split_name, found) -> EvaluationResult:
    """Assemble the result from the batches' outcomes, in data order."""
    robust = torch.cat([p["robust"] for p in parts], dim=1)  # (levels, n)
    chunks = [p["overlap"] for p in parts if p.get("overlap") is not None]
    overlap = overlap_metrics(chunks) if chunks else {}
    # a segmentation image without a Dice at a level is not counted there
    scored = (torch.tensor([[d == d for d in row] for row in overlap["dice"]])
              if overlap else torch.ones_like(robust))
    counted = scored.sum(dim=1).clamp_min(1)
    per_loss, extra = {}, {}
    for p in parts:
        for loss, value in p["per_loss"].items():
            per_loss.setdefault(loss, []).append(value)
        for key, value in (p.get("extra") or {}).items():
            extra.setdefault(key, []).append(value)
    radii = [p["radii"] for p in parts if p.get("radii") is not None]
    accuracy = (robust.sum(dim=1) / counted).tolist()
    result = EvaluationResult(
        attack=plan.attack.name, norm=plan.setting.norm, split=split_name, n_samples=n,
        subset=plan.subset, seed=plan.seed, params=plan.attack.params(plan.setting),
        eps=plan.levels, accuracy=accuracy,
        accuracy_per_loss={k: (torch.cat(v, dim=1).sum(dim=1) / counted).tolist()
                           for k, v in per_loss.items()},
        auc=auc(plan.levels, accuracy), robust=robust.tolist(),
        **_plain_overlap(overlap), indices=plan.indices,
        radii=None if not radii else [None if r != r else float(r)
                                      for r in torch.cat(radii).tolist()],
        accuracy_ci=[list(wilson_interval(int(k), int(m))) for k, m in
                     zip(robust.sum(dim=1).tolist(), counted.tolist(), strict=True)],
        extra={k: torch.cat(v, dim=1).float().mean(dim=1).tolist() for k, v in extra.items()},
        checks=found, class_names=plan.class_names, clean_level_added=plan.clean_level_added,
        input_values=_input_values(parts),
    )
    if parts and all("labels" in p for p in parts):
        _classification(result, plan, parts, robust)
    return result


def _input_values(parts) -> int | None:
    """The number of input values per sample, None when samples differ in size."""
    sizes = {p.get("input_values") for p in parts}
    return sizes.pop() if len(sizes) == 1 else None


def _classification(result: EvaluationResult, plan: _Plan, parts, robust) -> None:
    """Labels, per-class statistics (the named positive class) and confusion matrices."""
    labels = torch.cat([p["labels"] for p in parts])
    num_classes = parts[0]["num_classes"]
    result.labels = labels.tolist()
    positive = positive_index(plan.positive_class, plan.class_names, num_classes)
    stats = per_class_stats(robust, labels, num_classes, positive, plan.class_names)
    if all("predicted" in p for p in parts):  # (a partial file of an older ima has none)
        predicted = torch.cat([p["predicted"] for p in parts])
        stats.update(confusion_matrices(robust, labels, predicted, num_classes))
    for key, value in stats.items():
        setattr(result, key, value)


def _plain_overlap(overlap: dict) -> dict:
    """Overlap metrics for JSON: an image or level without a Dice (NaN) is null."""
    if not overlap:
        return {}
    return {"tvdi": overlap["tvdi"],
            "adi": [a if a == a else None for a in overlap["adi"]],
            "dice": [[d if d == d else None for d in row] for row in overlap["dice"]]}


def _labelled(references) -> list:
    if isinstance(references, dict):
        return list(references.items())
    return [(None, r) for r in references]


class _PartialStore:
    """The batches an evaluation has finished, kept in a file (``partial``) so that a
    killed evaluation resumes from them. The file names its settings; one of other
    settings is ignored and replaced. Outcomes depend only on their batch (each has its
    own seed), so a resumed evaluation gives the uninterrupted result."""

    def __init__(self, path, plan: _Plan, world: int):
        self.path = None if path is None else Path(path)
        self.key = hashlib.sha256(json.dumps(
            [plan.attack.name, plan.attack.params(plan.setting), plan.levels, plan.seed,
             plan.max_samples, plan.subset, plan.setting.batch_size, world],
            sort_keys=True, default=str).encode()).hexdigest()

    def load(self) -> dict:
        if self.path is None or not self.path.is_file():
            return {}
        try:
            saved = torch.load(self.path, weights_only=True)
        except Exception:  # a damaged file (killed mid-write is impossible: atomic)
            logger.warning("ignoring unreadable partial evaluation %s", self.path)
            return {}
        if not isinstance(saved, dict) or saved.get("key") != self.key:
            return {}
        logger.info("resuming from %d finished batches in %s", len(saved["parts"]), self.path)
        return dict(saved["parts"])

    def save(self, parts: dict) -> None:
        if self.path is not None:
            from ..runs import atomic_write

            atomic_write(self.path, lambda tmp: torch.save(
                {"key": self.key, "parts": parts}, tmp))

    def remove(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)
