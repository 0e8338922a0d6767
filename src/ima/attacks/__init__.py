"""Attacks: pure functions over ``(model, x, y)`` returning an :class:`AttackResult`."""

from .base import AttackResult
from .blackbox import spsa
from .boundary import bpgd
from .divergence import kl_attack, kl_divergence
from .external import autoattack
from .gradient import pgd
from .minimal import ddn

__all__ = [
    "AttackResult",
    "autoattack",
    "bpgd",
    "ddn",
    "kl_attack",
    "kl_divergence",
    "pgd",
    "spsa",
]
