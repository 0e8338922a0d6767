"""Datasets yielding ``(x, y, index)``; images in [0, 1].

The factories live in ``ima.data.moons`` and ``ima.data.digits``; they are reached by name
through ``build_dataset`` and not re-exported here, so those modules are never shadowed
by functions of the same name.
"""

from ima.data.catalog import DATASETS, SPLITS, build_dataset
from ima.data.dataset import ArrayDataset

__all__ = ["DATASETS", "SPLITS", "ArrayDataset", "build_dataset"]
