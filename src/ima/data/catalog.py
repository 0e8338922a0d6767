"""The dataset registry and ``build_dataset``, the one way configs and the CLI get data."""

from __future__ import annotations

import inspect
import logging
import operator
from typing import Any

import torch
from torch.utils.data import Dataset

from ima.data.cifar import cifar10
from ima.data.dataset import SPLITS, ArrayDataset, check_class_names
from ima.data.decathlon import (
    decathlon,
    decathlon_heart,
    decathlon_hippocampus,
    decathlon_prostate,
)
from ima.data.digits import digits
from ima.data.fashion import fashion_mnist
from ima.data.folders import covid_ct, image_folder
from ima.data.house_numbers import svhn
from ima.data.moons import moons
from ima.data.npz_files import medmnist, npz, pathmnist
from ima.data.shapes import shapes
from ima.registry import Registry
from ima.validation import check_choice

__all__ = ["DATASETS", "SPLITS", "build_dataset"]

logger = logging.getLogger(__name__)


DATASETS = Registry("dataset")
DATASETS.register("moons")(moons)
DATASETS.register("digits")(digits)
DATASETS.register("fashion_mnist")(fashion_mnist)
DATASETS.register("svhn")(svhn)
DATASETS.register("cifar10")(cifar10)
DATASETS.register("covid_ct")(covid_ct)
DATASETS.register("medmnist")(medmnist)
DATASETS.register("pathmnist")(pathmnist)
DATASETS.register("image_folder")(image_folder)
DATASETS.register("npz")(npz)
DATASETS.register("shapes")(shapes)
DATASETS.register("decathlon")(decathlon)
DATASETS.register("decathlon_heart")(decathlon_heart)
DATASETS.register("decathlon_hippocampus")(decathlon_hippocampus)
DATASETS.register("decathlon_prostate")(decathlon_prostate)


def build_dataset(name: str, split: str, *, class_names=None, **kwargs: Any) -> Dataset:
    """Build split ``split`` of dataset ``name``; its items are ``(x, y, index)``.

    ``name`` is a registered name (``DATASETS.names()``) or a user factory
    ``"package.module:function"``, called as ``function(split=split, **kwargs)``; it must
    return a ``torch.utils.data.Dataset`` whose item ``i`` is ``(x, y, i)`` (the index,
    an int in ``[0, len)``, keys per-sample state such as IMA margins). Images are
    expected in [0, 1].

    ``class_names`` (``data.class_names``): the classes' names in label order. A factory
    that takes ``class_names`` itself gets them (``image_folder`` orders its folders by
    them, ``npz`` checks them against its files); otherwise a dataset that names its
    classes (its ``class_names`` attribute) must name them so, and one that does not
    takes these names.
    """
    check_choice("split", split, SPLITS)
    factory = DATASETS.get(name)
    class_names = check_class_names(class_names, key="data.class_names")
    takes_names = "class_names" in inspect.signature(factory).parameters
    if takes_names and class_names is not None:
        kwargs["class_names"] = list(class_names)
    dataset = factory(split=split, **kwargs)
    if not isinstance(dataset, ArrayDataset):
        if not isinstance(dataset, Dataset):
            raise TypeError(
                f"dataset factory {name!r} must return a torch.utils.data.Dataset, "
                f"got {type(dataset).__name__}"
            )
        _check_first_item(name, dataset)
        logger.debug("built user dataset %r split %r: %r", name, split, dataset)
    return _named(name, dataset, class_names)


def _named(name: str, dataset: Dataset, class_names) -> Dataset:
    """``dataset`` with the config's class names: its own must be the same; a dataset
    without names takes them (an ``ArrayDataset``: one per class)."""
    if class_names is None:
        return dataset
    own = getattr(dataset, "class_names", None)
    if own is not None:
        own = check_class_names(own, key=f"dataset {name!r}: class_names")
        if own != class_names:
            raise ValueError(
                f"data.class_names {list(class_names)} disagree with the names dataset "
                f"{name!r} gives its classes, {list(own)} (in label order)"
            )
        return dataset
    check_class_names(class_names, getattr(dataset, "num_classes", None),
                      key="data.class_names")
    try:
        dataset.class_names = class_names
    except AttributeError as err:
        raise TypeError(f"dataset {name!r} cannot take data.class_names: {err}") from None
    return dataset


def _check_first_item(name: str, dataset: Dataset) -> None:
    """Check that a user dataset's first item looks like ``(x, y, 0)``."""
    try:
        n = len(dataset)
    except TypeError as err:
        raise TypeError(f"dataset {name!r} must define __len__ (a map-style Dataset)") from err
    if n == 0:
        return
    item = dataset[0]
    if not isinstance(item, tuple | list) or len(item) != 3:
        got = f"a {len(item)}-tuple" if isinstance(item, tuple | list) else type(item).__name__
        raise TypeError(f"dataset {name!r} must yield (x, y, index) triples, got {got}")
    index = item[2]
    if isinstance(index, torch.Tensor):
        if index.numel() != 1 or index.is_floating_point() or index.dtype == torch.bool:
            raise TypeError(f"dataset {name!r} must yield an integer index, got {index!r}")
        index = int(index)
    try:
        index = operator.index(index)
    except TypeError as err:
        raise TypeError(
            f"dataset {name!r} must yield an integer index, got {type(index).__name__}"
        ) from err
    if not 0 <= index < n:
        raise ValueError(
            f"dataset {name!r} yielded index {index} for item 0; indices must be in [0, {n})"
        )
