"""Training methods, one file each, all behind the contract of :class:`Method`."""

from .adv import VanillaAdversarial
from .base import METHODS, Method, StepOutput, build_method
from .ce import CrossEntropy
from .ima import IMA

__all__ = [
    "IMA",
    "METHODS",
    "CrossEntropy",
    "Method",
    "StepOutput",
    "VanillaAdversarial",
    "build_method",
]
