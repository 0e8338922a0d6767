"""Medical Segmentation Decathlon tasks (Simpson et al. 2019), sliced to 2-D images.

Section 4 of the paper segments Heart (Task02, D2), Hippocampus (Task04, D4) and
Prostate (Task05, D5) slice by slice. A task folder as distributed holds
``dataset.json``, ``imagesTr/*.nii.gz`` and ``labelsTr/*.nii.gz``; only the labelled
training cases are used (the challenge's test cases have no labels), split by case into
train, val and test.

Reading NIfTI needs the optional dependency ``nibabel`` (``pip install 'ima[medical]'``).

Preprocessing, per case (nnU-Net's own pipeline, which resamples and z-scores, is not
reproduced: attacks need inputs in [0, 1] and noise levels in the units of those inputs):

1. the modality ``modality`` of a multi-modal image (Prostate: 0 = T2, 1 = ADC);
2. intensities clipped to the case's ``low_percentile``-``high_percentile`` percentiles
   (0.5 and 99.5) and scaled linearly to [0, 1] (a constant volume becomes 0);
3. slices along voxel axis ``axis`` (2, the third axis of the NIfTI array, the one the
   paper counts as slices: nnU-Net lists shapes as (slices, rows, columns) = 115x320x232
   for Heart, 36x50x35 for Hippocampus, 20x320x319 for Prostate, and its first axis is the
   third of the NIfTI file); a slice ``volume[:, :, k]`` is stored transposed, rows along
   the second voxel axis and columns along the first;
4. every slice brought to ``size`` (height, width): ``fit="pad"`` pads with zeros (image
   and background label) or crops, centred; ``fit="resize"`` resamples the image
   bilinearly and the labels by nearest neighbour;
5. optionally only slices with foreground (``foreground_only``); by default every slice
   is a sample, as in the paper.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ima.data.dataset import SPLITS, ArrayDataset
from ima.data.files import as_path, require_root
from ima.tasks import SegmentationTask
from ima.validation import check_choice, check_int, check_real

__all__ = [
    "decathlon",
    "decathlon_heart",
    "decathlon_hippocampus",
    "decathlon_prostate",
    "read_nifti",
    "split_cases",
]

logger = logging.getLogger(__name__)

OBTAIN = "http://medicaldecathlon.com (Task02_Heart.tar, Task04_Hippocampus.tar, ...)"
_CASE_STREAM = 5


def _nibabel():
    try:
        import nibabel
    except ImportError as err:
        raise ImportError(
            "reading NIfTI (.nii/.nii.gz) files needs the optional dependency nibabel: "
            "pip install 'ima[medical]' (or pip install 'nibabel>=4')"
        ) from err
    return nibabel


def read_nifti(path) -> np.ndarray:
    """The voxel array of a NIfTI file as float32 (scaling slope and intercept applied)."""
    nib = _nibabel()
    path = as_path("path", path)
    if not path.is_file():
        raise FileNotFoundError(f"NIfTI file {str(path)!r} does not exist")
    try:
        return np.asarray(nib.load(str(path)).get_fdata(dtype=np.float32))
    except Exception as err:  # nibabel raises several types for damaged files
        raise ValueError(f"{str(path)!r} is not a readable NIfTI file: {err}") from err


def split_cases(n: int, *, n_val: int, n_test: int, seed: int) -> dict[str, np.ndarray]:
    """Case indices (sorted) of each split: a random ``n_test`` cases for test, ``n_val``
    for val, the rest for train, fixed by ``seed``. No case is in two splits."""
    if n_val + n_test >= n:
        raise ValueError(
            f"n_val ({n_val}) + n_test ({n_test}) must leave at least one of the {n} cases "
            "for training"
        )
    order = np.random.default_rng(np.random.SeedSequence([seed, _CASE_STREAM])).permutation(n)
    return {
        "test": np.sort(order[:n_test]),
        "val": np.sort(order[n_test : n_test + n_val]),
        "train": np.sort(order[n_test + n_val :]),
    }


def _read_index(root: Path, dataset: str) -> dict:
    path = root / "dataset.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"dataset {dataset!r}: {str(path)!r} not found; root must be a Decathlon task "
            f"folder holding dataset.json, imagesTr/ and labelsTr/. Obtain it from {OBTAIN}."
        )
    try:
        index = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"dataset {dataset!r}: {str(path)!r} is not valid JSON: {err}") from err
    for key in ("labels", "training"):
        if key not in index:
            raise ValueError(f"dataset {dataset!r}: {str(path)!r} has no {key!r} entry")
    entries = index["training"]
    if not isinstance(entries, list) or not entries or not all(
        isinstance(e, dict) and "image" in e and "label" in e for e in entries
    ):
        raise ValueError(
            f"dataset {dataset!r}: 'training' in {str(path)!r} must be a non-empty list of "
            '{"image": ..., "label": ...} entries'
        )
    return index


def _label_names(labels, num_classes: int) -> tuple[str, ...] | None:
    """dataset.json's label names by label ("0": "background", "1": "left atrium"), or
    None when its keys are not the labels 0..K-1 or its names are not distinct."""
    if not isinstance(labels, dict):
        return None
    names = [labels.get(str(k)) for k in range(num_classes)]
    if not all(isinstance(n, str) and n.strip() for n in names) or len(set(names)) != len(names):
        return None
    return tuple(names)


def _modality_index(index: dict, modality, dataset: str) -> int:
    names = {int(k): str(v) for k, v in index.get("modality", {"0": "?"}).items()}
    if isinstance(modality, str):
        for k, v in names.items():
            if v.lower() == modality.lower():
                return k
        raise ValueError(
            f"dataset {dataset!r}: modality {modality!r} is not in dataset.json's modalities "
            f"{names}"
        )
    return check_int("modality", modality, low=0, high=max(len(names) - 1, 0))


def _normalise(volume: np.ndarray, low: float, high: float) -> np.ndarray:
    lo, hi = np.percentile(volume, [low, high])
    if hi <= lo:
        return np.zeros_like(volume, dtype=np.float32)
    return ((np.clip(volume, lo, hi) - lo) / (hi - lo)).astype(np.float32)


def _fit(image: np.ndarray, label: np.ndarray, size, fit: str):
    """Slices (Z, h, w) brought to ``size`` = (H, W); see the module docstring."""
    height, width = size
    if fit == "resize":
        x = torch.from_numpy(image)[:, None]
        x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)
        y = torch.from_numpy(label)[:, None].float()
        y = F.interpolate(y, size=(height, width), mode="nearest")
        return x[:, 0].clamp(0.0, 1.0).numpy(), y[:, 0].numpy().astype(label.dtype)
    out_x = np.zeros((image.shape[0], height, width), dtype=np.float32)
    out_y = np.zeros((label.shape[0], height, width), dtype=label.dtype)
    h, w = image.shape[1:]
    # centred: source and target offsets (one of each pair is 0)
    sr, tr = max((h - height) // 2, 0), max((height - h) // 2, 0)
    sc, tc = max((w - width) // 2, 0), max((width - w) // 2, 0)
    rows, cols = min(h, height), min(w, width)
    out_x[:, tr : tr + rows, tc : tc + cols] = image[:, sr : sr + rows, sc : sc + cols]
    out_y[:, tr : tr + rows, tc : tc + cols] = label[:, sr : sr + rows, sc : sc + cols]
    return out_x, out_y


def _read_case(root: Path, entry: dict, *, modality: int, axis: int, num_classes: int,
               percentiles, dataset: str):
    image_path = root / entry["image"]
    label_path = root / entry["label"]
    image = read_nifti(image_path)
    label = read_nifti(label_path)
    if image.ndim == 4:
        if modality >= image.shape[3]:
            raise ValueError(
                f"dataset {dataset!r}: {str(image_path)!r} has {image.shape[3]} modalities, "
                f"modality {modality} asked for"
            )
        image = image[..., modality]
    elif image.ndim != 3:
        raise ValueError(
            f"dataset {dataset!r}: {str(image_path)!r} has shape {image.shape}; expected a 3-D "
            "volume, or 4-D with the modalities last"
        )
    elif modality != 0:
        raise ValueError(
            f"dataset {dataset!r}: {str(image_path)!r} holds one modality, modality "
            f"{modality} asked for"
        )
    if label.shape != image.shape:
        raise ValueError(
            f"dataset {dataset!r}: image {str(image_path)!r} has spatial shape {image.shape} "
            f"but its label {str(label_path)!r} has shape {label.shape}; they must match "
            "voxel for voxel"
        )
    rounded = np.rint(label)
    if not np.array_equal(rounded, label) or rounded.min() < 0 or rounded.max() >= num_classes:
        raise ValueError(
            f"dataset {dataset!r}: label {str(label_path)!r} must hold integers in "
            f"[0, {num_classes - 1}] (the labels of dataset.json), got values in "
            f"[{label.min()}, {label.max()}]"
        )
    image = _normalise(image, *percentiles)
    # (slices, a, b) with a, b the other voxel axes in order, then rows = b, columns = a
    image = np.moveaxis(image, axis, 0).swapaxes(1, 2)
    label = np.moveaxis(rounded.astype(np.uint8), axis, 0).swapaxes(1, 2)
    return np.ascontiguousarray(image), np.ascontiguousarray(label)


def decathlon(
    split: str,
    *,
    root=None,
    size=None,
    fit: str = "pad",
    modality=0,
    axis: int = 2,
    n_val: int | None = None,
    n_test: int | None = None,
    foreground_only: bool = False,
    low_percentile: float = 0.5,
    high_percentile: float = 99.5,
    threshold: float = 0.6,
    empty_dice: str = "skip",
    dice_inclusive: bool = False,
    seed: int = 0,
    name: str = "decathlon",
) -> ArrayDataset:
    """A Medical Segmentation Decathlon task folder as 2-D slices (see the module docstring).

    root: the task folder (holding ``dataset.json``). size: ``[height, width]`` (or an int)
    every slice is brought to; None keeps the slices' own size, which must then be the
    same in every case. modality: index, or name from dataset.json (e.g. ``"T2"``).
    n_val, n_test: cases in val and test (default ``round(0.05 n)`` and
    ``round(0.15 n)`` of the ``n`` labelled cases, at least 1 each); the rest train.
    Items are ``(x (1, H, W) in [0, 1], y (H, W) int64, index)``; the dataset's task is a
    :class:`~ima.tasks.SegmentationTask` with Dice ``threshold``, ``empty_dice`` (how a
    slice with no foreground in truth and prediction is scored: ``"skip"``, ``"zero"`` or
    ``"one"``) and ``dice_inclusive`` (correct means Dice >= threshold instead of >),
    its ``num_classes`` the number of labels in dataset.json (their names its
    ``class_names``), and ``slices`` lists
    ``(case, slice)`` per sample.
    """
    check_choice("split", split, SPLITS)
    # the task first: a bad Dice option fails before any file is read
    task = SegmentationTask(
        threshold=threshold, empty_dice=empty_dice, dice_inclusive=dice_inclusive
    )
    root = require_root(
        root, dataset=name, expects="a Decathlon task folder (dataset.json, imagesTr/, "
        "labelsTr/)", obtain=OBTAIN,
    )
    check_choice("fit", fit, ("pad", "resize"))
    axis = check_int("axis", axis, low=0, high=2)
    low = check_real("low_percentile", low_percentile, low=0.0, high=100.0)
    high = check_real("high_percentile", high_percentile, low=low, high=100.0)
    seed = check_int("seed", seed, low=0)
    if size is not None:
        size = [size, size] if not isinstance(size, list | tuple) else list(size)
        if len(size) != 2:
            raise ValueError(f"size must be an int or [height, width], got {size!r}")
        size = [check_int("size", s, low=1) for s in size]
    index = _read_index(root, name)
    num_classes = len(index["labels"])
    if num_classes < 2:
        raise ValueError(f"dataset {name!r}: dataset.json lists {num_classes} label(s); need 2+")
    modality = _modality_index(index, modality, name)
    entries = sorted(index["training"], key=lambda e: str(e["image"]))
    n = len(entries)
    n_test = max(1, round(0.15 * n)) if n_test is None else check_int("n_test", n_test, low=0)
    n_val = max(1, round(0.05 * n)) if n_val is None else check_int("n_val", n_val, low=0)
    chosen = split_cases(n, n_val=n_val, n_test=n_test, seed=seed)[split]
    if chosen.size == 0:
        raise ValueError(f"dataset {name!r}: split {split!r} holds no case (n_{split} = 0)")

    images, labels, slices = [], [], []
    for i in chosen:
        entry = entries[i]
        image, label = _read_case(
            root, entry, modality=modality, axis=axis, num_classes=num_classes,
            percentiles=(low, high), dataset=name,
        )
        if size is not None:
            image, label = _fit(image, label, size, fit)
        elif images and image.shape[1:] != images[0].shape[1:]:
            raise ValueError(
                f"dataset {name!r}: slices of {entry['image']!r} are "
                f"{image.shape[1]}x{image.shape[2]} but earlier ones "
                f"{images[0].shape[1]}x{images[0].shape[2]}; set size to bring every slice "
                "to one size"
            )
        keep = np.arange(image.shape[0])
        if foreground_only:
            keep = np.flatnonzero(label.reshape(label.shape[0], -1).any(axis=1))
        case = Path(str(entry["image"])).name.split(".nii")[0]
        images.append(image[keep])
        labels.append(label[keep])
        slices.extend((case, int(k)) for k in keep)
    x = np.concatenate(images)[:, None]
    y = np.concatenate(labels).astype(np.int64)
    if x.shape[0] == 0:
        raise ValueError(f"dataset {name!r}: split {split!r} holds no slice")
    logger.debug("read %d cases (%d slices) of %r %s", len(chosen), x.shape[0], name, split)
    dataset = ArrayDataset(
        x, y, num_classes=num_classes, name=name, split=split, bounds=(0.0, 1.0),
        task=task, class_names=_label_names(index["labels"], num_classes),
    )
    dataset.slices = slices
    return dataset


def _task_factory(name: str, *, size, n_val: int, n_test: int, paper: str):
    def factory(
        split: str,
        *,
        root=None,
        size=size,
        fit: str = "pad",
        modality=0,
        axis: int = 2,
        n_val: int = n_val,
        n_test: int = n_test,
        foreground_only: bool = False,
        low_percentile: float = 0.5,
        high_percentile: float = 99.5,
        threshold: float = 0.6,
        empty_dice: str = "skip",
        dice_inclusive: bool = False,
        seed: int = 0,
    ) -> ArrayDataset:
        return decathlon(
            split, root=root, size=size, fit=fit, modality=modality, axis=axis, n_val=n_val,
            n_test=n_test, foreground_only=foreground_only, low_percentile=low_percentile,
            high_percentile=high_percentile, threshold=threshold, empty_dice=empty_dice,
            dice_inclusive=dice_inclusive, seed=seed, name=name,
        )

    factory.__name__ = name
    factory.__qualname__ = name
    factory.__doc__ = (
        f"{paper}, as :func:`decathlon` with the paper's case split ({n_val} val, {n_test} "
        f"test, the rest train) and slices brought to {size[0]}x{size[1]}."
    )
    return factory


decathlon_heart = _task_factory(
    "decathlon_heart", size=[320, 320], n_val=1, n_test=3,
    paper="Task02_Heart (D2, left atrium, MRI; 20 labelled cases: 16 train, 1 val, 3 test)",
)
decathlon_hippocampus = _task_factory(
    "decathlon_hippocampus", size=[64, 64], n_val=17, n_test=35,
    paper="Task04_Hippocampus (D4, anterior and posterior hippocampus, MRI; 260 labelled "
    "cases: 208 train, 17 val, 35 test)",
)
decathlon_prostate = _task_factory(
    "decathlon_prostate", size=[320, 320], n_val=2, n_test=5,
    paper="Task05_Prostate (D5, peripheral and transition zones, MRI T2 (modality 0) and "
    "ADC; 32 labelled cases: 25 train, 2 val, 5 test)",
)
