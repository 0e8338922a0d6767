"""How far apart a dataset's classes lie, in the units of its inputs: noise levels and
``eps_max`` chosen before any training.

For each sample, its distance to the nearest sample of another class, in L2 and Linf. Two
samples ``x`` and ``x'`` of different classes that a classifier gets right are separated
by its decision boundary, and their robust radii add up to at most ``||x - x'||``: at a
noise level above half that distance at least one of them can be flipped. So the
distribution of half these distances says which levels still leave room for robustness:
the fraction of samples whose half-distance exceeds ``eps`` bounds (on the measured
samples, pairwise) what any classifier can reach, and levels far beyond the bulk of it
test nothing but failure. IMA's ``eps_max`` is the largest margin it tries to reach, so
the median half-distance is a natural upper end.

Every L2 value is also given per value (pixel): its RMS ``eps / sqrt(d)``, ``d`` the
number of input values per sample, which is what a clinician can relate to an image's
grey levels (for data in ``[0, 1]``, an RMS of 0.01 is 2.55 of 255 grey levels).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..lp import NORMS
from ..validation import check_int

__all__ = ["DataScale", "QUANTILES", "measure_data", "rms"]

#: the quantiles of the half-distances reported
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
#: the suggested levels, as fractions of the suggested ``eps_max``
LEVEL_FRACTIONS = (0.0, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0)


def rms(eps: float, values: int) -> float:
    """The per-value RMS of a perturbation of L2 norm ``eps`` spread evenly over
    ``values`` input values."""
    return eps / math.sqrt(values)


@dataclass
class DataScale:
    """Half the distance from each measured sample to its nearest sample of another
    class, per norm: quantiles, the suggested ``eps_max`` (the median) and levels."""

    n_samples: int
    values: int
    bounds: tuple[float, float] | None
    half_distance: dict[str, list[float]] = field(default_factory=dict)

    def quantiles(self, norm: str) -> dict[float, float]:
        d = torch.tensor(self.half_distance[norm], dtype=torch.float64)
        return {q: float(torch.quantile(d, q)) for q in QUANTILES}

    def eps_max(self, norm: str) -> float:
        return self.quantiles(norm)[0.5]

    def levels(self, norm: str) -> list[float]:
        top = self.eps_max(norm)
        return [float(f"{f * top:.3g}") for f in LEVEL_FRACTIONS]

    def room(self, norm: str, eps: float) -> float:
        """The fraction of the samples whose half-distance exceeds ``eps``."""
        d = torch.tensor(self.half_distance[norm])
        return float((d > eps).float().mean())

    def summary(self) -> str:
        """Markdown: the quantiles per norm (L2 also as per-value RMS), the suggested
        eps_max and levels with the room each leaves."""
        lines = [f"{self.n_samples} samples, {self.values} input values each"
                 + (f", values in {list(self.bounds)}" if self.bounds else ""),
                 "", "Half the distance to the nearest sample of another class:", "",
                 "| norm | " + " | ".join(f"q{int(100 * q)}" for q in QUANTILES) + " |",
                 "|---|" + "---|" * len(QUANTILES)]
        for norm in self.half_distance:
            cells = [self._value(norm, v) for v in self.quantiles(norm).values()]
            lines.append(f"| {norm} | " + " | ".join(cells) + " |")
        for norm in self.half_distance:
            lines += ["", f"{norm}: suggested eps_max {self._value(norm, self.eps_max(norm))} "
                      "(the median); levels and the fraction of samples whose half-distance "
                      "is above each (room for robustness):", ""]
            lines.append("| eps | " + " | ".join(self._value(norm, e)
                                                 for e in self.levels(norm)) + " |")
            lines.append("|---|" + "---|" * len(LEVEL_FRACTIONS))
            lines.append("| room | " + " | ".join(f"{100 * self.room(norm, e):.0f}%"
                                                  for e in self.levels(norm)) + " |")
        if self.bounds == (0.0, 1.0):
            lines += ["", "RMS: the L2 norm's root mean square per input value; with values "
                      "in [0, 1], RMS 0.01 is 2.55 grey levels of 255."]
        return "\n".join(lines)

    def _value(self, norm: str, eps: float) -> str:
        if norm == "l2":
            return f"{eps:.3g} (RMS {rms(eps, self.values):.2g})"
        return f"{eps:.3g}"


def measure_data(x: torch.Tensor, y: torch.Tensor, *, bounds=None, max_samples: int = 2000,
                 chunk: int = 256, seed: int = 0) -> DataScale:
    """Measure inputs ``x`` (N, ...) with class labels ``y`` (N,): for up to
    ``max_samples`` of them (a seeded random subset when there are more), half the
    distance to the nearest of them of another class, in L2 and Linf."""
    check_int("max_samples", max_samples, low=2)
    if x.shape[0] != y.shape[0] or y.dim() != 1:
        raise ValueError(f"x and y must hold one label per sample, got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}")
    if y.unique().numel() < 2:
        raise ValueError("measuring class distances needs samples of at least two classes")
    if x.shape[0] > max_samples:
        keep = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
        x, y = x[keep[:max_samples]], y[keep[:max_samples]]
    flat = x.flatten(1).double()
    half = {}
    for norm in NORMS:
        p = 2.0 if norm == "l2" else math.inf
        nearest = []
        for rows, labels in zip(flat.split(chunk), y.split(chunk), strict=True):
            d = torch.cdist(rows, flat, p=p)
            d[labels[:, None] == y[None, :]] = math.inf
            nearest.append(d.min(dim=1).values)
        half[norm] = (torch.cat(nearest) / 2).tolist()
    return DataScale(len(y), flat.shape[1], None if bounds is None else tuple(bounds), half)
