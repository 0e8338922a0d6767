"""What a resumed run runs: exactly the config stored in its checkpoint, plus deliberate
changes that are safe mid-run.

A run folder's ``config.yaml`` says what ran; the checkpoint holds the config it ran
with. Resuming compares the two and refuses an edited ``config.yaml`` (an edited lr would
be ignored while an edited beta would be used; an edited data seed would attach IMA's
per-sample margins to other samples). Changes are given with ``--set`` and only for the
keys of :data:`RESUME_SAFE`; they are written back to ``config.yaml`` (with a comment
line per change) and recorded in the checkpoint (``config_changes``).
"""

from __future__ import annotations

import copy
from pathlib import Path

from . import runs
from .config import apply_overrides, resolve_config

__all__ = ["RESUME_SAFE", "config_diff", "override_keys", "resume_config"]

#: Keys that may change when a run resumes: how long it trains, where and how fast it
#: runs, and evaluation settings; none of them changes what an epoch computes.
RESUME_SAFE = (
    "train.epochs", "train.save_every", "train.threads", "train.device",
    "data.num_workers", "data.eval_batch_size", "eval.*",
)


def override_keys(overrides) -> list[str]:
    """The ``section.key`` names that ``section.key=value`` overrides set."""
    return [item.partition("=")[0].strip() for item in overrides]


def _safe(key: str) -> bool:
    section = key.partition(".")[0]
    return key in RESUME_SAFE or f"{section}.*" in RESUME_SAFE


def config_diff(a: dict, b: dict) -> list[str]:
    """The ``section.key`` names whose values differ between two resolved configs."""
    keys = []
    for section in sorted(set(a) | set(b)):
        sa, sb = a.get(section) or {}, b.get(section) or {}
        for key in sorted(set(sa) | set(sb)):
            if sa.get(key, _MISSING) != sb.get(key, _MISSING):
                keys.append(f"{section}.{key}")
    return keys


_MISSING = object()


def resume_config(run_dir, overrides=(), *, trust_code: bool | None = None):
    """The config a resumed run runs, and the changes ``overrides`` make to it
    (``{key: (old, new)}``).

    Raises ``ValueError`` naming the keys when ``config.yaml`` differs from the config in
    the checkpoint (other than in keys the overrides set), when an override is not safe
    mid-run, or when ``train.epochs`` would end before the epochs already done.
    """
    run_dir = Path(run_dir)
    runs.prepare_run_dir(run_dir, resume=True)
    on_disk = runs.read_config(run_dir, trust_code=trust_code)
    latest = runs.checkpoint_path(run_dir)
    if not latest.is_file():  # stopped before its first epoch ended: starts afresh
        stored, done = on_disk, 0
    else:
        payload = runs.load_checkpoint(latest)
        # resolved again: a key added to the config since the run started is filled with
        # its default, not taken for an edit
        stored, done = resolve_config(payload.get("config", on_disk)), int(payload["epoch"])
    given = override_keys(overrides)
    unsafe = [k for k in given if not _safe(k)]
    if unsafe:
        raise ValueError(
            f"--set {', '.join(unsafe)} cannot change a run mid-way; a resumed run may "
            f"change only {', '.join(RESUME_SAFE)}"
        )
    edited = [k for k in config_diff(stored, on_disk) if k not in given]
    if edited:
        detail = "; ".join(f"{k}: {_value(stored, k)} in the checkpoint, "
                           f"{_value(on_disk, k)} in config.yaml" for k in edited)
        raise ValueError(
            f"{run_dir / runs.CONFIG_FILE} was edited after the run started ({detail}); "
            "a resumed run runs the config stored in its checkpoint: undo the edit, or "
            f"give a change that is safe mid-run with --set ({', '.join(RESUME_SAFE)})"
        )
    config = resolve_config(apply_overrides(copy.deepcopy(stored), overrides))
    changes = {k: (_value(stored, k), _value(config, k)) for k in config_diff(stored, config)}
    _check_epochs(config, changes, done)
    return config, changes


def _check_epochs(config: dict, changes: dict, done: int) -> None:
    if "train.epochs" not in changes:
        return
    epochs = config["train"]["epochs"]
    if epochs < done:
        raise ValueError(f"train.epochs={epochs} is fewer than the {done} epochs already done")
    schedule = config["optim"]["schedule"]
    if schedule in ("cosine", "poly"):
        raise ValueError(
            f"train.epochs cannot change mid-run with optim.schedule {schedule!r}: the "
            "learning rate of every epoch depends on the number of epochs"
        )


def _value(config: dict, key: str):
    section, _, name = key.partition(".")
    return (config.get(section) or {}).get(name)
