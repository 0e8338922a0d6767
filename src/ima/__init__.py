"""ima: Increasing-Margin Adversarial (IMA) training and robustness evaluation for PyTorch.

The public API is re-exported here and imported on first use (PEP 562), so that
``import ima`` and the command line's help and argument errors do not wait for torch.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

#: each public name and the module that defines it
_EXPORTS = {
    "accelerate": ".acceleration",
    "AttackResult": ".attacks",
    "autoattack": ".attacks",
    "bpgd": ".attacks",
    "ddn": ".attacks",
    "pgd": ".attacks",
    "spsa": ".attacks",
    "load_config": ".config",
    "resolve_config": ".config",
    "EvaluationResult": ".evaluation",
    "evaluate": ".evaluation",
    "import_model": ".importing",
    "MarginStore": ".margins",
    "METHODS": ".methods",
    "Method": ".methods",
    "StepOutput": ".methods",
    "build_method": ".methods",
    "Run": ".runs",
    "load_run": ".runs",
    "ClassificationTask": ".tasks",
    "SegmentationTask": ".tasks",
    "Task": ".tasks",
    "adi": ".tasks",
    "tvdi": ".tasks",
    "train": ".training",
}

__all__ = sorted([*_EXPORTS, "__version__", "lp"])


def __getattr__(name: str):
    if name == "lp":
        return importlib.import_module(".lp", __name__)
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'ima' has no attribute {name!r}")


def __dir__():
    return __all__
