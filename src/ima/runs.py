"""Run folders: config, metrics, checkpoints, and ``load_run``.

A run folder holds ``config.yaml`` (fully resolved), ``metrics.csv`` (one row per epoch),
``checkpoint.pt`` (the latest), ``checkpoints/epoch-NNN.pt`` (every ``save_every``
epochs) and evaluation results under ``eval/``. Checkpoints are written atomically and
read with ``torch.load(..., weights_only=True)``, so a checkpoint cannot run code.
"""

from __future__ import annotations

import csv
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

from . import assemble
from .config import resolve_config

__all__ = [
    "CHECKPOINT_FORMAT",
    "Run",
    "checkpoint_path",
    "load_checkpoint",
    "load_run",
    "prepare_run_dir",
    "read_metrics",
    "save_checkpoint",
]

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "ima-checkpoint-v1"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.csv"
LATEST = "checkpoint.pt"


def checkpoint_path(run_dir, epoch: int | None = None) -> Path:
    """Path of the latest checkpoint, or of the one saved after ``epoch`` epochs."""
    run_dir = Path(run_dir)
    return run_dir / LATEST if epoch is None else run_dir / "checkpoints" / f"epoch-{epoch:03d}.pt"


def prepare_run_dir(
    run_dir, *, resume: bool = False, overwrite: bool = False, check_only: bool = False
) -> Path:
    """Make ``run_dir`` ready for a new run; never overwrite an existing run unless asked.

    ``overwrite`` empties a folder only if it is an ``ima`` run folder (it holds
    ``config.yaml``), so a mistyped path cannot wipe unrelated files. ``check_only``
    raises what the call would raise but changes nothing on disk (so a caller can fail
    early, then build what could still fail, and only then replace the folder).
    """
    if resume and overwrite:
        raise ValueError("choose one of resume and overwrite, not both")
    run_dir = Path(run_dir)
    if resume:
        if not (run_dir / CONFIG_FILE).is_file():
            raise FileNotFoundError(f"cannot resume: {str(run_dir)!r} holds no {CONFIG_FILE}")
        return run_dir
    if run_dir.exists():
        if not run_dir.is_dir():
            raise FileExistsError(f"run folder {str(run_dir)!r} exists and is not a folder")
        if any(run_dir.iterdir()):
            if not overwrite:
                raise FileExistsError(
                    f"run folder {str(run_dir)!r} already exists and is not empty; "
                    "pass --resume to continue it or --overwrite to replace it"
                )
            if not (run_dir / CONFIG_FILE).is_file():
                raise FileExistsError(
                    f"refusing to overwrite {str(run_dir)!r}: it is not an ima run folder "
                    f"(no {CONFIG_FILE})"
                )
            if check_only:
                return run_dir
            shutil.rmtree(run_dir)
    if not check_only:
        run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def atomic_write(path, write) -> None:
    """Call ``write(file_path)`` on a temporary file beside ``path``, then rename it over
    ``path``: a crash mid-write leaves the old file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_checkpoint(path, payload: dict) -> None:
    """Write a checkpoint dict atomically (tensors and plain Python values only)."""
    atomic_write(path, lambda tmp: torch.save({"format": CHECKPOINT_FORMAT, **payload}, tmp))


def load_checkpoint(path, map_location="cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`, with clear errors."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for a damaged or foreign file
        raise ValueError(
            f"checkpoint {str(path)!r} is corrupt or not a safe ima checkpoint: {err}"
        ) from err
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{str(path)!r} is not an ima checkpoint (format {CHECKPOINT_FORMAT})")
    return payload


def read_config(run_dir) -> dict:
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{str(run_dir)!r} is not a run folder: no {CONFIG_FILE}")
    return resolve_config(yaml.safe_load(path.read_text()))


def read_metrics(run_dir) -> list[dict]:
    """Rows of ``metrics.csv`` as dicts of floats (empty when there is none yet)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _number(text: str):
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() and "." not in text and "e" not in text else value


@dataclass
class Run:
    """A trained run: ``model`` (eval mode, inputs in the data's own range), ``config``,
    ``method`` (with its state, e.g. IMA margins), ``epoch`` (epochs completed)."""

    dir: Path
    config: dict
    model: torch.nn.Module
    method: object
    epoch: int
    _datasets: dict = field(default_factory=dict, repr=False)

    def dataset(self, split: str):
        """The run's dataset split: "train", "val" or "test"."""
        if split not in self._datasets:
            self._datasets[split] = assemble.make_dataset(self.config, split)
        return self._datasets[split]

    def metrics(self) -> list[dict]:
        return read_metrics(self.dir)


def load_run(run_dir, epoch: int | None = None, *, map_location="cpu") -> Run:
    """Load a run folder's latest checkpoint, or the one saved after ``epoch`` epochs."""
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    path = checkpoint_path(run_dir, epoch)
    if epoch is not None and not path.is_file():
        saved = sorted(p.name for p in (run_dir / "checkpoints").glob("epoch-*.pt"))
        raise FileNotFoundError(
            f"no checkpoint for epoch {epoch} in {str(run_dir)!r}; saved: {saved or 'none'}"
        )
    payload = load_checkpoint(path, map_location=map_location)
    model = assemble.make_model(config)
    model.load_state_dict(payload["model"])
    model.eval()
    run = Run(run_dir, config, model, None, int(payload["epoch"]))
    method = assemble.make_method(config, run.dataset("train"))
    method.load_state_dict(payload["method"])
    run.method = method
    return run
