"""ima: Increasing-Margin Adversarial (IMA) training and robustness evaluation for PyTorch."""

from . import lp
from .attacks import AttackResult, bpgd, pgd
from .tasks import ClassificationTask, Task

__version__ = "0.1.0"

__all__ = ["AttackResult", "ClassificationTask", "Task", "__version__", "bpgd", "lp", "pgd"]
