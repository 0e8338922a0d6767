"""Datasets yielding ``(x, y, index)``; images in [0, 1].

The factories live in their own modules (``ima.data.moons``, ``ima.data.digits``,
``ima.data.fashion``, ``ima.data.house_numbers``, ``ima.data.cifar``,
``ima.data.folders``, ``ima.data.npz_files``, ``ima.data.shapes``,
``ima.data.decathlon``); they are reached by name through
``build_dataset`` (``DATASETS.names()``) and not re-exported here, so no module is
shadowed by a function of the same name. File-based datasets read the files the user
has and never download anything; see docs/datasets.md.
"""

from ima.data.catalog import DATASETS, SPLITS, build_dataset
from ima.data.dataset import ArrayDataset

__all__ = ["DATASETS", "SPLITS", "ArrayDataset", "build_dataset"]
