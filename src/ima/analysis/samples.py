"""Which images a sample figure shows (Fig. 1, 15): the split taken in turns from each
class, so that a file sorted by class does not fill the figure with one class."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from ..evaluation.examples import SampleImages, sample_images

__all__ = ["ClassRoundRobin", "class_round_robin", "samples_by_class"]


def class_round_robin(labels) -> list[int]:
    """Positions of ``labels`` (one class label per sample) taken in turns from each
    class, classes in increasing order, each class's samples in file order:
    ``[0, 0, 1, 1, 2]`` gives ``[0, 2, 4, 1, 3]``."""
    labels = torch.as_tensor(labels).reshape(-1).tolist()
    members: dict[int, list[int]] = {}
    for position, label in enumerate(labels):
        members.setdefault(int(label), []).append(position)
    queues = [members[c] for c in sorted(members)]
    order = []
    for turn in range(max((len(q) for q in queues), default=0)):
        order += [q[turn] for q in queues if turn < len(q)]
    return order


class ClassRoundRobin(Dataset):
    """``dataset`` reordered by :func:`class_round_robin`; items, ``bounds``, ``task``
    and the other attributes are the dataset's own (an item keeps its own index)."""

    def __init__(self, dataset, order: list[int]) -> None:
        self.dataset = dataset
        self.order = list(order)

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, i: int):
        return self.dataset[self.order[i]]

    def __getattr__(self, name: str):
        if name in ("dataset", "order"):  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.dataset, name)


def _class_labels(dataset) -> torch.Tensor | None:
    """One class label per sample, or None (label maps of segmentation)."""
    y = getattr(dataset, "y", None)
    if y is None:  # a Dataset of your own: its labels, item by item
        if len(dataset) == 0 or torch.as_tensor(dataset[0][1]).dim() != 0:
            return None
        y = torch.stack([torch.as_tensor(dataset[i][1]) for i in range(len(dataset))])
    y = torch.as_tensor(y)
    if y.dim() != 1 or y.is_floating_point():
        return None
    return y


def samples_by_class(run, *, eps=None, n: int = 8, steps: int = 100, split: str = "test",
                     norm: str | None = None, seed: int = 0) -> SampleImages:
    """:func:`~ima.evaluation.examples.sample_images` of ``run`` with the ``split`` taken
    in turns from each class (:func:`class_round_robin`): the first correctly classified
    image of each class, then the second, and so on. Segmentation data keeps its order."""
    data = run.dataset(split)
    labels = _class_labels(data)
    if labels is not None:
        run = run.with_dataset(split, ClassRoundRobin(data, class_round_robin(labels)))
    return sample_images(run, eps=eps, n=n, steps=steps, split=split, norm=norm, seed=seed)
