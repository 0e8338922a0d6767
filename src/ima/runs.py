"""Run folders: config, metrics, checkpoints, and ``load_run``.

A run folder holds ``.ima-run`` (the marker that says ima made it), ``config.yaml``
(fully resolved), ``metrics.csv`` (one row per epoch), ``checkpoint.pt`` (the latest),
``checkpoints/epoch-NNN.pt`` (every ``save_every`` epochs) and evaluation results under
``eval/``; a folder made by :func:`ima.import_model` from a model trained elsewhere holds
the marker (naming where the weights came from, :func:`imported_from`), the config and
``checkpoint.pt`` of epoch 0, and nothing of training. Files are written atomically (a
temporary file, then a rename) with the permissions of an ordinary new file; checkpoints
are read with ``torch.load(..., weights_only=True)``, so a checkpoint cannot run code, and a config
that names code outside ima (``"module:function"``) is imported only when the user opts
in (:func:`check_trusted`), so opening a run folder from elsewhere cannot run code either.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import assemble
from .config import read_config_file, resolve_config

__all__ = [
    "CHECKPOINT_FORMAT",
    "TRUST_CODE_ENV",
    "Run",
    "check_trusted",
    "checkpoint_path",
    "imported_from",
    "load_checkpoint",
    "load_run",
    "prepare_run_dir",
    "read_metrics",
    "save_checkpoint",
]

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "ima-checkpoint-v1"
RUN_FORMAT = "ima-run-v1"
MARKER_FILE = ".ima-run"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.csv"
LATEST = "checkpoint.pt"
#: Set to 1 to let ima import the code a run folder's config names (``--trust-code``).
TRUST_CODE_ENV = "IMA_TRUST_CODE"

#: What ima writes into a run folder, as regular expressions of paths relative to it
#: (exact names; results under ``eval/`` are also recognised by their content, see
#: :func:`_written`); ``--overwrite`` removes these and nothing else. Temporary files of
#: interrupted atomic writes are ``.<name>.<random>.tmp`` beside their target.
WRITTEN = tuple(re.compile(p) for p in (
    r"\.ima-run", r"config\.yaml", r"metrics\.csv", r"checkpoint\.pt",
    r"checkpoints/epoch-\d{3,}\.pt",
    r"eval/[a-z0-9-]+\.json", r"eval/\.partial-[0-9a-f]+(-rank\d+)?\.pt",
    r"eval/select-(train|val|test)(\.md|\.csv|-epochs\.csv)",
    r"eval/checkpoints/epoch-\d{3,}-pgd-(l2|linf)-(train|val|test)\.json",
    r"figures/(boundary|margins|curves|noise|samples)\.(png|pdf)",
    r"export/model-epoch-\d{3,}\.(pt|onnx|onnx\.data|pt2)",
    r"((checkpoints|eval|eval/checkpoints|figures|export)/)?\..+\.tmp",
))
_FOLDERS = ("checkpoints", "eval/checkpoints", "eval", "figures", "export")


def checkpoint_path(run_dir, epoch: int | None = None) -> Path:
    """Path of the latest checkpoint, or of the one saved after ``epoch`` epochs."""
    run_dir = Path(run_dir)
    return run_dir / LATEST if epoch is None else run_dir / "checkpoints" / f"epoch-{epoch:03d}.pt"


def is_run_folder(run_dir) -> bool:
    """Whether ima made ``run_dir``: it holds ima's marker, or (folders made before the
    marker existed) a checkpoint in ima's format. A ``config.yaml`` alone is not enough:
    any project may have one."""
    run_dir = Path(run_dir)
    if (run_dir / MARKER_FILE).is_file():
        return True
    try:
        load_checkpoint(run_dir / LATEST)
    except (FileNotFoundError, ValueError):
        return False
    return True


def prepare_run_dir(
    run_dir, *, resume: bool = False, overwrite: bool = False, check_only: bool = False,
    imported_from: str | None = None,
) -> Path:
    """Make ``run_dir`` ready for a new run; never overwrite an existing run unless asked.

    ``overwrite`` applies only to an ima run folder (:func:`is_run_folder`), and removes
    only what ima wrote there (:data:`WRITTEN`); anything else in it is kept and named in
    a warning. ``check_only`` raises what the call would raise but changes nothing on
    disk (so a caller can fail early, then try everything that can fail at start, and
    only then replace the folder). ``imported_from``: where the weights of an imported
    model came from, recorded in the marker (:func:`imported_from`). A folder of an
    imported model cannot be resumed: it has no training state.
    """
    if resume and overwrite:
        raise ValueError("choose one of resume and overwrite, not both")
    run_dir = Path(run_dir)
    if resume:
        if not (run_dir / CONFIG_FILE).is_file():
            raise FileNotFoundError(f"cannot resume: {str(run_dir)!r} holds no {CONFIG_FILE}")
        if _marker(run_dir).get("imported_from") is not None:
            raise ValueError(
                f"cannot resume {str(run_dir)!r}: it holds a model imported by `ima "
                "import-model`, not a training run (no optimizer state); to train it "
                f"further, start a new run from its weights: ima train --config FILE --out "
                f"NEW_DIR --init-from {run_dir}"
            )
        return run_dir
    _check_writable_place(run_dir)
    if run_dir.exists() and any(run_dir.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f"run folder {str(run_dir)!r} already exists and is not empty; "
                "pass --resume to continue it or --overwrite to replace it"
            )
        if not is_run_folder(run_dir):
            raise FileExistsError(
                f"refusing to overwrite {str(run_dir)!r}: it is not an ima run folder "
                f"(no {MARKER_FILE} marker or ima checkpoint)"
            )
        if check_only:
            return run_dir
        _remove_written(run_dir)
    if not check_only:
        run_dir.mkdir(parents=True, exist_ok=True)
        marker = {"format": RUN_FORMAT}
        if imported_from is not None:
            marker["imported_from"] = str(imported_from)
        text = json.dumps(marker) + "\n"
        atomic_write(run_dir / MARKER_FILE, lambda tmp: Path(tmp).write_text(text))
    return run_dir


def imported_from(run_dir) -> str | None:
    """Where the weights of a run folder made by :func:`ima.import_model` came from (a
    file, or a model passed in Python), as its marker records; None for a training run
    (or a folder without a readable marker)."""
    source = _marker(run_dir).get("imported_from")
    return source if isinstance(source, str) else None


def _marker(run_dir) -> dict:
    """The run folder's marker as a dict (empty when there is none or it is unreadable)."""
    try:
        marker = json.loads((Path(run_dir) / MARKER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return marker if isinstance(marker, dict) else {}


def _check_writable_place(run_dir: Path) -> None:
    """A clear error when ``run_dir`` cannot be a folder: a file is in the way (at it or
    above it), or the first existing folder above it is not writable."""
    for path in (run_dir, *run_dir.parents):
        if path.exists():
            if not path.is_dir():
                raise FileExistsError(
                    f"run folder {str(run_dir)!r} cannot be made: {str(path)!r} is a file"
                )
            if not os.access(path, os.W_OK | os.X_OK):
                raise PermissionError(
                    f"run folder {str(run_dir)!r} cannot be written: no write permission "
                    f"in {str(path)!r}"
                )
            return


def _written(run_dir: Path) -> list[Path]:
    """The files in the run folder that ima wrote: regular files (no links) in the folder
    itself or in its real (not linked) subfolders of :data:`_FOLDERS`, whose relative
    path matches :data:`WRITTEN`; a JSON file under ``eval/`` only if it is an ima
    result."""
    from .evaluation.results import EvaluationResult

    folders = [run_dir] + [run_dir / f for f in _FOLDERS
                           if (run_dir / f).is_dir() and not _linked(run_dir, f)]
    found = []
    for folder in folders:
        for path in folder.iterdir():
            rel = path.relative_to(run_dir).as_posix()
            if path.is_symlink() or not path.is_file():
                continue
            if not any(p.fullmatch(rel) for p in WRITTEN):
                continue
            if rel.endswith(".json") and rel.startswith("eval/"):
                try:
                    EvaluationResult.load(path)
                except (ValueError, TypeError, OSError):
                    continue
            found.append(path)
    return found


def _linked(run_dir: Path, folder: str) -> bool:
    """Whether ``folder`` (relative) or one of the folders on its way is a link."""
    path = run_dir
    for part in Path(folder).parts:
        path = path / part
        if path.is_symlink():
            return True
    return False


def _remove_written(run_dir: Path) -> None:
    for path in _written(run_dir):
        path.unlink()
    for folder in _FOLDERS:
        path = run_dir / folder
        if path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
            path.rmdir()
    kept = sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*")
                  if p.is_file() or p.is_symlink())
    if kept:
        logger.warning("--overwrite kept %d file(s) in %s that ima did not write: %s",
                       len(kept), run_dir, ", ".join(kept[:10]))


def remove_stale_temporaries(run_dir) -> list[Path]:
    """Remove the temporary files that killed checkpoint and metrics writes left behind
    (``.checkpoint.pt.*.tmp`` and the like) in the run folder and ``checkpoints/``; the
    files they were to replace are intact (writes are atomic). Returns what was removed."""
    run_dir = Path(run_dir)
    stale = [p for p in run_dir.glob(".*.tmp") if p.is_file() and not p.is_symlink()]
    if (run_dir / "checkpoints").is_dir() and not _linked(run_dir, "checkpoints"):
        stale += [p for p in run_dir.glob("checkpoints/.*.tmp")
                  if p.is_file() and not p.is_symlink()]
    for path in stale:
        path.unlink(missing_ok=True)
    if stale:
        logger.info("removed %d temporary file(s) of interrupted writes in %s",
                    len(stale), run_dir)
    return stale


def file_mode() -> int:
    """The permissions of a new ordinary file under the current umask (0644 under 022)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _publish(path, write, put) -> bool:
    """Call ``write(file_path)`` on a temporary file beside ``path`` (the permissions of
    an ordinary new file: mkstemp makes 0600, results are shared like config.yaml), then
    ``put(tmp, path)``; the temporary file is gone afterwards whatever happens."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, file_mode())
        return put(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write(path, write) -> None:
    """Call ``write(file_path)`` on a temporary file beside ``path``, then rename it over
    ``path``: a crash mid-write leaves the old file intact."""
    _publish(path, write, os.replace)


def exclusive_write(path, write) -> bool:
    """Like :func:`atomic_write`, but never replaces an existing file: returns False (and
    writes nothing) when ``path`` exists, also when another process creates it meanwhile
    (a hard link of the finished temporary file is made under the name, which fails if
    the name is taken)."""
    def link(tmp, target) -> bool:
        try:
            os.link(tmp, target)
        except FileExistsError:
            return False
        return True

    return _publish(path, write, link)


def save_checkpoint(path, payload: dict) -> None:
    """Write a checkpoint dict atomically (tensors and plain Python values only)."""
    atomic_write(path, lambda tmp: torch.save({"format": CHECKPOINT_FORMAT, **payload}, tmp))


def write_config(run_dir, config: dict, *, history=()) -> None:
    """Write a resolved config as the run folder's ``config.yaml`` (atomically), with one
    comment line per change a resume made (``history``: ``{"after_epoch", "changes"}``)."""
    import yaml

    lines = [
        f"# resumed after epoch {h['after_epoch']} with --set "
        + ", ".join(f"{k}={new!r} (was {old!r})" for k, (old, new) in h["changes"].items())
        + "\n"
        for h in history
    ]
    text = "".join(lines) + yaml.safe_dump(config, sort_keys=False)
    atomic_write(Path(run_dir) / CONFIG_FILE, lambda tmp: Path(tmp).write_text(text))


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
        hint = ""
        if isinstance(payload, dict) and payload and all(
                isinstance(v, torch.Tensor) for v in payload.values()):
            hint = ("; it looks like a plain state_dict: make a run folder of it with "
                    "`ima import-model --config FILE --weights PATH --out RUN_DIR`")
        raise ValueError(
            f"{str(path)!r} is not an ima checkpoint (format {CHECKPOINT_FORMAT}){hint}")
    return payload


def read_config(run_dir, *, trust_code: bool | None = None) -> dict:
    """The resolved config of a run folder; refuses (before importing anything) a config
    that names code outside ima unless trusted (:func:`check_trusted`)."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{str(run_dir)!r} is not a run folder: no {CONFIG_FILE}")
    raw = read_config_file(path)
    check_trusted(raw, str(run_dir), trust_code=trust_code)
    return resolve_config(raw)


def check_trusted(raw: dict, where: str, *, trust_code: bool | None = None) -> None:
    """Refuse a config from a run folder whose dataset, model or method is named as
    ``"module:function"`` (which ima would import and call) unless the user trusts it:
    ``trust_code=True``, or ``trust_code=None`` and the environment variable
    ``IMA_TRUST_CODE=1`` (the CLI's ``--trust-code``). A run folder may come from
    someone else; ``"os:system"`` there would run a command on opening it."""
    if trust_code is None:
        trust_code = os.environ.get(TRUST_CODE_ENV, "") == "1"
    if trust_code or not isinstance(raw, dict):
        return
    for section in ("data", "model", "method"):
        values = raw.get(section)
        name = values.get("name") if isinstance(values, dict) else None
        if isinstance(name, str) and ":" in name:
            module = name.partition(":")[0]
            raise PermissionError(
                f"{where} names code outside ima: {section}.name {name!r} would import "
                f"module {module!r}; if you trust this run folder, pass --trust-code "
                f"(or set {TRUST_CODE_ENV}=1)"
            )


def read_metrics(run_dir) -> list[dict]:
    """Rows of ``metrics.csv`` as dicts of floats (empty when there is none yet)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    try:
        with path.open(newline="", encoding="utf-8") as f:
            raw = list(csv.DictReader(f))
    except (csv.Error, UnicodeDecodeError) as err:
        raise ValueError(f"{str(path)!r} is not a readable metrics file: {err}") from None
    rows = []
    for i, row in enumerate(raw, start=2):
        if None in row or None in row.values():
            raise ValueError(f"{str(path)!r} is corrupt at line {i}: not one value per "
                             "column; restore it or delete the broken rows")
        rows.append({k: _number(v) for k, v in row.items()})
        if not isinstance(rows[-1].get("epoch"), int):
            raise ValueError(f"{str(path)!r} is corrupt at line {i}: no integer epoch")
    return rows


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
            self._datasets[split] = assemble.dataset_from_config(self.config, split)
        return self._datasets[split]

    def metrics(self) -> list[dict]:
        return read_metrics(self.dir)

    def with_dataset(self, split: str, dataset) -> Run:
        """A copy of the run whose ``split`` is ``dataset`` (e.g. the split reordered for
        a figure); the model, method and other splits are shared."""
        return dataclasses.replace(self, _datasets={**self._datasets, split: dataset})


def load_run(run_dir, epoch: int | None = None, *, map_location="cpu",
             trust_code: bool | None = None) -> Run:
    """Load a run folder's latest checkpoint, or the one saved after ``epoch`` epochs.

    ``trust_code``: allow a config that names code outside ima (see :func:`check_trusted`).
    """
    run_dir = Path(run_dir)
    config = read_config(run_dir, trust_code=trust_code)
    path = checkpoint_path(run_dir, epoch)
    if epoch is not None and not path.is_file():
        saved = sorted(p.name for p in (run_dir / "checkpoints").glob("epoch-*.pt"))
        raise FileNotFoundError(
            f"no checkpoint for epoch {epoch} in {str(run_dir)!r}; saved: {saved or 'none'}"
        )
    payload = load_checkpoint(path, map_location=map_location)
    model = assemble.model_from_config(config)
    load_weights(model, payload["model"], path)
    model.eval()
    run = Run(run_dir, config, model, None, int(payload["epoch"]))
    method = assemble.method_from_config(config, run.dataset("train"))
    load_method_state(method, payload["method"], path)
    run.method = method
    return run


def load_weights(model: torch.nn.Module, state: dict, path) -> None:
    """``model.load_state_dict(state)`` with a one-line error naming the checkpoint when
    its weights belong to another architecture."""
    try:
        model.load_state_dict(state)
    except RuntimeError as err:  # torch's error for missing, extra or misshapen weights
        first = str(err).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:3])
        raise ValueError(
            f"checkpoint {str(path)!r} holds weights of another model than the config's "
            f"{type(model).__name__}: {detail[:300]}"
        ) from None


def load_method_state(method, state, path) -> None:
    """``method.load_state_dict(state)`` with a one-line error when the checkpoint's
    method state is not this method's (e.g. a ce checkpoint in an IMA run: no margins)."""
    try:
        method.load_state_dict(state)
    except (KeyError, TypeError, RuntimeError, ValueError) as err:
        raise ValueError(
            f"checkpoint {str(path)!r} does not hold the state of method "
            f"{method.name!r} (was it written by another method's run?): "
            f"{type(err).__name__} {err}"
        ) from None
