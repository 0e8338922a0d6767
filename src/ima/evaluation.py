"""Robustness curves under the paper's 100-PGD protocol (``ima.evaluate``), and AUC.

Protocol (section 3 and DESIGN.md): for each noise level ``eps``, 100 PGD iterations of
step ``eps / 10`` from a random start, run once with cross-entropy and once with the
margin (Carlini-Wagner) loss; a sample is robust at ``eps`` only if it is classified
correctly on clean data and neither run finds an adversarial point (worst case per
sample). A point adversarial at some ``eps`` lies in every larger ball, so a sample fooled
at a smaller level is counted as fooled at all larger levels without being attacked
again. Accuracy is over all samples of the split, or over its first ``max_samples``.
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

from . import lp
from .attacks import pgd
from .checks import check_bounds, check_int, check_real
from .modes import eval_mode
from .tasks import Task, get_task

__all__ = ["SCHEMA_VERSION", "EvaluationResult", "auc", "evaluate", "result_path"]

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
LOSSES = ("ce", "margin")


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
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> EvaluationResult:
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ValueError(
                f"evaluation result has schema_version {version!r}, this ima reads "
                f"{SCHEMA_VERSION}"
            )
        names = {f.name for f in dataclasses.fields(cls)}
        missing = names - set(data) - {"time_s"}
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
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"evaluation result {str(path)!r} is not valid JSON: {err}") from err
        return cls.from_dict(data)

    def same_protocol(self, other: EvaluationResult) -> bool:
        """Whether two results come from the same evaluation settings."""
        keys = ("attack", "norm", "split", "n_samples", "subset", "seed", "params", "eps")
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
    steps: int = 100,
    losses=LOSSES,
    random_start: bool = True,
    bounds="auto",
    split_name: str | None = None,
    max_samples: int | None = None,
    batch_size: int = 512,
    seed: int = 0,
    task: Task | None = None,
    progress: bool = False,
) -> EvaluationResult:
    """Accuracy of ``model`` under 100-PGD at each noise level of ``eps`` (L2 or Linf).

    data: a Dataset or an iterable of batches yielding ``(x, y)`` or ``(x, y, index)``.
    eps: list of absolute perturbation norms; 0 (clean accuracy) is added if missing and
    the list is sorted. bounds: the valid input range; ``"auto"`` reads ``data.bounds``
    (or ``data.dataset.bounds``), defaulting to ``(0, 1)``; None = unbounded.
    max_samples: evaluate the first ``max_samples`` samples only (recorded as the subset).
    The model's mode and parameters are left as they were; results are reproducible
    for a given ``seed`` (the random starts).
    """
    if attack != "pgd":
        raise ValueError(f"attack must be 'pgd', got {attack!r}")
    lp.check_norm(norm)
    check_int("steps", steps, low=1)
    check_int("batch_size", batch_size, low=1)
    check_int("seed", seed, low=0)
    if max_samples is not None:
        check_int("max_samples", max_samples, low=1)
    losses = tuple(losses)
    if not losses:
        raise ValueError("losses must name at least one loss")
    task = get_task(task)
    for loss in losses:
        task.check_loss(loss)
    levels = sorted({check_real("eps", e, low=0.0) for e in (eps if _is_list(eps) else [eps])})
    if levels[0] != 0.0:
        levels.insert(0, 0.0)
    if bounds == "auto":
        source = getattr(data, "dataset", data)
        bounds = getattr(source, "bounds", (0.0, 1.0))
    bounds = check_bounds(bounds)

    began = time.perf_counter()
    device = _model_device(model)
    generator_state = torch.get_rng_state()
    torch.manual_seed(seed)
    robust_chunks = []
    per_loss_chunks = {loss: [] for loss in losses}
    n = 0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(desc="100-PGD" if steps == 100 else f"{steps}-PGD", unit="sample")
    try:
        with eval_mode(model):
            for x, y in _batches(data, batch_size):
                if max_samples is not None and n >= max_samples:
                    break
                if max_samples is not None:
                    x, y = x[: max_samples - n], y[: max_samples - n]
                x, y = x.to(device), y.to(device)
                alive, per_loss = _robustness(model, x, y, levels, norm, steps, losses,
                                              random_start, bounds, task)
                robust_chunks.append(alive)
                for loss in losses:
                    per_loss_chunks[loss].append(per_loss[loss])
                n += len(y)
                if bar is not None:
                    bar.update(len(y))
    finally:
        torch.set_rng_state(generator_state)
        if bar is not None:
            bar.close()
    if n == 0:
        raise ValueError("data holds no samples to evaluate")

    robust = torch.cat(robust_chunks, dim=1)  # (levels, n)
    accuracy = robust.float().mean(dim=1).tolist()
    per_loss = {
        k: torch.cat(v, dim=1).float().mean(dim=1).tolist() for k, v in per_loss_chunks.items()
    }
    result = EvaluationResult(
        attack=attack,
        norm=norm,
        split=split_name,
        n_samples=n,
        subset=None if max_samples is None else f"first {max_samples} samples",
        seed=seed,
        params={"steps": steps, "step_size": "eps/10", "random_start": random_start,
                "losses": list(losses), "early_stop": True, "bounds": bounds and list(bounds)},
        eps=levels,
        accuracy=accuracy,
        accuracy_per_loss=per_loss,
        auc=auc(levels, accuracy),
        robust=robust.tolist(),
        time_s=time.perf_counter() - began,
    )
    logger.info(
        "evaluated %d samples: %s", n,
        ", ".join(f"eps {e:g}: {a:.4f}" for e, a in zip(levels, accuracy, strict=True)),
    )
    return result


def _is_list(value) -> bool:
    return isinstance(value, list | tuple) or (isinstance(value, torch.Tensor) and value.dim())


def _robustness(model, x, y, levels, norm, steps, losses, random_start, bounds, task):
    """Per-level robust masks of one batch: overall (levels, B) and per loss."""
    with torch.no_grad():
        out = model(x)
    task.check_target(out, y)
    clean = task.correct(out, y)
    alive = {loss: clean.clone() for loss in losses}
    rows = {loss: [] for loss in losses}
    for e in levels:
        for loss in losses:
            idx = alive[loss].nonzero().squeeze(1)
            if e > 0 and idx.numel():
                r = pgd(
                    model, x[idx], y[idx], eps=e, norm=norm, steps=steps, step_size=e / 10,
                    loss=loss, random_start=random_start, early_stop=True, bounds=bounds,
                    task=task,
                )
                alive[loss][idx[r.success]] = False
            rows[loss].append(alive[loss].clone())
    per_loss = {loss: torch.stack(rows[loss]).cpu() for loss in losses}
    overall = torch.stack([per_loss[loss] for loss in losses]).all(dim=0)
    return overall, per_loss


def result_path(run_dir, result: EvaluationResult) -> Path:
    """Where a result goes in a run folder: ``eval/<attack>-<norm>-<split>.json``; a file
    there from different settings is never overwritten (a numbered name is used instead)."""
    base = Path(run_dir) / "eval" / f"{result.attack}-{result.norm}-{result.split or 'data'}"
    path = base.with_suffix(".json")
    k = 2
    while path.exists():
        try:
            if EvaluationResult.load(path).same_protocol(result):
                return path
        except (ValueError, TypeError):
            pass
        path = Path(f"{base}-{k}.json")
        k += 1
    return path

