"""Fashion-MNIST (section 3.2) from its original IDX files, and a strict IDX reader."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from ima.data.dataset import ArrayDataset
from ima.data.files import as_path, find_file
from ima.data.sampling import check_split_settings, image_split

__all__ = ["CLASS_NAMES", "FASHION_MNIST_DIRS", "fashion_mnist", "read_idx"]

_NUM_CLASSES = 10

#: Fashion-MNIST's class names, by label (Xiao et al. 2017).
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
               "Sneaker", "Bag", "Ankle boot")

#: Folders searched, in order, when ``root`` is not given. The first is where Debian's
#: ``dataset-fashion-mnist`` package installs the four gzip files; the second is where
#: Keras caches the same files.
FASHION_MNIST_DIRS = (
    Path("/usr/share/datasets/fashion-mnist"),
    Path("~/.keras/datasets/fashion-mnist").expanduser(),
)

_OBTAIN = (
    "Debian's package (apt-get install dataset-fashion-mnist) or "
    "https://github.com/zalandoresearch/fashion-mnist (the four *-ubyte.gz files), "
    "then set data.root to their folder"
)

# IDX type codes (third byte of the magic number) and their big-endian numpy dtypes.
_IDX_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path, *, ndim: int | None = None) -> np.ndarray:
    """Read an IDX file (LeCun's MNIST format), gzip-compressed or not.

    The header is a 4-byte magic number (two zero bytes, a type code, the number of
    dimensions: 2051 = 0x0803 for uint8 images (N, rows, cols), 2049 = 0x0801 for uint8
    labels (N,)), then one big-endian uint32 per dimension, then the data, row-major.
    Compression is detected from the content (gzip's 1f 8b), not the file name.
    ``ndim``, when given, is the number of dimensions the file must have.

    A file that is truncated, has trailing bytes, a bad magic number or the wrong number
    of dimensions raises ``ValueError`` naming the file.
    """
    path = as_path("path", path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as err:
            raise ValueError(
                f"IDX file {str(path)!r} is a damaged or truncated gzip file: {err}"
            ) from err
    if len(raw) < 4:
        raise ValueError(f"IDX file {str(path)!r} is truncated: {len(raw)} byte(s), no header")
    zero, code, dims = raw[:2], raw[2], raw[3]
    if zero != b"\x00\x00" or code not in _IDX_DTYPES:
        magic = int.from_bytes(raw[:4], "big")
        raise ValueError(
            f"{str(path)!r} is not an IDX file: magic number {magic} (0x{magic:08x}); "
            "expected 2051 (images) or 2049 (labels)"
        )
    if ndim is not None and dims != ndim:
        expected = {3: 2051, 1: 2049}.get(ndim)
        raise ValueError(
            f"IDX file {str(path)!r} has {dims} dimension(s) (magic number "
            f"{int.from_bytes(raw[:4], 'big')}), expected {ndim}"
            + (f" (magic number {expected})" if expected else "")
        )
    header = 4 + 4 * dims
    if len(raw) < header:
        raise ValueError(f"IDX file {str(path)!r} is truncated inside its header")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=dims, offset=4))
    dtype = _IDX_DTYPES[code]
    expected_bytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    found = len(raw) - header
    if found != expected_bytes:
        what = "truncated" if found < expected_bytes else "longer than its header says"
        raise ValueError(
            f"IDX file {str(path)!r} is {what}: header shape {shape} needs {expected_bytes} "
            f"data bytes, found {found}"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="), copy=True)


_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _read_pair(dirs, part: str) -> tuple[np.ndarray, np.ndarray]:
    image_name, label_name = _FILES[part]
    image_names, label_names = (image_name + ".gz", image_name), (label_name + ".gz", label_name)
    # Images and labels must come from one folder, never from two different copies.
    for folder in dirs:
        if any((folder / n).is_file() for n in image_names) and any(
            (folder / n).is_file() for n in label_names
        ):
            break
    else:
        for names in (image_names, label_names):
            find_file(names, dirs, dataset="fashion_mnist", obtain=_OBTAIN)
        raise FileNotFoundError(
            f"dataset 'fashion_mnist': no folder among {', '.join(repr(str(d)) for d in dirs)} "
            f"holds both {image_names[0]!r} and {label_names[0]!r}"
        )
    image_path = find_file(image_names, [folder], dataset="fashion_mnist")
    label_path = find_file(label_names, [folder], dataset="fashion_mnist")
    images = read_idx(image_path, ndim=3)
    labels = read_idx(label_path, ndim=1)
    if images.dtype != np.uint8 or labels.dtype != np.uint8:
        raise ValueError(
            f"Fashion-MNIST files must hold uint8 data, got {images.dtype} in "
            f"{str(image_path)!r} and {labels.dtype} in {str(label_path)!r}"
        )
    if images.shape[1:] != (28, 28):
        raise ValueError(
            f"Fashion-MNIST images must be 28x28, got {images.shape[1]}x{images.shape[2]} "
            f"in {str(image_path)!r}"
        )
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"Fashion-MNIST {part} files disagree: {images.shape[0]} images in "
            f"{str(image_path)!r} but {labels.shape[0]} labels in {str(label_path)!r}"
        )
    if labels.size and int(labels.max()) >= _NUM_CLASSES:
        bad = int((labels >= _NUM_CLASSES).sum())
        raise ValueError(
            f"Fashion-MNIST labels must be in 0..9, got {bad} label(s) up to "
            f"{int(labels.max())} in {str(label_path)!r}"
        )
    return images, labels


def fashion_mnist(
    split: str,
    *,
    root=None,
    val_size: int = 5000,
    n_train: int | None = None,
    seed: int = 0,
) -> ArrayDataset:
    """Fashion-MNIST (Xiao et al. 2017): 28x28 grey images of clothing, ten classes.

    Returns an ``ArrayDataset`` with x (N, 1, 28, 28) float32 (bytes / 255, in [0, 1]),
    y (N,) in 0..9, ``bounds=(0.0, 1.0)``, class names ``CLASS_NAMES`` (T-shirt/top,
    Trouser, Pullover, Dress, Coat, Sandal, Shirt, Sneaker, Bag, Ankle boot).

    Files: the original IDX files ``train-images-idx3-ubyte.gz``,
    ``train-labels-idx1-ubyte.gz``, ``t10k-images-idx3-ubyte.gz`` and
    ``t10k-labels-idx1-ubyte.gz`` (or the same names uncompressed) in ``root``; without
    ``root``, in the first of ``FASHION_MNIST_DIRS`` that has them (Debian's
    ``dataset-fashion-mnist`` package installs them in /usr/share/datasets/fashion-mnist).
    Nothing is downloaded.

    Splits: "test" is the 10000 t10k images. The 60000 training images are split into
    "val", a stratified sample of ``val_size`` images (500 per class with the default
    5000) fixed by ``seed``, and "train", the other 55000; the paper does not say how it
    chose its validation set. ``n_train``, when given, keeps a stratified subset of that
    many "train" images (fixed by ``seed``, for reduced protocols); it leaves "val" and
    "test" unchanged. Samples keep their order in the files.
    """
    val_size, n_train, seed = check_split_settings(
        split, val_size=val_size, n_train=n_train, seed=seed, max_val_size=60000
    )
    dirs = [as_path("root", root)] if root is not None else list(FASHION_MNIST_DIRS)

    images, labels = _read_pair(dirs, "test" if split == "test" else "train")
    return image_split("fashion_mnist", split, images[:, None], labels, val_size=val_size,
                       n_train=n_train, seed=seed, num_classes=_NUM_CLASSES,
                       class_names=CLASS_NAMES)
