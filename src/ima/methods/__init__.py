"""Training methods, one file each, all behind the contract of :class:`Method`."""

from .adv import VanillaAdversarial
from .base import METHODS, MarginMethod, Method, StepOutput, build_method
from .ce import CrossEntropy
from .ddn import DDNTraining
from .fat import FAT
from .gairat import GAIRAT
from .ima import IMA
from .mma import MMA
from .trades import TRADES

__all__ = [
    "FAT",
    "GAIRAT",
    "IMA",
    "METHODS",
    "MarginMethod",
    "MMA",
    "CrossEntropy",
    "DDNTraining",
    "Method",
    "StepOutput",
    "TRADES",
    "VanillaAdversarial",
    "build_method",
]
