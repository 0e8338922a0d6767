"""Attacks: pure functions over ``(model, x, y)`` returning an :class:`AttackResult`."""

from .base import AttackResult
from .boundary import bpgd
from .gradient import pgd

__all__ = ["AttackResult", "bpgd", "pgd"]
