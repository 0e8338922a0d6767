"""The working set of an iterative attack: the samples still attacked, as per-row state.

Every iterative attack (PGD's core :func:`~ima.attacks.gradient.ascend`, which BPGD and
TRADES' KL attack share, SPSA and DDN) keeps the state of the samples it still attacks
in one :class:`WorkingSet` and drops a sample once its answer is fixed, so no compute is
spent on it. When to drop is the :class:`Compaction` policy: PGD's core checks per device
type (on the CPU every iteration, at once; on a GPU every 4 iterations once a quarter has
left, padded to 16 rows, since each check is a host synchronisation). SPSA drops a
sample at once (one of its iterations costs thousands of queries per sample, beside
which a check is free), DDN the samples misclassified at the start, once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["BUCKET", "CHECK_EVERY", "COMPACT_FRACTION", "Compaction", "WorkingSet"]

#: How often (in iterations) the working set is checked for samples that left it, and
#: the fraction of it that must have left before it is compacted, per device type. On the
#: CPU compute dominates, so every finished sample is dropped at once. On a GPU each check
#: is a host synchronisation and each compaction a dozen small kernels, which cost more
#: than the rows they save until a good part of the set has left.
CHECK_EVERY = {"cpu": 1}
COMPACT_FRACTION = {"cpu": 0.0}
GPU_CHECK_EVERY, GPU_COMPACT_FRACTION = 4, 0.25
#: On a GPU the compacted set keeps a multiple of this many rows (padded with finished
#: samples, whose results are already fixed), so a batch meets few distinct shapes and
#: the convolution libraries' per-shape set-up is paid for a handful of sizes only.
BUCKET = {"cpu": 1}
GPU_BUCKET = 16


@dataclass(frozen=True)
class Compaction:
    """When a working set on a device is checked and compacted."""

    check_every: int
    fraction: float
    bucket: int

    @classmethod
    def for_device(cls, kind: str, *, check_every: int | None = None,
                   fraction: float | None = None) -> Compaction:
        """The policy of a device type (``"cpu"``, ``"cuda"``, ...), or the one given."""
        return cls(
            CHECK_EVERY.get(kind, GPU_CHECK_EVERY) if check_every is None else check_every,
            COMPACT_FRACTION.get(kind, GPU_COMPACT_FRACTION) if fraction is None else fraction,
            BUCKET.get(kind, GPU_BUCKET),
        )

    def due(self, iteration: int) -> bool:
        """Whether the set is checked after this (0-based) iteration."""
        return (iteration + 1) % self.check_every == 0

    def worth(self, left: int, carried: int, size: int) -> bool:
        """Whether enough samples left (beyond ``carried`` padding rows) to compact."""
        return left > carried and left - carried >= self.fraction * size

    def padding(self, rows: int, spare: int) -> int:
        """Finished rows to keep so that ``rows`` live ones fill a bucket (at most
        ``spare``)."""
        return min(-(-rows // self.bucket) * self.bucket - rows, spare)


class WorkingSet(dict):
    """Per-row state of the samples an attack still works on (name -> tensor whose first
    dimension is the row), compacted and refilled in one place."""

    def keep(self, mask: torch.Tensor) -> WorkingSet:
        """The rows ``mask`` (bool or indices) only, in order."""
        return WorkingSet({k: v[mask] for k, v in self.items()})

    def extend(self, other: dict) -> WorkingSet:
        """These rows followed by ``other``'s (samples that enter)."""
        return WorkingSet({k: torch.cat([v, other[k]]) for k, v in self.items()})

    @property
    def size(self) -> int:
        return next(iter(self.values())).shape[0]
