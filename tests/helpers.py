"""Shared helpers for the training, run-folder and CLI tests (imported by name: the
suite's ``pythonpath`` holds ``tests``, so ``"helpers:nan_data"`` is a user factory)."""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from ima.data import ArrayDataset

EPS_MAX = 0.3


def tiny_config(name: str = "ima", epochs: int = 4, **sections) -> dict:
    """A moons config that trains in a fraction of a second per epoch.

    ``name``: the method; ``sections`` update the named sections (e.g.
    ``optim={"schedule": "step"}``).
    """
    config = {
        "data": {"name": "moons", "n_train": 512, "n_val": 128, "n_test": 128,
                 "batch_size": 128},
        "model": {"name": "moons_mlp"},
        "method": {"name": "ima", "eps_max": EPS_MAX} if name == "ima" else {"name": name},
        "optim": {"lr": 0.01},
        "train": {"epochs": epochs, "threads": 1, "save_every": 2, "seed": 0},
    }
    for name, values in sections.items():
        config.setdefault(name, {}).update(copy.deepcopy(values))
    return config


def snapshot(folder) -> dict[str, tuple[bytes, int]]:
    """Every file under ``folder``: relative path -> (content, modification time)."""
    folder = Path(folder)
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*")) if p.is_file()
    }


def nan_data(split: str, *, n: int = 32) -> ArrayDataset:
    """A user dataset factory whose points hold a NaN."""
    x = torch.randn(n, 2)
    x[3, 1] = float("nan")
    return ArrayDataset(x, torch.arange(n) % 2, num_classes=2, name="nan_data", split=split,
                        bounds=None)


def assert_same_state(a, b, where: str = "state") -> None:
    """Recursive exact equality of state dicts (NaN equals NaN: pending margins are NaN)."""
    assert type(a) is type(b), f"{where}: {type(a)} != {type(b)}"
    if isinstance(a, dict):
        assert a.keys() == b.keys(), f"{where}: keys {sorted(a)} != {sorted(b)}"
        for k in a:
            assert_same_state(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (u, v) in enumerate(zip(a, b, strict=True)):
            assert_same_state(u, v, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape, where
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True, msg=where)
    elif isinstance(a, float) and a != a:
        assert b != b, where
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def touch(path: str) -> str:
    """Create ``path``: the side effect a malicious pickle would have."""
    Path(path).touch()
    return path


class Payload:
    """An object whose unpickling runs code (creates ``marker``): what weights_only stops."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (touch, (self.marker,))
