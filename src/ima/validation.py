"""Input validation shared by the whole package.

Every check raises ``ValueError`` or ``TypeError`` naming the parameter, the allowed
range and the value received. Never ``assert`` for input checks.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import torch

__all__ = [
    "check_bounds",
    "check_choice",
    "check_finite_tensor",
    "check_int",
    "check_real",
]


def check_real(
    name: str,
    value,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Return ``value`` as a float after checking it is a finite real in the given range."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    if math.isnan(value) or math.isinf(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if low is not None and (value < low or (low_open and value == low)):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value}")
    if high is not None and (value > high or (high_open and value == high)):
        raise ValueError(f"{name} must be {'<' if high_open else '<='} {high}, got {value}")
    return value


def check_int(name: str, value, *, low: int | None = None, high: int | None = None) -> int:
    """Return ``value`` as an int after checking it is an integer in ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    value = int(value)
    if low is not None and value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}, got {value}")
    return value


def check_choice(name: str, value, choices) -> str:
    """Return ``value`` after checking it is one of ``choices``."""
    if value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    return value


def check_finite_tensor(name: str, x: torch.Tensor) -> torch.Tensor:
    """Check that ``x`` is a floating tensor without NaN or infinity."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name} contains {bad} NaN or infinite value(s)")
    return x


def check_bounds(bounds) -> tuple[float, float] | None:
    """Validate ``bounds``: None (unbounded) or a pair ``(low, high)`` with ``low < high``."""
    if bounds is None:
        return None
    if not isinstance(bounds, tuple | list):
        raise TypeError(f"bounds must be None or a pair (low, high), got {bounds!r}")
    if len(bounds) != 2:
        raise ValueError(f"bounds must be None or a pair (low, high), got {bounds!r}")
    low, high = bounds
    low = check_real("bounds[0]", low)
    high = check_real("bounds[1]", high)
    if not low < high:
        raise ValueError(f"bounds must satisfy low < high, got ({low}, {high})")
    return (low, high)
