"""IDX files (MNIST, Fashion-MNIST): finding them, checking them at the door, reading them.

An IDX file is a 4-byte magic (0x00 0x00, a type byte, the number of dimensions), one big-endian
uint32 per dimension, then the values. `check_idx_folder` reads only the headers (and the length
of the decompressed payload) so that a bad file is refused before anything is prepared or cached.
Both readers check the same things, each refusal one line naming the file: the magic, images
3-D and labels 1-D (two files swapped), as many labels as images, and (`read_idx_dataset`, which
reads the labels) every label a class of the dataset.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from keras_resnet.data.dataset import Dataset

ENV_SOURCE_DIR = "KERAS_RESNET_DATA_DIR"

# Datasets published as four IDX files: the folder name Debian (and Zalando) use, the class names.
IDX_DATASETS: dict[str, tuple[str, tuple[str, ...]]] = {
    "fashion_mnist": (
        "fashion-mnist",
        (
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
    ),
    "mnist": ("mnist", tuple(str(i) for i in range(10))),
}
IDX_FILES = {
    "train_data": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_data": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
# Split sizes TFDS' mnist and fashion_mnist builders assume (they read exactly this many).
TFDS_SPLIT_SIZES = {"train": 60000, "test": 10000}
_UNSIGNED_BYTE = 0x08
_CHUNK = 1 << 20


class IdxError(ValueError):
    """An IDX file that is not what its header, or its partner file, says."""


def idx_path(folder: Path, stem: str) -> Path | None:
    """`folder/stem.gz` or `folder/stem`, whichever exists first (None: neither)."""
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    return None


def find_source_dir(name: str, source_dir: str | os.PathLike | None = None) -> Path | None:
    """The first folder holding the four IDX files of `name` ('mnist' or 'fashion_mnist').

    Looks in `source_dir`, `$KERAS_RESNET_DATA_DIR` (or its `<name>/` subfolder),
    `/usr/share/datasets/<name>` and `./.data/<name>`, where `<name>` is e.g. 'fashion-mnist'.
    When `source_dir` is given, only it (and its `<name>/` subfolder) is searched.
    """
    folder_name = IDX_DATASETS[name][0]
    if source_dir is not None:
        roots = [Path(source_dir)]
    else:
        roots = [Path(os.environ[ENV_SOURCE_DIR])] if os.environ.get(ENV_SOURCE_DIR) else []
        roots += [Path("/usr/share/datasets"), Path(".data")]
    for root in roots:
        for folder in (root, root / folder_name):
            if all(idx_path(folder, stem) for stem in IDX_FILES.values()):
                return folder
    return None


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _parse_header(path: Path, head: bytes) -> tuple[int, ...]:
    if len(head) < 4 or head[:2] != b"\x00\x00" or head[2] != _UNSIGNED_BYTE or head[3] == 0:
        raise IdxError(f"{path} is not an IDX file of unsigned bytes")
    ndim = head[3]
    if len(head) < 4 + 4 * ndim:
        raise IdxError(f"{path}: header cut short ({len(head)} bytes)")
    return struct.unpack(f">{ndim}I", head[4 : 4 + 4 * ndim])


def idx_header(path: str | os.PathLike) -> tuple[int, ...]:
    """The shape an IDX file declares, checked against the number of bytes it holds.

    Streams the (decompressed) file once without keeping it; a corrupt or truncated .gz, a wrong
    magic or a payload of another length than the header says raise `IdxError` (one line).
    """
    path = Path(path)
    try:
        with _open(path) as f:
            head = f.read(4)
            if len(head) == 4 and head[:2] == b"\x00\x00":
                head += f.read(4 * head[3])
            shape = _parse_header(path, head)
            size = 0
            while chunk := f.read(_CHUNK):
                size += len(chunk)
    except (OSError, EOFError, zlib.error) as error:  # gzip.BadGzipFile is an OSError
        raise IdxError(f"{path} cannot be read: {error}") from None
    expected = int(np.prod(shape))
    if size != expected:
        raise IdxError(f"{path}: header says shape {shape} ({expected} values), file holds {size}")
    return shape


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads one IDX file (gzip-compressed or not) into a uint8 array of its stated shape.

    Raises:
        IdxError (a ValueError): not an IDX file of unsigned bytes, a corrupt or truncated .gz,
            or a payload that does not match the header.
    """
    path = Path(path)
    try:
        with _open(path) as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as error:
        raise IdxError(f"{path} cannot be read: {error}") from None
    shape = _parse_header(path, data[:260])
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * len(shape))
    if array.size != int(np.prod(shape)):
        raise IdxError(f"{path}: header says shape {shape}, file holds {array.size} values")
    return array.reshape(shape)


def check_idx_folder(folder: str | os.PathLike) -> dict[str, int]:
    """Checks the four IDX files of a folder before anything is prepared from them.

    Every header's magic and the file's length; images 3-D, labels 1-D; as many labels as images
    in each split.

    Returns:
        {'train': n, 'test': n}, the number of examples per split.

    Raises:
        IdxError: the first problem, in one line naming the file.
    """
    folder = Path(folder)
    shapes = {}
    for key, stem in IDX_FILES.items():
        path = idx_path(folder, stem)
        if path is None:
            raise IdxError(f"{stem}(.gz) is missing from {folder}")
        shapes[key] = (path, idx_header(path))
    counts = {}
    for split in ("train", "test"):
        (images, image_shape), (labels, label_shape) = (
            shapes[f"{split}_data"],
            shapes[f"{split}_labels"],
        )
        counts[split] = check_split_shapes(folder, split, images, image_shape, labels, label_shape)
    return counts


def check_split_shapes(
    folder: Path,
    split: str,
    images: Path,
    image_shape: tuple[int, ...],
    labels: Path,
    label_shape: tuple[int, ...],
) -> int:
    """Checks one split's images file (3-D) and labels file (1-D, as many labels as images).

    Returns:
        The number of examples.

    Raises:
        IdxError: one line naming the file (two swapped files show up here).
    """
    if len(image_shape) != 3:
        raise IdxError(
            f"{images} must hold 3-D images (count, height, width), its header says shape "
            f"{image_shape} (a labels file in its place?)"
        )
    if len(label_shape) != 1:
        raise IdxError(
            f"{labels} must hold 1-D labels, its header says shape {label_shape} (an images "
            "file in its place?)"
        )
    if image_shape[0] != label_shape[0]:
        raise IdxError(
            f"{folder}: {split} images and labels differ in number ({image_shape[0]} in "
            f"{images.name}, {label_shape[0]} in {labels.name})"
        )
    return image_shape[0]


def check_labels(path: Path, labels: np.ndarray, num_classes: int) -> None:
    """Raises `IdxError` (naming the file) unless every label is in [0, num_classes)."""
    if labels.size and int(labels.max()) >= num_classes:
        raise IdxError(
            f"{path}: labels must be in [0, {num_classes - 1}] ({num_classes} classes), "
            f"found {int(labels.max())} (is it a labels file of this dataset?)"
        )


def read_idx_dataset(name: str, folder: Path) -> Dataset:
    """The four IDX files of `folder` as an in-memory `Dataset` named `name`."""
    paths = {key: idx_path(folder, stem) for key, stem in IDX_FILES.items()}
    arrays = {key: read_idx(path) for key, path in paths.items()}
    num_classes = len(IDX_DATASETS[name][1])
    for split in ("train", "test"):
        images, labels = f"{split}_data", f"{split}_labels"
        check_split_shapes(
            folder,
            split,
            paths[images],
            arrays[images].shape,
            paths[labels],
            arrays[labels].shape,
        )
        check_labels(paths[labels], arrays[labels], num_classes)
    return Dataset(
        name=name,
        x_train=arrays["train_data"][..., None],  # NHW -> NHWC, one channel
        y_train=arrays["train_labels"].astype(np.int64),
        x_test=arrays["test_data"][..., None],
        y_test=arrays["test_labels"].astype(np.int64),
        class_names=list(IDX_DATASETS[name][1]),
        source=f"idx:{folder}",
    )
