"""The one training loop (``ima.train``); it knows nothing about any method."""

from __future__ import annotations

import csv
import io
import logging
import math
import time
from collections import Counter
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from . import assemble, runs
from .config import apply_overrides, load_config, resolve_config, save_config
from .data import ArrayDataset
from .modes import eval_mode
from .tasks import get_task

__all__ = ["batches", "clean_accuracy", "select_device", "train"]

logger = logging.getLogger(__name__)


def select_device(name: str) -> torch.device:
    """``"auto"`` is CUDA when available, else CPU; anything else is passed to torch."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"train.device {name!r} is not a valid torch device: {err}") from err


def epoch_order(n: int, seed: int, epoch: int, length: int | None = None) -> torch.Tensor:
    """The sample order of an epoch, a function of (seed, epoch) only, so resuming at any
    epoch reproduces the order of an uninterrupted run.

    ``length=None``: a permutation of the ``n`` samples (one pass). Otherwise the first
    ``length`` entries of back-to-back permutations: an epoch of a fixed number of
    iterations (``train.iterations_per_epoch``, nnU-Net's epochs in appendix G.2), which
    may see a sample more than once or not at all.
    """
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    if length is None:
        return torch.randperm(n, generator=g)
    passes = -(-length // n)
    return torch.cat([torch.randperm(n, generator=g) for _ in range(passes)])[:length]


def batches(dataset: Dataset, batch_size: int, *, order=None, num_workers: int = 0, device="cpu"):
    """Yield ``(x, y, index)`` batches on ``device`` in the given sample order.

    ``order``: the dataset positions to visit (default: all, in order; it may be shorter
    or longer than the dataset and repeat positions, as epochs of a fixed number of
    iterations do). In-memory datasets are sliced directly (no per-item Python overhead);
    other datasets go through a DataLoader. Yielded indices are those the dataset reports.
    """
    order = torch.arange(len(dataset)) if order is None else order
    pin = torch.device(device).type == "cuda"
    if isinstance(dataset, ArrayDataset):
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            yield (
                dataset.x[idx].to(device, non_blocking=pin),
                dataset.y[idx].to(device, non_blocking=pin),
                idx.to(device),
            )
        return
    loader = DataLoader(
        dataset, batch_size=batch_size, sampler=order.tolist(), num_workers=num_workers,
        pin_memory=pin,
    )
    for x, y, index in loader:
        yield x.to(device), y.to(device), torch.as_tensor(index).to(device)


@torch.no_grad()
def clean_accuracy(model, dataset, *, batch_size=512, device="cpu", task=None) -> float:
    """Accuracy of ``model`` on the clean samples of ``dataset``, in eval mode."""
    task = get_task(task)
    correct = total = 0
    with eval_mode(model):
        for x, y, _ in batches(dataset, batch_size, device=device):
            correct += int(task.correct(model(x), y).sum())
            total += len(y)
    return correct / max(total, 1)


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _scheduler_state_to_plain(scheduler) -> dict | None:
    """The scheduler's state with plain Python values only: MultiStepLR keeps its
    milestones in a ``collections.Counter``, which ``torch.load(weights_only=True)``
    refuses before torch 2.4 (pytorch/pytorch#98921), so it is stored as a dict."""
    if scheduler is None:
        return None
    state = scheduler.state_dict()
    if isinstance(state.get("milestones"), Counter):
        state = {**state, "milestones": dict(state["milestones"])}
    return state


def _scheduler_state_from_plain(state: dict) -> dict:
    if isinstance(state.get("milestones"), dict):
        state = {**state, "milestones": Counter(state["milestones"])}
    return state


def _write_metrics(run_dir: Path, rows: list[dict]) -> None:
    """Rewrite ``metrics.csv`` atomically (columns = union of the rows' keys, in order)."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="")
    writer.writeheader()
    writer.writerows(rows)
    text = buffer.getvalue()
    runs.atomic_write(run_dir / runs.METRICS_FILE, lambda tmp: Path(tmp).write_text(text))


def _load_init_weights(model, init_from, device) -> None:
    """Warm start: copy the model weights of a run folder's latest checkpoint, or of a
    checkpoint file, into ``model``."""
    path = Path(init_from)
    path = runs.checkpoint_path(path) if path.is_dir() else path
    state = runs.load_checkpoint(path, map_location=device)["model"]
    try:
        model.load_state_dict(state)
    except RuntimeError as err:  # torch's error for missing, extra or misshapen weights
        raise ValueError(
            f"init_from {str(path)!r} does not fit the config's model: {err}"
        ) from err
    logger.info("initialised model weights from %s", path)


def train(
    config,
    out_dir,
    *,
    overrides=(),
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    init_from=None,
) -> runs.Run:
    """Train the config's model with its method; write a run folder; return the run.

    config: a path to a YAML file or a config dict (resolved here); ignored on ``resume``,
    where the run folder's own ``config.yaml`` is used. ``init_from``: a run folder or
    checkpoint file whose model weights start the training (warm start).
    """
    out_dir = Path(out_dir)
    if resume:
        runs.prepare_run_dir(out_dir, resume=True)
        config = runs.read_config(out_dir)
    elif isinstance(config, str | Path):
        config = load_config(config, overrides)
    else:
        config = resolve_config(apply_overrides(config, overrides))
    if not resume:
        runs.prepare_run_dir(out_dir, overwrite=overwrite, check_only=True)

    t = config["train"]
    if t["threads"] is not None:
        torch.set_num_threads(t["threads"])
    device = select_device(t["device"])
    torch.manual_seed(t["seed"])

    # Build everything before touching the run folder: a config whose data, model or
    # method fails to build must not leave a half-made folder behind, nor wipe the
    # existing run that --overwrite was about to replace.
    train_set = assemble.make_dataset(config, "train")
    val_set = assemble.make_dataset(config, t["val_split"]) if t["val_split"] else None
    model = assemble.make_model(config).to(device)
    method = assemble.make_method(config, train_set)
    optimizer, scheduler = assemble.make_optimizer(config, model)
    resuming = resume and runs.checkpoint_path(out_dir).is_file()
    if init_from is not None and not resuming:
        _load_init_weights(model, init_from, device)
    if not resume:
        runs.prepare_run_dir(out_dir, overwrite=overwrite)
        save_config(config, out_dir / runs.CONFIG_FILE)

    start, rows = 0, []
    if resuming:
        ckpt = runs.load_checkpoint(runs.checkpoint_path(out_dir), map_location=device)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(_scheduler_state_from_plain(ckpt["scheduler"]))
        method.load_state_dict(ckpt["method"])
        _set_rng_state(ckpt["rng"])
        start = int(ckpt["epoch"])
        rows = [r for r in runs.read_metrics(out_dir) if int(r["epoch"]) <= start]
        logger.info("resuming %s after epoch %d", out_dir, start)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=t["epochs"], initial=start, desc=str(out_dir.name), unit="epoch")
    batch_size = config["data"]["batch_size"]
    for epoch in range(start, t["epochs"]):
        began = time.perf_counter()
        model.train()
        sums: dict[str, float] = {}
        seen = correct = 0
        iterations = t.get("iterations_per_epoch")
        length = None if iterations is None else iterations * batch_size
        order = epoch_order(len(train_set), t["seed"], epoch, length)
        for x, y, index in batches(
            train_set, batch_size, order=order, num_workers=config["data"]["num_workers"],
            device=device,
        ):
            out = method(model, x, y, index, epoch)
            loss_value = float(out.loss.detach())
            if not math.isfinite(loss_value):
                raise FloatingPointError(
                    f"loss became {loss_value} in epoch {epoch + 1}; "
                    "lower optim.lr or check the data"
                )
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            optimizer.step()
            n = len(y)
            seen += n
            correct += int(method.task.correct(out.logits, y).sum())
            sums["loss"] = sums.get("loss", 0.0) + loss_value * n
            for k, v in out.logs.items():
                sums[k] = sums.get(k, 0.0) + float(v) * n
        method_stats = method.end_epoch(epoch)
        lr = optimizer.param_groups[0]["lr"]
        if scheduler is not None:
            scheduler.step()
        row = {"epoch": epoch + 1, "loss": sums.pop("loss") / seen, "train_acc": correct / seen}
        if val_set is not None:
            row["val_acc"] = clean_accuracy(
                model, val_set, batch_size=config["data"]["eval_batch_size"], device=device,
                task=method.task,
            )
        row["lr"] = lr
        row.update({k: v / seen for k, v in sums.items()})
        row.update(method_stats)
        row["time_s"] = time.perf_counter() - began
        rows.append(row)

        payload = {
            "epoch": epoch + 1,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": _scheduler_state_to_plain(scheduler),
            "method": method.state_dict(),
            "rng": _rng_state(),
            "config": config,
        }
        # Metrics before the checkpoint: a crash between the two writes then leaves a
        # metrics row that resuming drops and redoes, never a checkpointed epoch whose
        # row is missing for good.
        _write_metrics(out_dir, rows)
        runs.save_checkpoint(runs.checkpoint_path(out_dir), payload)
        if (epoch + 1) % t["save_every"] == 0 or epoch + 1 == t["epochs"]:
            runs.save_checkpoint(runs.checkpoint_path(out_dir, epoch + 1), payload)
        logger.info(
            "epoch %d/%d %s", epoch + 1, t["epochs"],
            " ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "epoch"),
        )
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{row['loss']:.3f}", val=f"{row.get('val_acc', 0):.3f}")
    if bar is not None:
        bar.close()
    return runs.load_run(out_dir)
