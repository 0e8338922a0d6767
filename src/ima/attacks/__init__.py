"""Attacks: pure functions over ``(model, x, y)`` returning an :class:`AttackResult`."""

from .apgd import apgd, dlr_loss
from .autoattack import AutoAttackResult, autoattack
from .base import AttackResult
from .blackbox import spsa
from .boundary import bpgd
from .divergence import kl_attack, kl_divergence
from .external import art_autoattack
from .fab import fab
from .gradient import pgd
from .minimal import ddn
from .square import square

__all__ = [
    "AttackResult",
    "AutoAttackResult",
    "apgd",
    "art_autoattack",
    "autoattack",
    "bpgd",
    "ddn",
    "dlr_loss",
    "fab",
    "kl_attack",
    "kl_divergence",
    "pgd",
    "spsa",
    "square",
]
