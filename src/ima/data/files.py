"""Shared pieces of the file-based datasets: finding files, scaling, reading images.

No dataset is ever downloaded: a loader reads the files the user already has, and when
one is missing it says which file it wanted, where it looked and where to obtain it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from ima.validation import check_int

__all__ = [
    "IMAGE_EXTENSIONS",
    "as_path",
    "check_size",
    "find_file",
    "is_grey_file",
    "list_images",
    "read_image",
    "require_root",
    "to_unit",
]

#: File name endings (lower case) that the image-folder datasets read.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def as_path(name: str, value) -> Path:
    """``value`` (a str or path-like naming a file or folder) as a ``Path``, ``~`` expanded."""
    if not isinstance(value, str | os.PathLike) or not str(value):
        raise TypeError(f"{name} must be a path (a non-empty string), got {value!r}")
    return Path(value).expanduser()


def require_root(root, *, dataset: str, expects: str, obtain: str | None = None) -> Path:
    """``root`` as an existing folder, or a ``FileNotFoundError``/``ValueError`` saying what
    the folder should hold (``expects``) and where to get it (``obtain``)."""
    hint = f" Obtain it from {obtain}." if obtain else ""
    if root is None:
        raise ValueError(
            f"dataset {dataset!r} needs root: the folder holding {expects} "
            f"(set data.root in the config or pass root=...).{hint}"
        )
    path = as_path("root", root)
    if not path.is_dir():
        raise FileNotFoundError(
            f"dataset {dataset!r}: root {str(path)!r} is not a folder; it should hold "
            f"{expects}.{hint}"
        )
    return path


def find_file(
    names: Sequence[str],
    dirs: Iterable[Path],
    *,
    dataset: str,
    obtain: str | None = None,
) -> Path:
    """The first ``dir / name`` that is a file, trying every name in every dir in order.

    Raises ``FileNotFoundError`` naming the file(s), every folder searched and, for a
    public dataset, where to obtain it.
    """
    dirs = list(dirs)
    for d in dirs:
        for name in names:
            candidate = d / name
            if candidate.is_file():
                return candidate
    wanted = " or ".join(repr(n) for n in names)
    where = ", ".join(repr(str(d)) for d in dirs) or "(no folder)"
    hint = f" Obtain it from {obtain}." if obtain else ""
    raise FileNotFoundError(f"dataset {dataset!r}: file {wanted} not found in {where}.{hint}")


def to_unit(x: np.ndarray, *, where: str) -> np.ndarray:
    """Images as float32 in [0, 1]: uint8 divided by 255; floats kept if already in [0, 1].

    Any other dtype, or floats outside [0, 1] (or not finite), is a ``ValueError`` naming
    ``where``: the valid range is a property of the data, never guessed.
    """
    x = np.asarray(x)
    if x.dtype == np.uint8:
        out = x.astype(np.float32)
        out /= np.float32(255.0)
        return out
    if np.issubdtype(x.dtype, np.floating):
        out = x.astype(np.float32, copy=False)
        if out.size:
            low, high = float(np.min(out)), float(np.max(out))
            if not (np.isfinite(low) and np.isfinite(high)) or low < 0.0 or high > 1.0:
                raise ValueError(
                    f"{where}: floating-point images must lie in [0, 1], got values in "
                    f"[{low}, {high}]; scale them to [0, 1] or store uint8 (0..255)"
                )
        return out
    raise ValueError(
        f"{where}: images must be uint8 (0..255) or floating point in [0, 1], got dtype "
        f"{x.dtype}"
    )


def check_size(size) -> tuple[int, int] | None:
    """``size`` as ``(height, width)``: None, one int (square) or a pair of ints."""
    if size is None:
        return None
    if isinstance(size, list | tuple):
        if len(size) != 2:
            raise ValueError(f"size must be an int or a pair (height, width), got {size!r}")
        return (check_int("size[0]", size[0], low=1), check_int("size[1]", size[1], low=1))
    side = check_int("size", size, low=1)
    return (side, side)


def list_images(folder: Path) -> list[Path]:
    """The image files directly inside ``folder`` (by ending, any case), sorted by name.

    Hidden files (names starting with ".") are skipped.
    """
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    )


_HIGH_BIT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")

#: Pillow modes of single-channel images (grey, with or without alpha, any bit depth).
GREY_MODES = ("1", "L", "LA", "F", *_HIGH_BIT_MODES)


def is_grey_file(path: Path) -> bool:
    """Whether an image file holds one channel (Pillow mode in ``GREY_MODES``); only its
    header is read."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return img.mode in GREY_MODES
    except (OSError, UnidentifiedImageError, SyntaxError) as err:
        raise ValueError(f"cannot read image {str(path)!r}: {err}") from err


def read_image(path: Path, *, size: tuple[int, int] | None, grey: bool) -> np.ndarray:
    """One image file as float32 (C, H, W) in [0, 1], C = 1 if ``grey`` else 3.

    8-bit images are converted by Pillow to grey ("L", ITU-R 601 luma) or RGB (alpha
    dropped) and divided by 255; 16-bit images are divided by 65535; 32-bit float images
    must already be in [0, 1]. With ``size`` = (height, width) the image is resized with
    Pillow's antialiased bilinear filter, in floating point so nothing is rounded to 8
    bits on the way, ignoring the aspect ratio (as the paper resizes CT scans to 224x224).
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in _HIGH_BIT_MODES:
                arr = np.asarray(img).astype(np.float64)
                if arr.size and (arr.min() < 0 or arr.max() > 65535):
                    raise ValueError(
                        f"image {str(path)!r}: 16-bit pixel values must be in [0, 65535], "
                        f"got [{arr.min()}, {arr.max()}]"
                    )
                arr = (arr / 65535.0).astype(np.float32)
                if not grey:
                    arr = np.repeat(arr[:, :, None], 3, axis=2)
            elif img.mode == "F":
                arr = to_unit(np.asarray(img, dtype=np.float32), where=f"image {str(path)!r}")
                if not grey:
                    arr = np.repeat(arr[:, :, None], 3, axis=2)
            else:
                arr = to_unit(np.asarray(img.convert("L" if grey else "RGB")), where=str(path))
    except (OSError, UnidentifiedImageError, SyntaxError) as err:
        raise ValueError(f"cannot read image {str(path)!r}: {err}") from err
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if size is not None and arr.shape[:2] != size:
        height, width = size
        channels = [
            np.asarray(
                Image.fromarray(np.ascontiguousarray(arr[:, :, c])).resize(
                    (width, height), Image.Resampling.BILINEAR
                ),
                dtype=np.float32,
            )
            for c in range(arr.shape[2])
        ]
        arr = np.clip(np.stack(channels, axis=2), 0.0, 1.0)
    return np.ascontiguousarray(arr.transpose(2, 0, 1), dtype=np.float32)
