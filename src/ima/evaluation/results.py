"""Evaluation results: the JSON-serialisable :class:`EvaluationResult`, the AUC, per-class
statistics (the positive class of sensitivity and specificity, the confusion matrices),
the segmentation overlap metrics of appendix I, and where a result goes in a run folder
(:func:`save_result`)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..stats import successes, wilson_interval
from ..tasks import adi, tvdi

__all__ = ["SCHEMA_VERSION", "EvaluationResult", "auc", "positive_index", "save_result"]

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
    ``class_names[k]``, the name of label ``k`` (None: the data does not name its
    classes); ``per_class_accuracy[c][i]`` and ``per_class_accuracy_ci[c][i]`` for each
    class ``c`` (the label as a string key) present, with ``class_counts[c]`` samples;
    for binary models ``positive_class`` (the positive label: ``eval.positive_class``, by
    default 1) and its name ``positive_class_name`` (None without class names),
    ``sensitivity`` (accuracy on the positives) and ``specificity`` (on the negatives),
    each with its ``_ci``; ``confusion[i][t][p]``, for classification, the number of
    samples of true class ``t`` predicted as ``p`` at ``eps[i]``: a robust sample's clean
    prediction (its class), a misclassified clean sample's clean prediction (it is not
    attacked), and for a sample fooled at ``eps[i]`` the other class of a binary model;
    with more classes the attacks do not record which class a fooled sample went to, and
    ``confusion_unrecorded[i][t]`` counts those of true class ``t`` (None for binary
    models); ``clean_level_added``, whether eps 0 (the clean level) was not among the
    levels asked for and was added (every result starts at eps 0); ``input_values``, the
    number of input values per sample (an L2 eps's per-value RMS is
    ``eps / sqrt(input_values)``; None in older files); ``extra``, attack-specific
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
    class_names: list[str] | None = None
    positive_class: int | None = None
    positive_class_name: str | None = None
    sensitivity: list[float] | None = None
    sensitivity_ci: list[list[float]] | None = field(default=None, repr=False)
    specificity: list[float] | None = None
    specificity_ci: list[list[float]] | None = field(default=None, repr=False)
    confusion: list[list[list[int]]] | None = field(default=None, repr=False)
    confusion_unrecorded: list[list[int]] | None = field(default=None, repr=False)
    clean_level_added: bool = False
    input_values: int | None = None
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

    def class_name(self, label) -> str:
        """How tables name class ``label``: its name, or ``class k`` for data without
        names (and for names that only repeat the label, as digits' "0".."9")."""
        k = int(label)
        names = self.class_names
        if names is not None and k < len(names) and names[k] != str(k):
            return names[k]
        return f"class {k}"

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
        from ..runs import atomic_write

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
                "epoch", "checkpoint", "positive_class")
        return all(getattr(self, k) == getattr(other, k) for k in keys)


def positive_index(positive, class_names, num_classes: int | None) -> int | None:
    """The label of the positive class of sensitivity and specificity.

    ``positive``: a class name, a label index (for data without class names; with names,
    a number is read as the name it spells, as digits' "1"), or None: label 1 of a
    two-class model. Returns None for other than two classes, where ``positive`` given
    is an error; a name that is not a class is a ``ValueError`` naming the choices.
    """
    if num_classes != 2:
        if positive is not None:
            raise ValueError(
                f"positive_class {positive!r} applies to two-class data only; there are "
                f"{num_classes} classes"
            )
        return None
    if positive is None:
        return 1
    if class_names is not None:
        name = str(positive) if isinstance(positive, int) and not isinstance(
            positive, bool) else positive
        if name not in class_names:
            raise ValueError(
                f"positive_class {positive!r} is not a class; choose one of "
                f"{', '.join(repr(n) for n in class_names)}"
            )
        return list(class_names).index(name)
    if isinstance(positive, bool) or not isinstance(positive, int) or not 0 <= positive < 2:
        raise ValueError(
            f"positive_class {positive!r}: the data has no class names, so give the label "
            "0 or 1 (or name the classes with data.class_names)"
        )
    return positive


def per_class_stats(robust: torch.Tensor, labels: torch.Tensor, num_classes: int | None,
                    positive: int | None = None, class_names=None) -> dict:
    """Per-class accuracies with Wilson intervals; for binary models (``positive``, the
    positive label, from :func:`positive_index`) the sensitivity and specificity, the
    accuracies on the positive and on the negative class."""
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
    if num_classes == 2 and positive is not None:
        p, n = str(positive), str(1 - positive)
        out.update(positive_class=positive,
                   positive_class_name=None if class_names is None else class_names[positive],
                   sensitivity=accuracy.get(p), sensitivity_ci=intervals.get(p),
                   specificity=accuracy.get(n), specificity_ci=intervals.get(n))
    return out


def confusion_matrices(robust: torch.Tensor, labels: torch.Tensor, predicted: torch.Tensor,
                       num_classes: int) -> dict:
    """Per level, the confusion matrix ``[true][predicted]`` of the attacked points.

    ``robust`` (levels, n) masks, ``labels`` (n,) true classes, ``predicted`` (n,) clean
    predictions. A robust sample is predicted as its class; a misclassified clean sample
    (never attacked) as its clean prediction; a sample fooled at a level, as the other
    class of a binary model. With more classes the attacks do not record where a fooled
    sample went: ``confusion_unrecorded[i][t]`` counts them per true class.
    """
    k = num_classes
    matrices, unrecorded = [], []
    for row in robust.bool():
        fooled = ~row & (predicted == labels)
        guess = torch.where(row, labels, predicted)
        if k == 2:
            guess = torch.where(fooled, 1 - labels, guess)
        known = ~fooled if k != 2 else torch.ones_like(fooled)
        cells = torch.bincount(labels[known] * k + guess[known], minlength=k * k)
        matrices.append(cells.reshape(k, k).tolist())
        unrecorded.append(torch.bincount(labels[~known], minlength=k).tolist())
    return {"confusion": matrices, "confusion_unrecorded": None if k == 2 else unrecorded}


def overlap_metrics(chunks) -> dict:
    """TVDI and ADI per level (appendix I) and per-sample Dice from the batches' overlaps."""
    tvdis, adis, dice = [], [], []
    for level in zip(*chunks, strict=True):
        counts = torch.cat([c for c, _ in level], dim=1)  # (3, n, K)
        level_dice = torch.cat([d for _, d in level])
        tvdis.append(tvdi(*counts))
        adis.append(adi(level_dice))
        dice.append(level_dice.tolist())
    return {"tvdi": tvdis, "adi": adis, "dice": dice}


def save_result(run_dir, result: EvaluationResult) -> Path:
    """Write a result into a run folder and return its path:
    ``eval/<attack>-<norm>-<split>[-epoch-NNN].json`` (the suffix for a kept checkpoint).

    A file there from other settings or another checkpoint is never replaced: the next
    free numbered name (``-2``, ``-3``, ...) is used. A name is taken by creating the
    file exclusively, so concurrent evaluations of one run folder never lose a result;
    a file of the same settings and checkpoint is replaced (a re-evaluation)."""
    from ..runs import atomic_write, exclusive_write

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
