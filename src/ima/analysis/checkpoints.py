"""Choosing a checkpoint by a validation-accuracy threshold (appendix C.2, H.1): each saved
checkpoint's 100-PGD curve (through :func:`ima.evaluation.evaluate_run`) and the tables
of the paper's Tables 23-28."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..evaluation import EvaluationResult, evaluate_run
from ..reporting.tables import Table
from ..runs import imported_from, read_config
from ..validation import check_int, check_real

__all__ = [
    "CheckpointSelection",
    "checkpoint_epochs",
    "epoch_table",
    "eps_max_table",
    "evaluate_checkpoints",
    "margin_bound",
    "select_checkpoint",
    "selectable_epochs",
]

logger = logging.getLogger(__name__)


_CHECKPOINT = re.compile(r"epoch-(\d+)\.pt$")


def checkpoint_epochs(run_dir) -> list[int]:
    """Epochs of the checkpoints saved in ``run_dir/checkpoints`` (``epoch-NNN.pt``),
    increasing."""
    folder = Path(run_dir) / "checkpoints"
    epochs = []
    for path in folder.glob("epoch-*.pt"):
        match = _CHECKPOINT.fullmatch(path.name)
        if match:
            epochs.append(int(match.group(1)))
    return sorted(epochs)


def selectable_epochs(run_dir, config: dict) -> list[int]:
    """The epochs of the checkpoints :func:`select_checkpoint` chooses among in a run
    folder (``config``: its resolved config); a one-line ``ValueError`` when there are
    fewer than two, saying why (an imported model, or ``train.save_every`` at least the
    number of epochs trained)."""
    source = imported_from(run_dir)
    if source is not None:
        raise ValueError(
            f"{str(run_dir)!r} holds a model imported by `ima import-model` (one checkpoint, "
            "no training metrics); select chooses among the checkpoints of a training run")
    epochs = checkpoint_epochs(run_dir)
    if len(epochs) < 2:
        t = config["train"]
        saved = f"one saved checkpoint (epoch {epochs[0]})" if epochs else "no saved checkpoint"
        raise ValueError(
            f"{str(run_dir)!r} has {saved}; select chooses among two or more: train with "
            f"train.save_every below train.epochs (here {t['save_every']} and "
            f"{t['epochs']}), e.g. --set train.save_every=1")
    return epochs


def margin_bound(config: dict, epoch: int) -> float | None:
    """Largest margin IMA can have reached after ``epoch`` epochs; None for methods
    without ``delta_eps``.

    Appendix C.2 calls it ``M * delta_eps`` (margins start near 0 there). Here margins
    start at ``delta_eps`` and grow by at most ``delta_eps`` per epoch, so
    the bound is ``min((M + 1) * delta_eps, eps_max)``: one step more, the same order.
    """
    method = config.get("method", {})
    delta = method.get("delta_eps")
    if delta is None:
        return None
    bound = (epoch + 1) * float(delta)
    eps_max = method.get("eps_max")
    return bound if eps_max is None else min(bound, float(eps_max))


@dataclass
class CheckpointSelection:
    """Outcome of :func:`select_checkpoint`.

    ``epoch``: the chosen checkpoint (None when none qualifies); ``candidates``: one dict
    per saved checkpoint with ``epoch``, ``val_acc`` (None when the metrics lack it) and
    ``eligible``; ``reason``: one sentence saying why.
    """

    epoch: int | None
    min_val_acc: float
    candidates: list[dict] = field(default_factory=list)
    reason: str = ""


def select_checkpoint(metrics: list[dict], epochs, *, min_val_acc: float) -> CheckpointSelection:
    """Appendix C.2: the latest saved checkpoint whose validation accuracy is at least
    ``min_val_acc``.

    metrics: rows of ``metrics.csv`` (``epoch`` and ``val_acc`` columns, clean accuracy
    as a fraction); epochs: the saved checkpoints' epochs, at least two. The reason
    gives accuracies in percent, as the tables do. IMA's largest margin grows
    with the epoch (at most ``M * delta_eps`` after ``M`` epochs), so among the
    checkpoints that keep the clean validation accuracy the user asks for, the latest
    is the most robust one (Tables 23/24; H.1 finds IMA's best checkpoint is the last).
    The threshold applies to the checkpoint's own epoch: validation accuracy is low in
    the first epochs and peaks before it declines (Fig. 8), so a checkpoint is not
    disqualified by an early epoch below the threshold.
    """
    min_val_acc = check_real("min_val_acc", min_val_acc, low=0.0, high=1.0)
    by_epoch = {int(r["epoch"]): r for r in metrics if "epoch" in r}
    epochs = sorted(int(e) for e in epochs)
    if len(epochs) < 2:
        raise ValueError(f"selection needs two or more saved checkpoints, got {len(epochs)} "
                         "(checkpoints/epoch-NNN.pt); train with a smaller train.save_every")
    candidates = []
    for e in epochs:
        value = by_epoch.get(e, {}).get("val_acc")
        value = float(value) if isinstance(value, int | float) else None
        eligible = value is not None and value >= min_val_acc
        candidates.append({"epoch": e, "val_acc": value, "eligible": eligible})
    known = [c for c in candidates if c["val_acc"] is not None]
    if not known:
        raise ValueError("metrics.csv holds no val_acc for the saved checkpoints (was the "
                         "run trained with train.val_split set?)")
    chosen = [c for c in candidates if c["eligible"]]
    if not chosen:
        best = max(known, key=lambda c: c["val_acc"])
        return CheckpointSelection(
            None, min_val_acc, candidates,
            f"no checkpoint reaches validation accuracy {_pct(min_val_acc)}%; the best is "
            f"epoch {best['epoch']} with {_pct(best['val_acc'])}%",
        )
    pick = chosen[-1]
    return CheckpointSelection(
        pick["epoch"], min_val_acc, candidates,
        f"epoch {pick['epoch']} is the latest checkpoint (largest margins) with validation "
        f"accuracy {_pct(pick['val_acc'])}% >= {_pct(min_val_acc)}%",
    )


def _same_settings(result: EvaluationResult, *, eps, norm, steps, split, max_samples, seed):
    subset = None if max_samples is None else f"first {max_samples} samples"
    return (result.attack == "pgd" and result.norm == norm and result.split == split
            and result.subset == subset and result.seed == seed
            and result.params.get("steps") == steps
            and [float(e) for e in result.eps] == [float(e) for e in eps])


def evaluate_checkpoints(
    run_dir,
    epochs=None,
    *,
    eps=None,
    norm: str | None = None,
    steps: int | None = None,
    split: str = "test",
    max_samples: int | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    reuse: bool = True,
    progress: bool = False,
) -> dict[int, EvaluationResult]:
    """100-PGD robustness curve of each saved checkpoint (appendix C.2 / H.1), by
    :func:`~ima.evaluation.evaluate_run` (defaults from the run's ``eval`` section).

    Each result is saved as ``ima evaluate RUN --epoch N`` saves it
    (``eval/pgd-<norm>-<split>-epoch-NNN.json``); with ``reuse``, a stored result of the
    same checkpoint and settings is read back instead of recomputed.
    """
    run_dir = Path(run_dir)
    e = read_config(run_dir)["eval"]
    norm = norm or e["norm"]
    steps = check_int("steps", steps if steps is not None else e["steps"], low=1)
    levels = sorted({float(v) for v in (eps if eps is not None else e["eps"])} | {0.0})
    if max_samples is None:
        max_samples = e["max_samples"]
    saved = checkpoint_epochs(run_dir)
    epochs = saved if epochs is None else sorted(int(v) for v in epochs)
    missing = sorted(set(epochs) - set(saved))
    if missing:
        raise FileNotFoundError(f"no checkpoint for epoch(s) {missing} in {str(run_dir)!r}; "
                                f"saved: {saved or 'none'}")
    settings = dict(eps=levels, norm=norm, steps=steps, split=split,
                    max_samples=max_samples, seed=seed)
    out = {}
    for epoch in epochs:
        old = _stored(run_dir, epoch, settings, e["precision"]) if reuse else None
        if old is not None:
            logger.info("epoch %d: reusing a stored result", epoch)
            out[epoch] = old
            continue
        out[epoch], _ = evaluate_run(run_dir, epoch=epoch, attack="pgd",
                                     batch_size=batch_size, progress=progress, **settings)
    return out


def _stored(run_dir: Path, epoch: int, settings: dict,
            precision: str) -> EvaluationResult | None:
    """A stored result of this checkpoint, these settings and this precision, if any."""
    name = f"pgd-{settings['norm']}-{settings['split']}-epoch-{epoch:03d}"
    for path in sorted((run_dir / "eval").glob(f"{name}*.json")):
        try:
            result = EvaluationResult.load(path)
        except (ValueError, TypeError):
            continue
        if (result.epoch == epoch and _same_settings(result, **settings)
                and result.params.get("precision", "fp32") == precision):
            return result
    return None


def _pct(value) -> str:
    return "" if value is None else f"{100 * value:.2f}"


def eps_max_table(config: dict, results: dict[int, EvaluationResult], metrics: list[dict],
                  selection: CheckpointSelection | None = None) -> Table:
    """Tables 23/24: one row per checkpoint (labelled ``eps_max = M * delta_eps`` as in
    the paper; see :func:`margin_bound`), one column
    per noise level (accuracy %, on the evaluated split), and ``0 (Validation)``: the
    clean validation accuracy from ``metrics.csv``. The chosen checkpoint is starred."""
    if not results:
        raise ValueError("eps_max_table needs at least one evaluated checkpoint")
    levels = sorted({e for r in results.values() for e in r.eps})
    val = {int(r["epoch"]): r.get("val_acc") for r in metrics if "epoch" in r}
    delta = config.get("method", {}).get("delta_eps")
    rows = []
    for epoch in sorted(results):
        r = results[epoch]
        by_eps = dict(zip(r.eps, r.accuracy, strict=True))
        label = f"epoch {epoch}"
        if delta is not None:
            # The paper's row label (appendix C.2); margin_bound says why the reachable
            # maximum here is one delta_eps more.
            label += f": eps_max = {epoch} x {float(delta):.4g} = {epoch * float(delta):.4g}"
        if selection is not None and selection.epoch == epoch:
            label += " (chosen)"
        v = val.get(epoch)
        rows.append([label, *(_pct(by_eps.get(e)) for e in levels),
                     _pct(v if isinstance(v, int | float) else None)])
    first = next(iter(results.values()))
    method = config.get("method", {}).get("name", "")
    title = (f"Effect of eps_max ({method}, appendix C.2): accuracy (%) on the {first.split} "
             f"set under {first.params.get('steps')}-PGD, {first.norm.upper()} norm, "
             f"{first.subset or f'all {first.n_samples} samples'}; last column: clean "
             f"validation accuracy")
    return Table(title, ["Noise", *(f"{e:g}" for e in levels), "0 (Validation)"], rows)


def epoch_table(results: dict[int, EvaluationResult]) -> Table:
    """Tables 26-28 (robust overfitting, appendix H.1): one row per noise level, one
    column per checkpoint epoch (accuracy %, like :func:`eps_max_table`; the paper gives
    fractions), and the epoch that is best at that level (the latest among ties)."""
    if not results:
        raise ValueError("epoch_table needs at least one evaluated checkpoint")
    epochs = sorted(results)
    levels = sorted({e for r in results.values() for e in r.eps})
    rows = []
    for level in levels:
        values = {}
        for epoch in epochs:
            by_eps = dict(zip(results[epoch].eps, results[epoch].accuracy, strict=True))
            if level in by_eps:
                values[epoch] = by_eps[level]
        best = max(values, key=lambda k: (values[k], k)) if values else None
        rows.append([f"noise={level:g}", *(_pct(values[k]) if k in values else ""
                                           for k in epochs), str(best)])
    first = results[epochs[0]]
    title = (f"Accuracy (%) per checkpoint on the {first.split} set under "
             f"{first.params.get('steps')}-PGD ({first.norm.upper()} norm; appendix H.1)")
    return Table(title, ["Epoch", *map(str, epochs), "Best epoch"], rows)
