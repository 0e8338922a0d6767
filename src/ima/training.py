"""The one training loop (``ima.train``); it knows nothing about any method."""

from __future__ import annotations

import copy
import csv
import io
import logging
import math
import time
from collections import Counter
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from . import assemble, distributed, runs
from .acceleration import accelerate, check_precision
from .config import apply_overrides, load_config, resolve_config
from .data import ArrayDataset
from .modes import eval_mode
from .resume import resume_config
from .tasks import ClassificationTask, get_task

__all__ = ["batches", "clean_accuracy", "select_device", "train", "with_class_names"]

logger = logging.getLogger(__name__)


def select_device(name: str) -> torch.device:
    """``"auto"`` is CUDA when available, else CPU; anything else is passed to torch."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"device {name!r} is not a valid torch device: {err}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was asked for, but this torch "
                         f"({torch.__version__}) sees no CUDA device")
    if device.type == "cuda" and device.index is not None \
            and device.index >= torch.cuda.device_count():
        raise ValueError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s)")
    return device


def epoch_order(
    n: int, seed: int, epoch: int, length: int | None = None, *, batch_size: int | None = None,
) -> torch.Tensor:
    """The sample order of an epoch, a function of (seed, epoch) only, so resuming at any
    epoch reproduces the order of an uninterrupted run.

    ``length=None``: a permutation of the ``n`` samples (one pass). Otherwise ``length``
    entries taken from back-to-back permutations: an epoch of a fixed number of
    iterations (``train.iterations_per_epoch``, nnU-Net's epochs in appendix G.2), which
    may see a sample more than once or not at all. Each permutation is used up before the
    next begins, so at any point the counts of two samples differ by at most one.

    ``batch_size <= n``: no batch (``batch_size`` consecutive entries) holds a sample twice.
    A batch that reaches into the next permutation passes over the samples it already
    holds; they keep their place in line and open the next batch (see
    :func:`_spread_repeats`). ``batch_size > n`` (or None): a batch must repeat samples,
    and the permutations are cut as they are; a method's margin store keeps the last of a
    batch's records of one sample (:meth:`ima.margins.MarginStore.record`).
    """
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    if length is None:
        return torch.randperm(n, generator=g)
    # one spare permutation: entries passed over push the later ones back, by less than n
    passes = -(-length // n) + 1
    stream = torch.cat([torch.randperm(n, generator=g) for _ in range(passes)])
    if batch_size is not None and batch_size <= n:
        stream = _spread_repeats(stream, batch_size, length)
    return stream[:length]


def _spread_repeats(stream: torch.Tensor, batch_size: int, length: int) -> torch.Tensor:
    """``stream`` reordered so that no batch of its first ``length`` entries holds a sample
    twice: a batch takes, in order, the next entries of the line that it does not hold yet;
    those passed over keep their order at the head of the line.

    ``stream``: back-to-back permutations of ``n >= batch_size`` samples, at least one
    more than ``length`` needs. The line then always starts with what is left of one
    permutation followed by the next, so a batch fills before the line runs out.
    """
    values = stream.tolist()
    for start in range(0, length, batch_size):
        size = min(batch_size, length - start)
        if len(set(values[start:start + size])) == size:
            continue  # the usual case: the batch lies inside one permutation
        taken: dict[int, None] = {}  # insertion-ordered set
        passed = []
        j = start
        while len(taken) < size:
            if values[j] in taken:
                passed.append(values[j])
            else:
                taken[values[j]] = None
            j += 1
        values[start:j] = [*taken, *passed]
    return torch.tensor(values, dtype=stream.dtype)


def batches(
    dataset: Dataset, batch_size: int, *, order=None, num_workers: int = 0, device="cpu",
    shard: tuple[int, int] = (0, 1),
):
    """Yield ``(x, y, index)`` batches on ``device`` in the given sample order.

    ``order``: the dataset positions to visit (default: all, in order; it may be shorter
    or longer than the dataset and repeat positions, as epochs of a fixed number of
    iterations do). ``shard=(rank, world)``: cut each batch of ``batch_size`` positions
    into ``world`` near-equal contiguous parts and yield part ``rank`` (a process's share
    of a global batch under torchrun; see :func:`ima.distributed.shard_batches`).
    In-memory datasets are sliced directly (no per-item Python overhead), on the GPU from
    a copy kept there (:meth:`ima.data.ArrayDataset.resident`); other datasets go through
    a DataLoader (``num_workers`` worker processes, pinned memory on CUDA).
    Yielded indices are those the dataset reports.
    """
    order = torch.arange(len(dataset)) if order is None else order
    rank, world = shard
    parts = [
        torch.tensor_split(order[start:stop], world)[rank]
        for start, stop in distributed.shard_batches(len(order), batch_size, world)
    ]
    pin = torch.device(device).type == "cuda"
    if isinstance(dataset, ArrayDataset):
        xs, ys = dataset.resident(device)
        for idx in parts:
            rows = idx.to(xs.device)
            yield xs[rows].to(device), ys[rows].to(device), idx.to(device)
        return
    loader = DataLoader(
        dataset, batch_sampler=[p.tolist() for p in parts], num_workers=num_workers,
        pin_memory=pin, persistent_workers=False,
    )
    for x, y, index in loader:
        yield (x.to(device, non_blocking=pin), y.to(device, non_blocking=pin),
               torch.as_tensor(index).to(device))


@torch.no_grad()
def clean_accuracy(model, dataset, *, batch_size=512, device="cpu", task=None,
                   ctx: distributed.Context | None = None) -> float:
    """Accuracy of ``model`` on the clean samples of ``dataset``, in eval mode; under
    torchrun (``ctx``) each process counts its share and the counts are summed."""
    task = get_task(task)
    shard = (0, 1) if ctx is None else (ctx.rank, ctx.world)
    correct = total = 0
    with eval_mode(model):
        for x, y, _ in batches(dataset, batch_size, device=device, shard=shard):
            out = model(x)
            correct += int(task.correct(out, y).sum())
            total += int(task.scored(out, y).sum())  # segmentation may leave images unscored
    if ctx is not None:
        correct, total = distributed.all_sum([correct, total], ctx)
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
    runs.load_weights(model, runs.load_checkpoint(path, map_location=device)["model"], path)
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
    trust_code: bool | None = None,
) -> runs.Run:
    """Train the config's model with its method; write a run folder; return the run.

    config: a path to a YAML file or a config dict (resolved here); ignored on ``resume``,
    where the run runs exactly the config stored in its checkpoint (see
    :func:`resume_config`; ``overrides`` then may change only :data:`RESUME_SAFE` keys).
    ``init_from``: a run folder or checkpoint file whose model weights start the
    training (warm start). ``trust_code``: allow a resumed run's config to name code
    outside ima (:func:`ima.runs.check_trusted`).

    Everything that can fail at start (data, model, method, optimizer, one forward and
    backward pass of the method on the first batch, the model's input channels against
    the data's, ``eval.positive_class`` against the class names) is tried before the run
    folder is created or, with ``overwrite``, emptied. A new run's ``config.yaml`` records
    the data's class names (``data.class_names``, from the folders, the files or the
    dataset) when it has them.
    """
    out_dir = Path(out_dir)
    changes: dict = {}
    if resume:
        config, changes = resume_config(out_dir, overrides, trust_code=trust_code)
    elif isinstance(config, str | Path):
        config = load_config(config, overrides)
    else:
        config = resolve_config(apply_overrides(config, overrides))

    ctx = distributed.init(select_device(config["train"]["device"]))
    try:
        if not resume and ctx.is_main:
            runs.prepare_run_dir(out_dir, overwrite=overwrite, check_only=True)
        _train(config, out_dir, ctx, resume=resume, overwrite=overwrite, progress=progress,
               init_from=init_from, changes=changes)
        distributed.barrier(ctx)
    finally:
        distributed.finish(ctx)
    return runs.load_run(out_dir, trust_code=True)  # the config was checked above


def with_class_names(config: dict, train_set) -> dict:
    """The config with ``data.class_names`` set to the names the dataset gives its classes
    (unchanged when it gives none); ``eval.positive_class`` is checked against them."""
    names = assemble.data_class_names(train_set)
    if names is not None:
        config = {**config, "data": {**config["data"], "class_names": names}}
    from .evaluation.results import positive_index  # the evaluation's rule, checked early

    num_classes = len(names) if names is not None else getattr(train_set, "num_classes", None)
    if num_classes is not None and isinstance(assemble.data_task(train_set), ClassificationTask):
        try:
            positive_index(config["eval"]["positive_class"], names, num_classes)
        except ValueError as err:
            raise ValueError(f"eval.{err}") from None
    return config


def _first_conv(model) -> tuple[list, list]:
    """Hooks that record the first convolution the model runs: (its expected input
    channels, the channels it was given)."""
    seen: list = []

    def hook(module, args):
        if not seen and args and isinstance(args[0], torch.Tensor) and args[0].dim() > 1:
            seen.append((module.in_channels, int(args[0].shape[1])))

    convs = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)
    handles = [m.register_forward_pre_hook(hook) for m in model.modules()
               if isinstance(m, convs)]
    return seen, handles


def _channel_mismatch(config: dict, seen: list, channels: int) -> str | None:
    """The one-line error of a model whose first convolution expects other input channels
    than the data has, with how to fix it; None when that is not what failed."""
    if not seen or seen[0][1] != channels or seen[0][0] == channels:
        return None
    expected = seen[0][0]
    fixes = []
    if "grey" in config["data"] and {expected, channels} == {1, 3}:
        fixes.append("set data.grey: false to load them as RGB" if channels == 1
                     else "set data.grey: true to load them as grey")
    fixes.append(f"give the model in_channels: {channels}" if "in_channels" in config["model"]
                 else f"give the model a first layer that takes {channels} channel(s)")
    return (f"the model expects {expected} input channels but the images have {channels} "
            f"({', or '.join(fixes)})")


def try_first_step(config: dict, model, train_set, device) -> None:
    """Run the method's forward and backward pass on the first batch, on copies of the
    model and method, and restore the random state: whatever would fail at the first
    step (a model that does not fit the data, such as one expecting other input
    channels than the images have, a model whose output is not one logits tensor) fails
    before the run folder is touched, as a one-line ``ValueError``."""
    t = config["train"]
    rng = _rng_state()
    try:
        probe = copy.deepcopy(model)
        method = assemble.method_from_config(config, train_set)
        net = accelerate(probe, precision=t["precision"], channels_last=t["channels_last"],
                         device=device)
        size = min(config["data"]["batch_size"], len(train_set))
        x, y, index = next(batches(train_set, size, order=torch.arange(size), device=device))
        seen, handles = _first_conv(probe)
        try:
            with eval_mode(probe), torch.no_grad():
                out = probe(x)
            if not isinstance(out, torch.Tensor):
                raise ValueError(
                    f"the model must return one tensor of logits, got a "
                    f"{type(out).__name__}; wrap it to return the logits alone"
                )
            step = method(net, x, y, index, 0)
            step.loss.backward()
        except (RuntimeError, IndexError) as err:
            mismatch = _channel_mismatch(config, seen, int(x.shape[1])) if x.dim() > 1 else None
            if mismatch is not None:
                raise ValueError(mismatch) from None
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ValueError(
                f"the model does not fit the data: the first training step on inputs of "
                f"shape {tuple(x.shape)} failed: {first}"
            ) from None
        finally:
            for handle in handles:
                handle.remove()
    finally:
        _set_rng_state(rng)


def _grad_scaler():
    """Loss scaling for fp16 training (torch.amp.GradScaler; torch.cuda.amp before 2.3)."""
    if hasattr(torch.amp, "GradScaler"):
        return torch.amp.GradScaler("cuda")
    return torch.cuda.amp.GradScaler()


def _train(config, out_dir: Path, ctx, *, resume, overwrite, progress, init_from,
           changes) -> None:
    """The body of :func:`train` in one process (of ``ctx.world``)."""
    t = config["train"]
    if t["threads"] is not None:
        torch.set_num_threads(t["threads"])
    elif ctx.active:
        torch.set_num_threads(1)  # one thread per process: oversubscribed cores crawl
    device = ctx.device
    check_precision(t["precision"], device)  # fp16 needs CUDA: fail before the folder exists
    torch.manual_seed(t["seed"])

    # Build everything before touching the run folder: a config whose data, model or
    # method fails to build must not leave a half-made folder behind, nor wipe the
    # existing run that --overwrite was about to replace.
    train_set = assemble.dataset_from_config(config, "train")
    if not resume:  # a resumed run keeps the config stored in its checkpoint
        config = with_class_names(config, train_set)
    val_set = assemble.dataset_from_config(config, t["val_split"]) if t["val_split"] else None
    model = assemble.model_from_config(config).to(device)
    method = assemble.method_from_config(config, train_set)
    optimizer, scheduler = assemble.optimizer_from_config(config, model)
    scaler = _grad_scaler() if t["precision"] == "fp16" else None
    resuming = resume and runs.checkpoint_path(out_dir).is_file()
    if init_from is not None and not resuming:
        _load_init_weights(model, init_from, device)
    if not resume:
        try_first_step(config, model, train_set, device)
    if not resume and ctx.is_main:
        runs.prepare_run_dir(out_dir, overwrite=overwrite)
        runs.write_config(out_dir, config)
    distributed.barrier(ctx)

    start, rows, history = 0, [], []
    if resuming:
        ckpt = runs.load_checkpoint(runs.checkpoint_path(out_dir), map_location=device)
        path = runs.checkpoint_path(out_dir)
        runs.load_weights(model, ckpt["model"], path)
        optimizer.load_state_dict(ckpt["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(_scheduler_state_from_plain(ckpt["scheduler"]))
        if scaler is not None and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        runs.load_method_state(method, ckpt["method"], path)
        _set_rng_state(ckpt["rng"])
        start = int(ckpt["epoch"])
        rows = [r for r in runs.read_metrics(out_dir) if int(r["epoch"]) <= start]
        history = list(ckpt.get("config_changes", []))
        if ctx.is_main:
            runs.remove_stale_temporaries(out_dir)
            _restore_kept_checkpoint(out_dir, ckpt, t)
            if changes:
                history.append({"after_epoch": start, "changes": {
                    k: list(v) for k, v in changes.items()}})
                runs.save_checkpoint(path, {**ckpt, "config": config,
                                            "config_changes": history})
        logger.info("resuming %s after epoch %d", out_dir, start)
    if resume and changes and ctx.is_main:
        runs.write_config(out_dir, config, history=history or [
            {"after_epoch": 0, "changes": {k: list(v) for k, v in changes.items()}}])
    if ctx.active:
        distributed.broadcast_parameters(model, ctx)
    # `net` runs the model (attacks, losses); `model` holds the weights that are saved.
    net = accelerate(model, precision=t["precision"], channels_last=t["channels_last"],
                     compile=t["compile"], device=device)

    bar = None
    if progress and ctx.is_main:
        from tqdm.auto import tqdm

        bar = tqdm(total=t["epochs"], initial=start, desc=str(out_dir.name), unit="epoch")
    batch_size = config["data"]["batch_size"]
    for epoch in range(start, t["epochs"]):
        began = time.perf_counter()
        if ctx.active:
            # each process its own random starts, reproducible for a given (seed, epoch)
            torch.manual_seed((t["seed"] * 1_000_003 + epoch) * 1009 + ctx.rank)
        model.train()
        sums: dict[str, float] = {}
        seen = scored = correct = 0
        iterations = t.get("iterations_per_epoch")
        length = None if iterations is None else iterations * batch_size
        order = epoch_order(len(train_set), t["seed"], epoch, length, batch_size=batch_size)
        spans = distributed.shard_batches(len(order), batch_size, ctx.world)
        stream = batches(
            train_set, batch_size, order=order, num_workers=config["data"]["num_workers"],
            device=device, shard=(ctx.rank, ctx.world),
        )
        for (x, y, index), (lo, hi) in zip(stream, spans, strict=True):
            out = method(net, x, y, index, epoch)
            loss_value = float(out.loss.detach())
            if not math.isfinite(loss_value):
                raise FloatingPointError(
                    f"loss became {loss_value} in epoch {epoch + 1}; "
                    "lower optim.lr or check the data"
                )
            optimizer.zero_grad(set_to_none=True)
            (out.loss if scaler is None else scaler.scale(out.loss)).backward()
            if ctx.active:
                distributed.sync_gradients(model, len(y) / (hi - lo), ctx)
            if scaler is None:
                optimizer.step()
            else:
                scaler.step(optimizer)
                scaler.update()
            if ctx.active:
                distributed.broadcast_buffers(model, ctx)
            n = len(y)
            seen += n
            scored += int(method.task.scored(out.logits, y).sum())
            correct += int(method.task.correct(out.logits, y).sum())
            sums["loss"] = sums.get("loss", 0.0) + loss_value * n
            for k, v in out.logs.items():
                sums[k] = sums.get(k, 0.0) + float(v) * n
        if ctx.active:
            keys = sorted(sums)
            seen, scored, correct, *totals = distributed.all_sum(
                [seen, scored, correct] + [sums[k] for k in keys], ctx
            )
            sums = dict(zip(keys, totals, strict=True))
            distributed.sync_margins(method, ctx)
        method_stats = method.end_epoch(epoch)
        lr = optimizer.param_groups[0]["lr"]
        if scheduler is not None:
            scheduler.step()
        row = {"epoch": epoch + 1, "loss": sums.pop("loss") / seen,
               "train_acc": correct / max(scored, 1)}
        if val_set is not None:
            row["val_acc"] = clean_accuracy(
                net, val_set, batch_size=config["data"]["eval_batch_size"], device=device,
                task=method.task, ctx=ctx if ctx.active else None,
            )
        row["lr"] = lr
        row.update({k: v / seen for k, v in sums.items()})
        row.update(method_stats)
        row["time_s"] = time.perf_counter() - began
        rows.append(row)

        if ctx.is_main:
            _save_epoch(out_dir, rows, t, epoch, {
                "epoch": epoch + 1,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": _scheduler_state_to_plain(scheduler),
                "scaler": None if scaler is None else scaler.state_dict(),
                "method": method.state_dict(),
                "rng": _rng_state(),
                "config": config,
                "config_changes": history,
            })
            logger.info(
                "epoch %d/%d %s", epoch + 1, t["epochs"],
                " ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "epoch"),
            )
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{row['loss']:.3f}", val=f"{row.get('val_acc', 0):.3f}")
    if bar is not None:
        bar.close()


def _kept(t: dict, epochs_done: int) -> bool:
    """Whether the checkpoint after ``epochs_done`` epochs is kept in ``checkpoints/``."""
    return epochs_done % t["save_every"] == 0 or epochs_done == t["epochs"]


def _save_epoch(out_dir: Path, rows: list[dict], t: dict, epoch: int, payload: dict) -> None:
    """Write metrics.csv, every ``save_every`` epochs a kept checkpoint, then checkpoint.pt.

    Order matters for a kill between writes: metrics first (a row past the checkpoint is
    dropped and redone on resume, never missing for good), the kept copy before the
    latest (a resume redoes the epoch and writes both; the latest never moves past an
    epoch whose kept copy is missing)."""
    _write_metrics(out_dir, rows)
    if _kept(t, epoch + 1):
        runs.save_checkpoint(runs.checkpoint_path(out_dir, epoch + 1), payload)
    runs.save_checkpoint(runs.checkpoint_path(out_dir), payload)


def _restore_kept_checkpoint(out_dir: Path, ckpt: dict, t: dict) -> None:
    """On resume: write the kept copy of the latest checkpoint if a kill (or an ima
    before 0.2, which wrote the latest first) lost it."""
    epoch = int(ckpt["epoch"])
    kept = runs.checkpoint_path(out_dir, epoch)
    if _kept(t, epoch) and not kept.is_file():
        runs.save_checkpoint(kept, ckpt)
        logger.warning("restored the kept checkpoint %s from checkpoint.pt", kept)
