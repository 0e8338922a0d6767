"""Small statistics of accuracies: Wilson confidence intervals and binomial sampling noise.

An accuracy measured on ``n`` samples is a binomial proportion; these say how far it may
move by chance, for the result files (``accuracy_ci``) and the sanity checks.
"""

from __future__ import annotations

import math

from .validation import check_int, check_real

__all__ = ["Z95", "binomial_std", "successes", "wilson_interval"]

#: two-sided 95 % standard-normal quantile
Z95 = 1.959963984540054


def wilson_interval(k: int, n: int, *, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval ``(lo, hi)`` for ``k`` successes out of ``n`` (95 % by default).

    ``centre = (p + z^2 / 2n) / (1 + z^2 / n)``,
    ``half = z / (1 + z^2 / n) * sqrt(p (1 - p) / n + z^2 / 4n^2)``, with ``p = k / n``
    (Wilson 1927). Unlike the normal (Wald) interval it stays inside [0, 1] and is not
    empty at ``p = 0`` or ``1``. ``n = 0`` gives the uninformative ``(0, 1)``.
    """
    n = check_int("n", n, low=0)
    k = check_int("k", k, low=0, high=n)
    z = check_real("z", z, low=0.0)
    if n == 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # exactly 0 and 1 at k = 0 and k = n (rounding would leave 1e-16 gaps)
    lo = 0.0 if k == 0 else max(0.0, centre - half)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return lo, hi


def successes(fraction: float, n: int) -> int:
    """The count behind a fraction of ``n`` (the nearest integer to ``fraction * n``)."""
    return int(round(float(fraction) * n))


def binomial_std(p: float, n: int) -> float:
    """Standard deviation of a proportion measured on ``n`` samples, ``sqrt(p (1 - p) / n)``,
    with ``p`` kept in ``[1 / n, 1 - 1 / n]`` so that it is never zero (a proportion seen at
    0 or 1 on ``n`` samples may still be about ``1 / n`` off)."""
    n = check_int("n", n, low=1)
    p = min(max(float(p), 1.0 / n), 1.0 - 1.0 / n) if n > 1 else 0.5
    return math.sqrt(p * (1 - p) / n)
