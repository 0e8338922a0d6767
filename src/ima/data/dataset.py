"""An in-memory dataset yielding ``(x, y, index)``, the contract every method relies on."""

from __future__ import annotations

import operator

import torch
from torch.utils.data import Dataset

from ima.tasks import Task, get_task
from ima.validation import check_bounds, check_int

#: The split names every dataset takes.
SPLITS = ("train", "val", "test")

__all__ = ["ArrayDataset", "check_class_names"]


def check_class_names(names, num_classes: int | None = None, *, key: str = "class_names"):
    """``names`` as a tuple of distinct non-empty strings, one per class in label order
    (``None`` stays None); ``num_classes``, when known, must be their number.

    ``key`` names the setting in errors (``"data.class_names"``)."""
    if names is None:
        return None
    if isinstance(names, str) or not isinstance(names, list | tuple):
        raise TypeError(f"{key} must be a list of class names in label order, got {names!r}")
    if not all(isinstance(n, str) and n.strip() for n in names):
        raise TypeError(
            f"{key} must hold non-empty strings (quote numbers: ['0', '1']), got {list(names)!r}"
        )
    if len(set(names)) != len(names):
        repeated = sorted({n for n in names if list(names).count(n) > 1})
        raise ValueError(f"{key} must not repeat a name, got {repeated} more than once")
    if num_classes is not None and len(names) != num_classes:
        raise ValueError(
            f"{key} names {len(names)} class(es) {list(names)} but the data has {num_classes}"
        )
    return tuple(names)


class ArrayDataset(Dataset):
    """Tensors held in memory; item ``i`` is ``(x[i], y[i], i)``.

    ``x``: (N, *input_shape), stored as float32, finite, inside ``bounds`` when given.
    ``y``: (N,) integer labels in ``[0, num_classes)`` (or (N, ...) label maps), stored
    as int64. ``i`` is the sample's index within this split, the key under which
    per-sample state such as IMA margins (Algorithm 2) is kept.
    ``bounds``: ``None`` for unbounded data (2-D Moons) or ``(low, high)`` for the valid
    input range (``(0.0, 1.0)`` for images); attacks keep inputs inside it.
    ``task``: what "correct" and "loss" mean for this data (an ``ima.tasks.Task``, e.g. a
    ``SegmentationTask`` for label maps); ``None`` is classification. Training and
    evaluation read it from the dataset, as they read ``bounds``.
    ``class_names``: the name of each class in label order (``class_names[k]`` is label
    ``k``), or ``None`` when the data does not name its classes; results, tables and
    exports show them (:func:`ima.assemble.data_class_names` reads them).
    """

    def __init__(
        self,
        x,
        y,
        *,
        num_classes: int,
        name: str,
        split: str,
        bounds: tuple[float, float] | None = None,
        task: Task | None = None,
        class_names=None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty string, got {name!r}")
        if not isinstance(split, str) or not split:
            raise ValueError(f"split must be a non-empty string, got {split!r}")
        where = f"dataset {name!r} ({split})"
        num_classes = check_int("num_classes", num_classes, low=2)
        bounds = check_bounds(bounds)
        class_names = check_class_names(class_names, num_classes,
                                        key=f"{where}: class_names")

        x = torch.as_tensor(x)
        y = torch.as_tensor(y)
        if x.dtype == torch.bool or y.dtype == torch.bool:
            raise TypeError(f"{where}: x and y must not be boolean tensors")
        if x.ndim < 2:
            raise ValueError(
                f"{where}: x must have shape (N, *input_shape) with at least 2 dims, "
                f"got shape {tuple(x.shape)}"
            )
        if y.ndim < 1:
            raise ValueError(f"{where}: y must have shape (N,) or (N, ...), got a scalar")
        if x.shape[0] != y.shape[0]:
            raise ValueError(
                f"{where}: x and y must have the same length, got {x.shape[0]} and {y.shape[0]}"
            )
        if y.is_floating_point() or y.is_complex():
            raise TypeError(f"{where}: y must hold integer labels, got dtype {y.dtype}")

        # float64 values beyond float32's range become inf here and are caught below.
        x = x.detach().to(device="cpu", dtype=torch.float32).contiguous()
        y = y.detach().to(device="cpu", dtype=torch.int64).contiguous()

        n_bad = int((~torch.isfinite(x)).sum())
        if n_bad:
            raise ValueError(f"{where}: x contains {n_bad} NaN or infinite value(s)")
        if y.numel():
            y_min, y_max = int(y.min()), int(y.max())
            if y_min < 0 or y_max >= num_classes:
                n_out = int(((y < 0) | (y >= num_classes)).sum())
                raise ValueError(
                    f"{where}: labels y must be in [0, {num_classes}), got {n_out} label(s) "
                    f"outside (min {y_min}, max {y_max})"
                )
        if bounds is not None and x.numel():
            low, high = bounds
            n_out = int(((x < low) | (x > high)).sum())
            if n_out:
                raise ValueError(
                    f"{where}: x must lie inside bounds [{low}, {high}], got {n_out} value(s) "
                    f"outside (min {float(x.min())}, max {float(x.max())})"
                )

        self.x = x
        self.y = y
        self.num_classes = num_classes
        self.name = name
        self.split = split
        self.bounds = bounds
        self.task = None if task is None else get_task(task)
        self.class_names = class_names

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input, ``x.shape[1:]``."""
        return tuple(self.x.shape[1:])

    def __len__(self) -> int:
        return int(self.x.shape[0])

    #: Largest dataset (bytes of x and y) that :meth:`resident` keeps on an accelerator.
    RESIDENT_LIMIT = 4 * 2**30

    def resident(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)`` on ``device``, copied there once and kept (a GPU then slices its
        batches without a host-to-device copy per batch); on the CPU, or when the data
        exceed :attr:`RESIDENT_LIMIT`, the CPU tensors themselves."""
        device = torch.device(device)
        size = self.x.nbytes + self.y.nbytes
        if device.type == "cpu" or size > self.RESIDENT_LIMIT:
            return self.x, self.y
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())  # "cuda" = "cuda:0"
        cached = getattr(self, "_resident", None)
        if cached is None or cached[0].device != device:
            cached = (self.x.to(device), self.y.to(device))
            self._resident = cached
        return cached

    def __getitem__(self, i) -> tuple[torch.Tensor, torch.Tensor, int]:
        n = len(self)
        index = operator.index(i)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"index {i} is out of range for {self!r}")
        return self.x[index], self.y[index], index

    def __repr__(self) -> str:
        return (
            f"ArrayDataset(name={self.name!r}, split={self.split!r}, n={len(self)}, "
            f"input_shape={self.input_shape}, num_classes={self.num_classes}, "
            f"bounds={self.bounds})"
        )
