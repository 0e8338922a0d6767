"""Attacks: pure functions over ``(model, x, y)`` returning an :class:`AttackResult`."""

from .apgd import apgd, dlr_loss
from .base import AttackResult
from .blackbox import spsa
from .boundary import bpgd
from .divergence import kl_attack, kl_divergence
from .external import autoattack
from .gradient import pgd
from .minimal import ddn
from .square import square

__all__ = [
    "AttackResult",
    "apgd",
    "autoattack",
    "bpgd",
    "ddn",
    "dlr_loss",
    "kl_attack",
    "kl_divergence",
    "pgd",
    "spsa",
    "square",
]
