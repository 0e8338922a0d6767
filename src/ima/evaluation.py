"""Robustness curves under the paper's 100-PGD protocol (``ima.evaluate``), and AUC.

Protocol (section 3 and DESIGN.md): for each noise level ``eps``, 100 PGD iterations of
step ``eps / 10`` from a random start, run once with cross-entropy and once with the
margin (Carlini-Wagner) loss; a sample is robust at ``eps`` only if it is classified
correctly on clean data and neither run finds an adversarial point (worst case per
sample). A point adversarial at some ``eps`` lies in every larger ball, so a sample fooled
at a smaller level is counted as fooled at all larger levels without being attacked
again. Accuracy is over all samples of the split, or over its first ``max_samples``.
Up to 32 batches are attacked together through one working set of ``batch_size``
samples, where a fooled sample's place goes to the next waiting one; each batch draws its
random starts from a generator seeded by its position, so results do not depend on this
pooling or on the number of processes (up to float rounding that can differ between
forward passes of different sizes).

Segmentation (a :class:`~ima.tasks.SegmentationTask`: correct means Dice above its
threshold) also gets the overlap metrics of appendix I at every level, TVDI and ADI.
There each PGD run goes its full ``steps`` on every sample (a Dice can always drop
further); a sample counts as fooled by a run if any iterate was wrong, which is what the
early-stopped run would find, and the point whose Dice is scored is, per sample, the
last iterate with the lowest Dice over the runs of every loss at this and every smaller
level (all lie inside the ball).

Other attacks (``attack=``; :mod:`ima.protocols` defines each): the black-box ``spsa``
(appendix H.2), white noise (``uniform-noise``, ``gaussian-noise``), ``autoattack``
(optional extra) and the minimal-norm curves ``ddn-min`` and ``bpgd-min`` (per-sample
radii in the result). ``per_class=k`` evaluates the first ``k`` samples of each class, as
appendix H.2 does for SPSA. Every result also holds Wilson 95 % intervals of its
accuracies and, for classification, per-class accuracies (sensitivity and specificity for
binary models), and, unless ``checks=False``, the sanity checks of :mod:`ima.sanity`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from . import distributed, lp, sanity
from .attacks import pgd
from .attacks.external import INSTALL_HINT, have_art
from .attacks.gradient import random_start_point
from .checks import check_bounds, check_int, check_real
from .modes import eval_mode
from .protocols import Setting, get_protocol
from .stats import successes, wilson_interval
from .tasks import SegmentationTask, adi, get_task, tvdi

__all__ = [
    "SCHEMA_VERSION",
    "AttackedSegmentation",
    "EvaluationResult",
    "auc",
    "evaluate",
    "save_result",
    "segment_under_attack",
]

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1


def auc(eps, accuracy) -> float:
    """Trapezoid area under accuracy against eps on ``[0, max(eps)]``, divided by max(eps).

    1.0 means perfect accuracy at every level. ``eps`` must start at 0 (the clean level).
    With a single level (only eps = 0) the AUC is that accuracy.
    """
    eps = [float(e) for e in eps]
    accuracy = [float(a) for a in accuracy]
    if len(eps) != len(accuracy) or not eps:
        raise ValueError(
            f"eps and accuracy must be non-empty and of equal length, got {len(eps)} and "
            f"{len(accuracy)}"
        )
    if eps[0] != 0.0 or any(b <= a for a, b in zip(eps, eps[1:], strict=False)):
        raise ValueError(f"eps must start at 0 and increase strictly, got {eps}")
    if len(eps) == 1:
        return accuracy[0]
    area = sum(
        (e1 - e0) * (a0 + a1) / 2
        for e0, e1, a0, a1 in zip(eps, eps[1:], accuracy, accuracy[1:], strict=False)
    )
    return area / eps[-1]


@dataclass
class EvaluationResult:
    """Accuracy against noise level, as written to ``eval/<attack>-<norm>-<split>.json``.

    ``accuracy[i]`` is the fraction of the ``n_samples`` evaluated samples that are robust
    at ``eps[i]`` against every loss; ``accuracy_per_loss[loss][i]`` the same against that
    loss alone; ``robust[i][j]`` whether sample ``j`` is robust at ``eps[i]``.
    Segmentation results also hold ``tvdi[i]`` and ``adi[i]`` (appendix I, fractions) and
    ``dice[i][j]``, sample ``j``'s Dice at ``eps[i]``; they are None for classification.

    Optional fields (absent from older files of the same schema version, read as their
    defaults): ``indices``, the samples' positions in the split when they are not its
    first ``n_samples`` (``per_class`` subsets); ``labels``, the class labels
    (classification); ``radii[j]``, sample ``j``'s minimal adversarial norm found by a
    minimal-norm attack (0 for a misclassified clean sample, None where none was found);
    ``accuracy_ci[i]``, the Wilson 95 % interval ``[lo, hi]`` of ``accuracy[i]``;
    ``per_class_accuracy[c][i]`` and ``per_class_accuracy_ci[c][i]`` for each class ``c``
    (a string key) present, with ``class_counts[c]`` samples; for binary models
    ``positive_class`` (1), ``sensitivity`` (accuracy on the positives) and
    ``specificity`` (on the negatives), each with its ``_ci``; ``extra``, attack-specific
    curves (white noise: ``accuracy_average``, the mean over draws); ``checks``, the
    sanity checks ``{"name", "passed", "detail"}`` (:mod:`ima.sanity`; ``passed`` None:
    not applicable); ``epoch``, the epochs the evaluated checkpoint had trained, and
    ``checkpoint``, which one it was (``"latest"`` or ``"epoch-NNN"``; None for a model
    evaluated outside a run folder).
    """

    attack: str
    norm: str
    split: str | None
    n_samples: int
    subset: str | None
    seed: int
    params: dict
    eps: list[float]
    accuracy: list[float]
    accuracy_per_loss: dict[str, list[float]]
    auc: float
    robust: list[list[bool]] = field(repr=False)
    time_s: float = 0.0
    tvdi: list[float] | None = None
    adi: list[float] | None = None
    dice: list[list[float]] | None = field(default=None, repr=False)
    indices: list[int] | None = field(default=None, repr=False)
    labels: list[int] | None = field(default=None, repr=False)
    radii: list[float | None] | None = field(default=None, repr=False)
    accuracy_ci: list[list[float]] | None = None
    per_class_accuracy: dict[str, list[float]] | None = None
    per_class_accuracy_ci: dict[str, list[list[float]]] | None = field(default=None, repr=False)
    class_counts: dict[str, int] | None = None
    positive_class: int | None = None
    sensitivity: list[float] | None = None
    sensitivity_ci: list[list[float]] | None = field(default=None, repr=False)
    specificity: list[float] | None = None
    specificity_ci: list[list[float]] | None = field(default=None, repr=False)
    extra: dict = field(default_factory=dict)
    checks: list[dict] = field(default_factory=list)
    epoch: int | None = None
    checkpoint: str | None = None
    schema_version: int = SCHEMA_VERSION

    def intervals(self) -> list[list[float]]:
        """Wilson 95 % intervals of ``accuracy``: the stored ones, or, for files written
        before they were stored, computed from ``accuracy`` and ``n_samples``."""
        if self.accuracy_ci is not None:
            return self.accuracy_ci
        return [list(wilson_interval(successes(a, self.n_samples), self.n_samples))
                for a in self.accuracy]

    def failed_checks(self) -> list[dict]:
        """The sanity checks that failed."""
        return [c for c in self.checks if c.get("passed") is False]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> EvaluationResult:
        if not isinstance(data, dict):
            raise ValueError(f"an evaluation result is a JSON object, got a "
                             f"{type(data).__name__}")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ValueError(
                f"evaluation result has schema_version {version!r}, this ima reads "
                f"{SCHEMA_VERSION}"
            )
        names = {f.name for f in dataclasses.fields(cls)}
        optional = {
            f.name for f in dataclasses.fields(cls)
            if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        }
        missing = names - set(data) - optional
        if missing:
            raise ValueError(f"evaluation result lacks field(s) {', '.join(sorted(missing))}")
        return cls(**{k: v for k, v in data.items() if k in names})

    def save(self, path) -> None:
        from .runs import atomic_write

        text = json.dumps(self.to_dict(), indent=1)
        atomic_write(path, lambda tmp: Path(tmp).write_text(text))

    @classmethod
    def load(cls, path) -> EvaluationResult:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"evaluation result {str(path)!r} does not exist")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"evaluation result {str(path)!r} is not valid JSON: {err}") from err
        try:
            return cls.from_dict(data)
        except (ValueError, TypeError) as err:
            raise ValueError(f"{str(path)!r} is not an ima evaluation result: {err}") from None

    def same_protocol(self, other: EvaluationResult) -> bool:
        """Whether two results come from the same evaluation settings."""
        keys = ("attack", "norm", "split", "n_samples", "subset", "seed", "params", "eps",
                "epoch", "checkpoint")
        return all(getattr(self, k) == getattr(other, k) for k in keys)


def _batches(data, batch_size: int):
    """Yield ``(x, y)`` from a Dataset or an iterable of ``(x, y[, index])`` batches."""
    if isinstance(data, Dataset):
        data = DataLoader(data, batch_size=batch_size, shuffle=False)
    for batch in data:
        if not isinstance(batch, tuple | list) or len(batch) not in (2, 3):
            raise TypeError("data must yield (x, y) or (x, y, index) batches")
        yield batch[0], batch[1]


def _model_device(model: torch.nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


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
) -> EvaluationResult:
    """Accuracy of ``model`` under an attack (100-PGD by default) at each noise level of
    ``eps`` (L2 or Linf).

    data: a Dataset or an iterable of batches yielding ``(x, y)`` or ``(x, y, index)``.
    eps: list of absolute perturbation norms; 0 (clean accuracy) is added if missing and
    the list is sorted. bounds: the valid input range; ``"auto"`` reads ``data.bounds``
    (or ``data.dataset.bounds``), defaulting to ``(0, 1)``; None = unbounded.
    max_samples: evaluate the first ``max_samples`` samples only (recorded as the subset).
    losses: the losses of the PGD runs; None is the task's ``attack_losses`` (cross-entropy
    and margin; nnU-Net's Dice + cross-entropy and margin for segmentation). task:
    ``"auto"`` reads ``data.task`` (or ``data.dataset.task``) like bounds, defaulting to
    classification; None is classification.
    The model's mode and parameters are left as they were; results are reproducible
    for a given ``seed`` (the random starts).

    attack: ``"pgd"`` (the paper's 100-PGD), ``"spsa"``, ``"uniform-noise"``,
    ``"gaussian-noise"``, ``"autoattack"``, ``"ddn-min"`` or ``"bpgd-min"`` (see
    :mod:`ima.protocols`); steps: the attack's iterations, None for its default (100;
    ``bpgd-min`` 20); options: the attack's own settings, e.g. ``{"n_samples": 2048}``
    for SPSA or ``{"draws": 10}`` for noise (unknown keys are errors).
    per_class: evaluate the first ``per_class`` samples of each class only (appendix H.2:
    10 per class for SPSA; classification only; not with ``max_samples``).
    checks: run the sanity checks of :mod:`ima.sanity` on the first ``check_samples``
    evaluated samples and record them in ``result.checks`` (a failed one is logged as a
    warning); references: results of other attacks on the same data (a sequence, or a
    mapping from a label such as the file name to a result) for the white-box versus
    black-box check.
    ctx: the :class:`ima.distributed.Context` of a torchrun process group: each process
    attacks every ``world``-th batch and all get the whole result (the random starts are
    seeded per batch, so the result does not depend on the number of processes).
    """
    protocol = get_protocol(attack)
    lp.check_norm(norm)
    if norm not in protocol.norms:
        raise ValueError(
            f"attack {attack!r} supports norm {', '.join(map(repr, protocol.norms))}, "
            f"got {norm!r}"
        )
    if steps is None:
        steps = protocol.default_steps
    elif protocol.default_steps is None:
        steps = None  # an attack without iterations (white noise) ignores steps
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
    if attack == "autoattack" and not have_art():
        raise ImportError(INSTALL_HINT)
    if task == "auto":
        task = getattr(getattr(data, "dataset", data), "task", None)
    task = get_task(task)
    losses = task.attack_losses if losses is None else tuple(losses)
    if not losses:
        raise ValueError("losses must name at least one loss")
    for loss in losses:
        task.check_loss(loss)
    levels = sorted({check_real("eps", e, low=0.0) for e in _eps_values(eps)})
    if levels[0] != 0.0:
        levels.insert(0, 0.0)
    if bounds == "auto":
        source = getattr(data, "dataset", data)
        bounds = getattr(source, "bounds", (0.0, 1.0))
    bounds = check_bounds(bounds)
    setting = Setting(norm=norm, steps=steps, losses=losses, random_start=random_start,
                      bounds=bounds, task=task, options=protocol.resolve(options, levels),
                      batch_size=batch_size)
    references = list(references.items()) if isinstance(references, dict) else [
        (None, r) for r in references
    ]
    subset = None if max_samples is None else f"first {max_samples} samples"
    indices = None
    if per_class is not None:
        data, indices = _first_per_class(data, per_class, batch_size)
        subset = f"first {per_class} samples of each class"

    began = time.perf_counter()
    device = _model_device(model)
    model_dtype = next((p.dtype for p in model.parameters()), None)
    rank, world = (0, 1) if ctx is None else (ctx.rank, ctx.world)
    generator_state = torch.get_rng_state()
    parts: dict[int, dict] = {}  # this process's batches, by position in the data
    kept, n = [], 0
    num_classes = None
    segmentation = isinstance(task, SegmentationTask)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(desc=(f"{steps}-PGD" if attack == "pgd" else protocol.title),
                   unit="sample")

    def own_batches():
        """This process's batches ``(position, x, y)`` on the device, after ``max_samples``;
        keeps the first ``check_samples`` of all processes' for the sanity checks."""
        nonlocal n
        for position, (x, y) in enumerate(_batches(data, batch_size)):
            if max_samples is not None and n >= max_samples:
                break
            if max_samples is not None:
                x, y = x[: max_samples - n], y[: max_samples - n]
            n += len(y)
            _check_inputs(x, model_dtype)
            if position == 0:
                _check_output(model, x[:1].to(device))
            if checks and sum(len(c[1]) for c in kept) < check_samples:
                room = check_samples - sum(len(c[1]) for c in kept)
                kept.append((x[:room].to(device), y[:room].to(device)))
            if position % world == rank:  # else another process's batch
                yield position, x.to(device), y.to(device)

    # 100-PGD on classification attacks a pool of batches at once, refilling a working
    # set of batch_size samples (fooled samples leave early); the other attacks go batch
    # by batch
    pooled = attack == "pgd" and not segmentation
    try:
        with eval_mode(model):
            for pool in _pools(own_batches(), pooled):
                if pooled:
                    # each batch's random starts come from a generator seeded by its
                    # position: the same result whatever the pooling or number of processes
                    x = torch.cat([b[1] for b in pool])
                    y = torch.cat([b[2] for b in pool])
                    seeds = [(seed * 1_000_003 + position, len(yb)) for position, _, yb in pool]
                    robust, per_loss = _robustness(model, x, y, levels, setting, seeds)
                    split = [len(b[2]) for b in pool]
                    outcomes = [
                        {"robust": r, "per_loss": dict(zip(per_loss, pl, strict=True))}
                        for r, *pl in zip(robust.split(split, dim=1),
                                          *(v.split(split, dim=1) for v in per_loss.values()),
                                          strict=True)
                    ]
                else:
                    (position, x, y), = pool
                    # seeded per batch: the same result whatever the number of processes
                    torch.manual_seed(seed * 1_000_003 + position)
                    if segmentation:
                        outcomes = [dict(zip(("robust", "per_loss", "overlap"),
                                             _segmentation_robustness(
                                                 model, x, y, levels, norm, steps, losses,
                                                 random_start, bounds, task), strict=True))]
                    else:
                        outcome = protocol.run(model, x, y, levels, setting)
                        outcomes = [{"robust": outcome.robust, "per_loss": outcome.per_loss,
                                     "radii": outcome.radii, "extra": outcome.extra}]
                for (position, _, yb), part in zip(pool, outcomes, strict=True):
                    if _class_labels(yb):
                        part["labels"] = yb.cpu()
                        if num_classes is None:
                            with torch.no_grad():
                                num_classes = model(pool[0][1][:1]).shape[1]
                    parts[position] = _to_cpu(part)
                if bar is not None:
                    bar.update(sum(len(b[2]) for b in pool) * world)
            if ctx is not None and ctx.active:
                gathered = distributed.gather_objects((parts, num_classes), ctx)
                parts = {k: v for share, _ in gathered for k, v in share.items()}
                num_classes = next((c for _, c in gathered if c is not None), None)
            ordered = [parts[k] for k in sorted(parts)]
            robust = torch.cat([p["robust"] for p in ordered], dim=1) if ordered else None
            radii_chunks = [p["radii"] for p in ordered if p.get("radii") is not None]
            radii = torch.cat(radii_chunks) if radii_chunks else None
            found = []
            if checks and robust is not None and rank == 0:
                torch.manual_seed(seed)
                found = _sanity(protocol, model, setting, levels, kept, robust, radii)
    finally:
        torch.set_rng_state(generator_state)
        if bar is not None:
            bar.close()
    per_loss_chunks = {loss: [] for loss in losses} if attack == "pgd" else {}
    extra_chunks: dict[str, list] = {}
    for p in ordered:
        for loss, value in p["per_loss"].items():
            per_loss_chunks.setdefault(loss, []).append(value)
        for key, value in (p.get("extra") or {}).items():
            extra_chunks.setdefault(key, []).append(value)
    overlap_chunks = [p["overlap"] for p in ordered if "overlap" in p]
    label_chunks = [p["labels"] for p in ordered if "labels" in p]
    if n == 0:
        raise ValueError("data holds no samples to evaluate")

    overlap = _overlap_metrics(overlap_chunks) if overlap_chunks else {}
    # robust: (levels, n); a segmentation image without a Dice at a level (empty truth and
    # prediction, empty_dice "skip") is not counted there
    scored = (torch.tensor([[d == d for d in row] for row in overlap["dice"]])
              if overlap else torch.ones_like(robust))
    counted = scored.sum(dim=1).clamp_min(1)
    accuracy = (robust.sum(dim=1) / counted).tolist()
    per_loss = {
        k: (torch.cat(v, dim=1).sum(dim=1) / counted).tolist()
        for k, v in per_loss_chunks.items()
    }
    if overlap:
        overlap["dice"] = [[d if d == d else None for d in row] for row in overlap["dice"]]
        overlap["adi"] = [a if a == a else None for a in overlap["adi"]]
    result = EvaluationResult(
        attack=attack,
        norm=norm,
        split=split_name,
        n_samples=n,
        subset=subset,
        seed=seed,
        params={**({"steps": steps, "step_size": "eps/10", "random_start": random_start,
                    "losses": list(losses), "early_stop": not segmentation,
                    "bounds": bounds and list(bounds)}
                   if attack == "pgd" else protocol.params(setting)),
                **(_dice_rule(task) if segmentation else {})},
        eps=levels,
        accuracy=accuracy,
        accuracy_per_loss=per_loss,
        auc=auc(levels, accuracy),
        robust=robust.tolist(),
        time_s=time.perf_counter() - began,
        **overlap,
        indices=indices,
        radii=None if radii is None else [None if r != r else float(r) for r in radii.tolist()],
        accuracy_ci=[list(wilson_interval(int(k), int(m))) for k, m in
                     zip(robust.sum(dim=1).tolist(), counted.tolist(), strict=True)],
        extra={k: torch.cat(v, dim=1).float().mean(dim=1).tolist()
               for k, v in extra_chunks.items()},
        checks=found,
    )
    if label_chunks and len(label_chunks) == len(ordered):
        labels = torch.cat(label_chunks)
        result.labels = labels.tolist()
        for key, value in _per_class(robust, labels, num_classes).items():
            setattr(result, key, value)
    if checks:
        result.checks += _cross_checks(result, references)
    logger.info(
        "evaluated %d samples: %s", n,
        ", ".join(f"eps {e:g}: {a:.4f}" for e, a in zip(levels, accuracy, strict=True)),
    )
    return result


def _to_cpu(value):
    """Tensors (in dicts, lists and tuples) moved to the CPU, to gather and concatenate."""
    if isinstance(value, torch.Tensor):
        return value.cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_to_cpu(v) for v in value)
    return value


def _class_labels(y: torch.Tensor) -> bool:
    """Whether ``y`` holds one integer class label per sample (classification)."""
    return y.dim() == 1 and not (y.dtype.is_floating_point or y.dtype == torch.bool)


def _first_per_class(data, k: int, batch_size: int):
    """The first ``k`` samples of each class of ``data``, in their order, as batches, and
    their positions in ``data`` (appendix H.2's SPSA subset)."""
    xs, ys, where = [], [], []
    seen: dict[int, int] = {}
    position = 0
    for x, y in _batches(data, batch_size):
        if not _class_labels(y):
            raise ValueError("per_class needs one class label per sample (classification)")
        for j, label in enumerate(y.tolist()):
            if seen.get(label, 0) < k:
                seen[label] = seen.get(label, 0) + 1
                xs.append(x[j])
                ys.append(y[j])
                where.append(position + j)
        position += len(y)
    if not xs:
        raise ValueError("data holds no samples to evaluate")
    x, y = torch.stack(xs), torch.stack(ys)
    batches = [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(y), batch_size)]
    return batches, where


def _per_class(robust: torch.Tensor, labels: torch.Tensor, num_classes: int | None) -> dict:
    """Per-class accuracies with Wilson intervals; sensitivity and specificity (accuracy on
    class 1 and on class 0) for binary models."""
    accuracy, intervals, counts = {}, {}, {}
    for c in sorted(set(labels.tolist())):
        mask = labels == c
        total = int(mask.sum())
        hits = robust[:, mask].sum(dim=1).tolist()
        accuracy[str(c)] = [h / total for h in hits]
        intervals[str(c)] = [list(wilson_interval(int(h), total)) for h in hits]
        counts[str(c)] = total
    out = {"per_class_accuracy": accuracy, "per_class_accuracy_ci": intervals,
           "class_counts": counts}
    if num_classes == 2:
        out.update(positive_class=1, sensitivity=accuracy.get("1"),
                   sensitivity_ci=intervals.get("1"), specificity=accuracy.get("0"),
                   specificity_ci=intervals.get("0"))
    return out


def _sanity(protocol, model, setting, levels, kept, robust, radii) -> list[dict]:
    """The monotone and unbounded checks of :mod:`ima.sanity` (model in eval mode)."""
    x = torch.cat([c[0] for c in kept])
    y = torch.cat([c[1] for c in kept])
    sub = robust[:, : len(y)]
    out = []
    if protocol.minimal:
        out.append(sanity.record(
            "monotone", None, "accuracy read off per-sample radii never rises with eps"))
        clean = robust[0]
        missing = clean & torch.isnan(radii.to(torch.float64))
        out.append(sanity.unbounded(
            int(missing.sum()), int(clean.sum()),
            f"clean-correct samples without a radius after {protocol.name}'s unbounded search",
        ))
        return out
    if protocol.adversarial:
        independent, revived = sub.clone(), 0
        for j in range(2, len(levels)):
            idx = (sub[0] & ~sub[j - 1]).nonzero().squeeze(1)
            if idx.numel():
                moved = idx.to(x.device)
                fooled = protocol.fooled(model, x[moved], y[moved], levels[j], setting).cpu()
                independent[j, idx[~fooled]] = True
                revived += int((~fooled).sum())
        out.append(sanity.monotone(levels, independent, revived=revived,
                                   note=f"independent {protocol.name} runs per level"))
    else:
        out.append(sanity.monotone(levels, sub, note="noise drawn independently per level"))
    idx = sub[0].nonzero().squeeze(1).to(x.device)
    pgd_steps = setting.steps if protocol.name == "pgd" else 100
    pgd_losses = setting.losses if protocol.name == "pgd" else setting.task.attack_losses
    fooled = torch.zeros(0, dtype=torch.bool)
    if idx.numel():
        xs = x[idx]
        big = sanity.farthest_eps(xs, setting.bounds, levels, setting.norm)
        strong = dataclasses.replace(setting, steps=pgd_steps, losses=pgd_losses,
                                     random_start=True, options={})
        fooled = get_protocol("pgd").fooled(model, xs, y[idx], big, strong)
    out.append(sanity.unbounded(
        int((~fooled).sum()), int(idx.numel()),
        f"{pgd_steps}-PGD with a budget that covers every valid input",
    ))
    return out


def _cross_checks(result, references) -> list[dict]:
    """White-box versus black-box checks against ``references`` ((label, result) pairs)."""
    mine = result.attack
    if mine in sanity.STRONG:
        partners, what = sanity.WEAK, "SPSA or white-noise"
    elif mine in sanity.WEAK:
        partners, what = sanity.STRONG, "PGD or AutoAttack"
    else:
        return []
    out = []
    for label, other in references:
        if other.attack not in partners or other.norm != result.norm or (
            other.split != result.split
        ):
            continue
        if mine in sanity.STRONG:
            out.append(sanity.compare_attacks(result, other, label_weak=label or ""))
        else:
            out.append(sanity.compare_attacks(other, result, label_strong=label or ""))
    if not out:
        hint = "--attack spsa" if mine in sanity.STRONG else "--attack pgd"
        out.append(sanity.record(
            "whitebox_vs_blackbox", None,
            f"no stored {what} result of norm {result.norm} and split {result.split} to "
            f"compare with (run `ima evaluate RUN {hint} --norm {result.norm}`)",
        ))
    return out


def _eps_values(eps) -> list:
    """The noise levels of ``eps``: a number, a list or tuple, or a 0-/1-D tensor."""
    if isinstance(eps, torch.Tensor):
        if eps.dim() > 1:
            raise ValueError(f"eps must be a number or a 1-D list of numbers, got a tensor "
                             f"of shape {tuple(eps.shape)}")
        eps = eps.tolist()
    values = list(eps) if isinstance(eps, list | tuple) else [eps]
    if not values:
        raise ValueError("eps must hold at least one noise level, got an empty list")
    return values


@torch.no_grad()
def _check_output(model, x: torch.Tensor) -> None:
    out = model(x)
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"the model must return one tensor of logits, got a "
                        f"{type(out).__name__}; wrap it to return the logits alone")


def _check_inputs(x: torch.Tensor, model_dtype: torch.dtype | None) -> None:
    """Inputs must be floating point in the data's range and of the model's dtype: a
    silent conversion could change what is attacked (uint8 pixels are not in [0, 1])."""
    if not torch.is_floating_point(x):
        raise TypeError(f"inputs must be floating point in the data's range (images in "
                        f"[0, 1]), got {x.dtype}; e.g. x.float() / 255 for 8-bit images")
    if model_dtype is not None and x.dtype != model_dtype:
        raise TypeError(f"inputs are {x.dtype} but the model's parameters are {model_dtype}; "
                        "convert one to the other (e.g. x.float())")


#: A pool of 100-PGD takes batches until it holds this many bytes of inputs or batches.
_POOL_BYTES, _POOL_BATCHES = 128 * 2**20, 32


def _pools(batches, pooled: bool):
    """Group ``(position, x, y)`` batches into pools (lists), or one batch per pool; a
    batch whose samples differ in shape or type from the pool's starts a new pool."""
    pool, size = [], 0
    for batch in batches:
        if pool and any(a.shape[1:] != b.shape[1:] or a.dtype != b.dtype
                        for a, b in zip(pool[0][1:], batch[1:], strict=True)):
            yield pool
            pool, size = [], 0
        pool.append(batch)
        size += batch[1].numel() * batch[1].element_size()
        if not pooled or size >= _POOL_BYTES or len(pool) >= _POOL_BATCHES:
            yield pool
            pool, size = [], 0
    if pool:
        yield pool


def _robustness(model, x, y, levels, setting: Setting, seeds):
    """Per-level robust masks of a pool of batches: overall (levels, B) and per loss.

    seeds: ``(seed, size)`` per batch of the pool, in order: each batch's random starts
    are drawn from its own generator, so a sample's result does not depend on the pool.
    The pool is attacked ``setting.batch_size`` samples at a time, a fooled sample's place
    going to the next one (:func:`ima.attacks.pgd`'s ``width``).
    """
    s = setting
    with torch.no_grad():
        out = torch.cat([model(xb) for xb in x.split(s.batch_size)])
    s.task.check_target(out, y)
    clean = s.task.correct(out, y)
    generators = [torch.Generator(device=x.device).manual_seed(k) for k, _ in seeds]
    owner = torch.repeat_interleave(torch.arange(len(seeds), device=x.device),
                                    torch.tensor([size for _, size in seeds], device=x.device))
    alive = {loss: clean.clone() for loss in s.losses}
    rows = {loss: [] for loss in s.losses}
    for e in levels:
        for loss in s.losses:
            idx = alive[loss].nonzero().squeeze(1)
            if e > 0 and idx.numel():
                start = None
                if s.random_start:
                    chunks = [idx[owner[idx] == b] for b in range(len(generators))]
                    start = torch.cat([
                        random_start_point(x[c], e, s.norm, s.bounds, generator=g)
                        for c, g in zip(chunks, generators, strict=True) if c.numel()
                    ])
                r = pgd(
                    model, x[idx], y[idx], eps=e, norm=s.norm, steps=s.steps, step_size=e / 10,
                    loss=loss, random_start=False, start=start, early_stop=True,
                    bounds=s.bounds, task=s.task, width=s.batch_size,
                )
                alive[loss][idx[r.success]] = False
            rows[loss].append(alive[loss].clone())
    per_loss = {loss: torch.stack(rows[loss]).cpu() for loss in s.losses}
    overall = torch.stack([per_loss[loss] for loss in s.losses]).all(dim=0)
    return overall, per_loss


def _lowest_dice(model, x, y, eps, best, *, norm, steps, losses, random_start, bounds, task):
    """Attack every sample at ``eps`` with each loss (full ``steps``, no early stop) and
    keep, per sample, the point of lowest Dice. ``best``: ``(points, (tp, fp, fn), dice)``
    so far; returns it updated, and per loss whether any iterate fooled the sample."""
    points, counts, dice = best
    fooled = {}
    for loss in losses:
        r = pgd(
            model, x, y, eps=eps, norm=norm, steps=steps, step_size=eps / 10, loss=loss,
            random_start=random_start, early_stop=False, bounds=bounds, task=task,
        )
        # correct_steps counts the correct iterates among the first `steps`; the last
        # iterate is judged by success
        fooled[loss] = r.success | (r.correct_steps < steps)
        with torch.no_grad():
            new_counts = task.counts(model(r.x), y)
        new_dice = task.dice_from_counts(*new_counts)
        # an unscored image (NaN: empty truth and prediction) that the attack gave a
        # foreground prediction is worse: Dice 0 against no Dice
        worse = (new_dice < dice) | (dice.isnan() & ~new_dice.isnan())
        points = torch.where(lp.expand_as_batch(worse, points), r.x, points)
        counts = tuple(
            torch.where(worse[:, None], new, old) for new, old in zip(new_counts, counts,
                                                                       strict=True)
        )
        dice = torch.where(worse, new_dice, dice)
    return (points, counts, dice), fooled


def _segmentation_robustness(model, x, y, levels, norm, steps, losses, random_start, bounds,
                             task):
    """As :func:`_robustness`, plus per level the pixel counts (3, B, K) and Dice (B,) of
    each sample's lowest-Dice point (see the module docstring)."""
    with torch.no_grad():
        out = model(x)
    task.check_target(out, y)
    clean = task.correct(out, y)
    counts = task.counts(out, y)
    best = (x, counts, task.dice_from_counts(*counts))
    alive = {loss: clean.clone() for loss in losses}
    rows = {loss: [] for loss in losses}
    overlap = []
    for e in levels:
        if e > 0:
            best, fooled = _lowest_dice(
                model, x, y, e, best, norm=norm, steps=steps, losses=losses,
                random_start=random_start, bounds=bounds, task=task,
            )
            for loss in losses:
                alive[loss] &= ~fooled[loss]
        for loss in losses:
            rows[loss].append(alive[loss].clone())
        overlap.append((torch.stack(best[1]).cpu(), best[2].cpu()))
    per_loss = {loss: torch.stack(rows[loss]).cpu() for loss in losses}
    overall = torch.stack([per_loss[loss] for loss in losses]).all(dim=0)
    return overall, per_loss, overlap


def _dice_rule(task: SegmentationTask) -> dict:
    """What "correct" meant for a segmentation result (recorded with it)."""
    return {"threshold": task.threshold, "empty_dice": task.empty_dice,
            "dice_inclusive": task.dice_inclusive}


def _overlap_metrics(chunks) -> dict:
    """TVDI and ADI per level (appendix I) and per-sample Dice from the batches' overlaps."""
    tvdis, adis, dice = [], [], []
    for level in zip(*chunks, strict=True):
        counts = torch.cat([c for c, _ in level], dim=1)  # (3, n, K)
        level_dice = torch.cat([d for _, d in level])
        tvdis.append(tvdi(*counts))
        adis.append(adi(level_dice))
        dice.append(level_dice.tolist())
    return {"tvdi": tvdis, "adi": adis, "dice": dice}


@dataclass
class AttackedSegmentation:
    """Segmentations under attack, for figures: ``x`` the input scored (N, C, H, W), the
    clean input at eps 0; ``prediction`` the predicted label map (N, H, W); ``dice`` (N,)."""

    x: torch.Tensor
    prediction: torch.Tensor
    dice: torch.Tensor


def segment_under_attack(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    norm: str = "l2",
    steps: int = 100,
    losses=None,
    random_start: bool = True,
    bounds=(0.0, 1.0),
    task: SegmentationTask | None = None,
    seed: int = 0,
) -> AttackedSegmentation:
    """Each sample's lowest-Dice point under 100-PGD at ``eps`` (one run per loss, as in
    :func:`evaluate`; eps 0 is the clean input), with its predicted label map and Dice.

    x: (N, C, H, W) images inside ``bounds``; y: (N, H, W) true label maps; task: the
    segmentation task (default ``SegmentationTask()``). The global RNG is left as it was.
    """
    task = SegmentationTask() if task is None else get_task(task)
    if not isinstance(task, SegmentationTask):
        raise TypeError(f"task must be a SegmentationTask, got {type(task).__name__}")
    eps = check_real("eps", eps, low=0.0)
    losses = task.attack_losses if losses is None else tuple(losses)
    device = _model_device(model)
    x, y = x.to(device), y.to(device)
    state = torch.get_rng_state()
    torch.manual_seed(seed)
    try:
        with eval_mode(model):
            with torch.no_grad():
                out = model(x)
            task.check_target(out, y)
            counts = task.counts(out, y)
            best = (x, counts, task.dice_from_counts(*counts))
            if eps > 0:
                best, _ = _lowest_dice(
                    model, x, y, eps, best, norm=norm, steps=steps, losses=losses,
                    random_start=random_start, bounds=check_bounds(bounds), task=task,
                )
            with torch.no_grad():
                prediction = model(best[0]).argmax(dim=1)
    finally:
        torch.set_rng_state(state)
    return AttackedSegmentation(best[0].detach(), prediction, best[2].float())


def save_result(run_dir, result: EvaluationResult) -> Path:
    """Write a result into a run folder and return its path:
    ``eval/<attack>-<norm>-<split>[-epoch-NNN].json`` (the suffix for a kept checkpoint).

    A file there from other settings or another checkpoint is never replaced: the next
    free numbered name (``-2``, ``-3``, ...) is used. A name is taken by creating the
    file exclusively, so concurrent evaluations of one run folder never lose a result;
    a file of the same settings and checkpoint is replaced (a re-evaluation)."""
    from .runs import atomic_write, exclusive_write

    base = f"{result.attack}-{result.norm}-{result.split or 'data'}"
    if result.checkpoint not in (None, "latest"):
        base += f"-{result.checkpoint}"
    text = json.dumps(result.to_dict(), indent=1)
    write = lambda tmp: Path(tmp).write_text(text)  # noqa: E731
    folder = Path(run_dir) / "eval"
    k = 1
    while True:
        path = folder / (f"{base}.json" if k == 1 else f"{base}-{k}.json")
        if exclusive_write(path, write):
            return path
        try:
            same = EvaluationResult.load(path).same_protocol(result)
        except (ValueError, TypeError, FileNotFoundError):
            same = False
        if same:
            atomic_write(path, write)
            return path
        k += 1
