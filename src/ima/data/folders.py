"""Datasets stored as folders of image files, one sub-folder per class.

``image_folder`` is the generic loader (a user's own images); ``covid_ct`` is the
SARS-CoV-2 CT-scan dataset of section 3.4, which is stored this way.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ima.data.dataset import SPLITS, ArrayDataset, check_class_names
from ima.data.files import (
    IMAGE_EXTENSIONS,
    check_size,
    is_grey_file,
    read_image,
    require_root,
)
from ima.data.sampling import split_off, take_train_subset
from ima.validation import check_choice, check_int, check_real

__all__ = ["class_images", "covid_ct", "image_folder", "load_images"]

logger = logging.getLogger(__name__)

#: covid_ct's class names, by label (0 uninfected, 1 infected, as in the paper).
COVID_CLASS_NAMES = ("non-COVID", "COVID")


def class_images(folder: Path) -> list[Path]:
    """Every image file under ``folder``, at any depth, sorted by relative path.

    Images are recognised by their ending (``IMAGE_EXTENSIONS``, any case); hidden
    files and folders (names starting with ".") are skipped.
    """
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and p.suffix.lower() in IMAGE_EXTENSIONS
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def _subfolders(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def load_images(
    paths: Sequence[Path], *, size: tuple[int, int] | None, grey: bool, dataset: str
) -> np.ndarray:
    """The image files ``paths`` as one float32 array (N, C, H, W) in [0, 1].

    With ``size=None`` every image must already have the first one's size.
    """
    channels = 1 if grey else 3
    if not paths:
        height, width = size if size is not None else (1, 1)
        return np.zeros((0, channels, height, width), dtype=np.float32)
    first = read_image(paths[0], size=size, grey=grey)
    out = np.empty((len(paths), *first.shape), dtype=np.float32)
    out[0] = first
    for i, path in enumerate(paths[1:], start=1):
        image = read_image(path, size=size, grey=grey)
        if image.shape != first.shape:
            raise ValueError(
                f"dataset {dataset!r}: image {str(path)!r} is {image.shape[1]}x{image.shape[2]} "
                f"but {str(paths[0])!r} is {first.shape[1]}x{first.shape[2]}; set size to "
                "resize every image to one size"
            )
        out[i] = image
    return out


def _split_per_class(
    by_class: list[list[Path]], sizes: Callable[[int], tuple[int, int]], seed: int
) -> dict[str, list[tuple[Path, int]]]:
    """Split each class's files into test, val and train at random, fixed by ``seed``.

    ``sizes(n)`` gives (n_test, n_val) for a class of ``n`` files; the rest is training.
    Each class draws from its own random stream (keyed by its label), so adding a class
    leaves the other classes' splits unchanged. Within a split, files keep class-major,
    name order.
    """
    out: dict[str, list[tuple[Path, int]]] = {s: [] for s in SPLITS}
    for label, paths in enumerate(by_class):
        n_test, n_val = sizes(len(paths))
        rng = np.random.default_rng(np.random.SeedSequence([seed, 3, label]))
        order = rng.permutation(len(paths))
        parts = {
            "test": np.sort(order[:n_test]),
            "val": np.sort(order[n_test : n_test + n_val]),
            "train": np.sort(order[n_test + n_val :]),
        }
        for s, idx in parts.items():
            out[s].extend((paths[i], label) for i in idx)
    return out


def _finish(
    items: list[tuple[Path, int]],
    *,
    split: str,
    n_train: int | None,
    seed: int,
    size,
    grey: bool,
    class_names: tuple[str, ...],
    name: str,
) -> ArrayDataset:
    labels = np.array([label for _, label in items], dtype=np.int64)
    if split == "train":
        keep = take_train_subset(labels, n_train, seed=seed)
        items = [items[i] for i in keep]
        labels = labels[keep]
    if not items:
        raise ValueError(f"dataset {name!r}: split {split!r} holds no image")
    x = load_images([p for p, _ in items], size=size, grey=grey, dataset=name)
    logger.debug("read %d images for %r %s", len(items), name, split)
    return ArrayDataset(
        x, labels, num_classes=len(class_names), name=name, split=split, bounds=(0.0, 1.0),
        class_names=class_names,
    )


def _check_fraction(name: str, value) -> float:
    return check_real(name, value, low=0.0, high=1.0, high_open=True)


def image_folder(
    split: str,
    *,
    root=None,
    size: int | list[int] | None = None,
    grey: bool | None = None,
    class_names: list[str] | None = None,
    classes: list[str] | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    n_train: int | None = None,
    seed: int = 0,
) -> ArrayDataset:
    """A folder of image files, one sub-folder per class; your own images.

    Returns an ``ArrayDataset`` with x (N, C, H, W) float32 in [0, 1], y (N,) the class
    index, ``bounds=(0.0, 1.0)`` and ``class_names`` the class folders' names in label
    order. Files ending in .png, .jpg, .jpeg, .bmp, .tif or .tiff are read with Pillow
    (8-bit images / 255, 16-bit / 65535), at any depth below the class folder. ``size``
    (an int or [height, width]) resizes every image (bilinear, aspect ratio not kept);
    with ``size=None`` all images must share one size.

    Channels: ``grey=None`` (the default) decides from the files of every class and
    split (so all splits agree): C = 1 when every file is single-channel (Pillow modes
    "1", "L", "LA", "I", "I;16", "F"), else C = 3 (RGB), and a folder that mixes grey
    and colour files is loaded as RGB with a log line saying so. ``grey=True`` loads
    every image as grey (ITU-R 601 luma), ``grey=False`` as RGB; either is honoured
    even when the files say otherwise, with a log line.

    Two layouts, told apart by whether ``root`` has a sub-folder named ``train``:

    - already split: ``root/train/<class>/``, ``root/test/<class>/`` and, optionally,
      ``root/val/<class>/``. Without a ``val`` folder, "val" is a stratified sample of
      ``round(val_fraction * n)`` of the ``n`` training images, fixed by ``seed`` (and
      "train" the rest). ``test_fraction`` is not used.
    - one tree: ``root/<class>/``. Each class is split at random (fixed by ``seed``):
      ``round(test_fraction * n_c)`` of its ``n_c`` images for "test",
      ``round(val_fraction * n_c)`` for "val", the rest for "train".

    Labels: ``class_names`` lists the class folder names in label order (label =
    position); it must name every class folder found, and only those. By default the
    folders' names sorted (across all split folders, so labels agree between splits).
    ``classes`` is the older name of ``class_names`` (kept so earlier configs and run
    folders work; giving both with different values is an error). ``n_train``, when
    given, keeps a stratified subset of that many "train" images, fixed by ``seed``. Only
    the requested split's images are read.
    """
    check_choice("split", split, SPLITS)
    folder = require_root(
        root, dataset="image_folder",
        expects="one sub-folder of images per class (or train/ and test/ folders of those)",
    )
    size = check_size(size)
    if grey is not None and not isinstance(grey, bool):
        raise TypeError(f"grey must be true, false or null (decide from the files), got {grey!r}")
    val_fraction = _check_fraction("val_fraction", val_fraction)
    test_fraction = _check_fraction("test_fraction", test_fraction)
    seed = check_int("seed", seed, low=0)
    if n_train is not None:
        n_train = check_int("n_train", n_train, low=1)

    presplit = (folder / "train").is_dir()
    tops = [folder / s for s in SPLITS if (folder / s).is_dir()] if presplit else [folder]
    found = sorted({c for top in tops for c in _subfolders(top)})
    key, given = _given_names(class_names, classes)
    names = tuple(found) if given is None else _check_against_folders(key, given, found, folder)
    if len(names) < 2:
        raise ValueError(
            f"dataset 'image_folder' needs at least 2 class folders under "
            f"{', '.join(repr(str(t)) for t in tops)}, found {found}"
        )

    def images_of(top: Path) -> list[list[Path]]:
        return [class_images(top / c) if (top / c).is_dir() else [] for c in names]

    grey = _channels(grey, [p for top in tops for paths in images_of(top) for p in paths])
    if presplit:
        if split == "test" or (split == "val" and (folder / "val").is_dir()):
            top = folder / split
            if not top.is_dir():
                raise FileNotFoundError(
                    f"dataset 'image_folder': {str(folder)!r} has a train/ folder but no "
                    f"{split}/ folder"
                )
            items = [(p, c) for c, paths in enumerate(images_of(top)) for p in paths]
        else:
            train = [(p, c) for c, paths in enumerate(images_of(folder / "train")) for p in paths]
            if (folder / "val").is_dir():
                items = train
            else:
                labels = np.array([c for _, c in train], dtype=np.int64)
                train_idx, val_idx = split_off(labels, round(val_fraction * len(train)), seed=seed)
                items = [train[i] for i in (val_idx if split == "val" else train_idx)]
    else:
        by_class = images_of(folder)
        empty = [c for c, paths in zip(names, by_class, strict=True) if not paths]
        if empty:
            raise ValueError(
                f"dataset 'image_folder': class folder(s) {empty} under {str(folder)!r} hold "
                f"no image ({', '.join(IMAGE_EXTENSIONS)})"
            )
        items = _split_per_class(
            by_class,
            lambda n: (round(test_fraction * n), round(val_fraction * n)),
            seed,
        )[split]
    return _finish(
        items, split=split, n_train=n_train, seed=seed, size=size, grey=grey,
        class_names=names, name="image_folder",
    )


def _given_names(class_names, classes) -> tuple[str, tuple[str, ...] | None]:
    """The class names the config gives, and the key it gives them under."""
    class_names = check_class_names(class_names, key="class_names")
    classes = check_class_names(classes, key="classes")
    if class_names is not None and classes is not None and class_names != classes:
        raise ValueError(
            f"dataset 'image_folder': class_names {list(class_names)} and classes "
            f"{list(classes)} differ; give class_names only (classes is its older name)"
        )
    if class_names is not None:
        return "class_names", class_names
    return "classes", classes


def _check_against_folders(key: str, names: tuple[str, ...], found: list[str],
                           folder: Path) -> tuple[str, ...]:
    """``names`` (the config's, in label order) must name exactly the class folders."""
    unknown = sorted(set(found) - set(names))
    missing = [n for n in names if n not in found]
    if unknown or missing:
        problems = ([f"class folder(s) {unknown} under it are not in {key}"] if unknown
                    else []) + ([f"no folder for {missing}"] if missing else [])
        raise ValueError(
            f"dataset 'image_folder': {key}={list(names)} disagree with the class folders "
            f"{found} under {str(folder)!r}: {'; '.join(problems)}"
        )
    return names


def _channels(grey: bool | None, paths: list[Path]) -> bool:
    """Whether to load the images as grey: ``grey`` when given (logged when the files say
    otherwise), else True when every file is single-channel."""
    flags = [is_grey_file(p) for p in paths]
    n_grey = sum(flags)
    n_colour = len(flags) - n_grey
    colour = next((p for p, g in zip(paths, flags, strict=True) if not g), None)
    if grey is True and n_colour:
        logger.warning(
            "image_folder: data.grey is true: %d colour image(s) (e.g. %s) are converted to "
            "grey (1 channel)", n_colour, colour)
    elif grey is False and flags and not n_colour:
        logger.info(
            "image_folder: data.grey is false: the %d images are all grey; each is loaded as "
            "3 equal RGB channels", n_grey)
    elif grey is None and n_grey and n_colour:
        logger.warning(
            "image_folder: %d grey and %d colour image(s) (e.g. %s): all are loaded as RGB "
            "(3 channels); set data.grey: true to load them as grey", n_grey, n_colour, colour)
    elif grey is None:
        logger.info("image_folder: the %d images are %s: loading %s", len(flags),
                    "grey" if not n_colour else "colour",
                    "1 channel" if not n_colour else "3 channels (RGB)")
    return grey if grey is not None else n_colour == 0


_COVID_OBTAIN = (
    "https://www.kaggle.com/datasets/plameneduardo/sarscov2-ctscan-dataset "
    "(Soares et al. 2020; extract it so that root holds COVID/ and non-COVID/)"
)


def _covid_label(folder_name: str) -> int | None:
    key = re.sub(r"[^a-z0-9]", "", folder_name.lower())
    return {"covid": 1, "noncovid": 0}.get(key)


def covid_ct(
    split: str,
    *,
    root=None,
    size: int | list[int] = 224,
    n_test: int = 200,
    n_val: int = 30,
    n_train: int | None = None,
    seed: int = 0,
) -> ArrayDataset:
    """The SARS-CoV-2 CT-scan dataset (Soares et al. 2020) of section 3.4: two classes.

    Returns an ``ArrayDataset`` with x (N, 1, H, W) float32 in [0, 1] (grey, Pillow's
    luma of the RGB scans, resized to ``size``, by default 224x224 as in the paper,
    bilinear, aspect ratio not kept), y (N,) with 0 = uninfected (``non-COVID``) and
    1 = infected (``COVID``), as in the paper (the class names), ``bounds=(0.0, 1.0)``.

    Files: ``root/COVID/`` (1252 scans) and ``root/non-COVID/`` (1230 scans), image files
    at any depth. Folder names are matched ignoring case and punctuation, so
    ``non_covid`` works too; other folders are ignored. Nothing is downloaded.

    Splits, as in the paper: per class, ``n_test`` (200) images for "test", ``n_val``
    (30) for "val" and the rest for "train" (1022 infected and 1000 uninfected), drawn
    at random with a fixed ``seed`` (the paper does not give its draw). ``n_train``,
    when given, keeps a stratified subset of that many "train" images.
    """
    check_choice("split", split, SPLITS)
    folder = require_root(
        root, dataset="covid_ct", expects="the folders COVID/ and non-COVID/",
        obtain=_COVID_OBTAIN,
    )
    size = check_size(size)
    n_test = check_int("n_test", n_test, low=1)
    n_val = check_int("n_val", n_val, low=1)
    seed = check_int("seed", seed, low=0)
    if n_train is not None:
        n_train = check_int("n_train", n_train, low=1)

    found: dict[int, Path] = {}
    for name in _subfolders(folder):
        label = _covid_label(name)
        if label is None:
            logger.debug("covid_ct: ignoring folder %r", name)
            continue
        if label in found:
            raise ValueError(
                f"dataset 'covid_ct': both {found[label].name!r} and {name!r} under "
                f"{str(folder)!r} name the same class"
            )
        found[label] = folder / name
    missing = [n for label, n in ((1, "COVID"), (0, "non-COVID")) if label not in found]
    if missing:
        raise FileNotFoundError(
            f"dataset 'covid_ct': folder(s) {', '.join(missing)} not found in "
            f"{str(folder)!r} (it holds {_subfolders(folder)}). Obtain the dataset from "
            f"{_COVID_OBTAIN}."
        )
    by_class = [class_images(found[0]), class_images(found[1])]
    for label, paths in enumerate(by_class):
        if len(paths) <= n_test + n_val:
            raise ValueError(
                f"dataset 'covid_ct': folder {str(found[label])!r} holds {len(paths)} "
                f"image(s); n_test={n_test} and n_val={n_val} need more than "
                f"{n_test + n_val}"
            )
    items = _split_per_class(by_class, lambda n: (n_test, n_val), seed)[split]
    return _finish(
        items, split=split, n_train=n_train, seed=seed, size=size, grey=True,
        class_names=COVID_CLASS_NAMES, name="covid_ct",
    )
