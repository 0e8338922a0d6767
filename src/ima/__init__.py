"""ima: Increasing-Margin Adversarial (IMA) training and robustness evaluation for PyTorch."""

from . import lp
from .acceleration import accelerate
from .attacks import AttackResult, autoattack, bpgd, ddn, pgd, spsa
from .config import load_config, resolve_config
from .evaluation import EvaluationResult, evaluate
from .margins import MarginStore
from .methods import METHODS, Method, StepOutput, build_method
from .runs import Run, load_run
from .tasks import ClassificationTask, SegmentationTask, Task, adi, tvdi
from .training import train

__version__ = "0.1.0"

__all__ = [
    "METHODS",
    "AttackResult",
    "ClassificationTask",
    "EvaluationResult",
    "MarginStore",
    "Method",
    "Run",
    "SegmentationTask",
    "StepOutput",
    "Task",
    "__version__",
    "accelerate",
    "adi",
    "autoattack",
    "bpgd",
    "build_method",
    "ddn",
    "evaluate",
    "load_config",
    "load_run",
    "lp",
    "pgd",
    "resolve_config",
    "spsa",
    "train",
    "tvdi",
]
