"""Folders of images, one sub-folder per class, as a streamed dataset source.

Layouts (those of `keras.utils.image_dataset_from_directory`):

- `PATH/train/<class>/*`, with optional `PATH/val/` (or `PATH/validation/`) and `PATH/test/`;
- `PATH/<class>/*`, the validation split held out of it by `val_size` (a count or a fraction).

Class names are the sorted folder names (hidden folders are left out); files are found
recursively, following links to folders once per real folder (a link back into the dataset, or
a second link to a folder already listed, is not followed: a loop would multiply the files and
give one class another's images). A class name must be UTF-8 text that survives one name per
line (class_names.txt): a folder name holding a line break, or not UTF-8, is refused. Only the
file list is kept in memory; images are decoded batch by batch.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path

import numpy as np

from keras_resnet.data.decode import SkipLog
from keras_resnet.data.memory import split
from keras_resnet.preprocessing import Preprocessing

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"})
VAL_FOLDERS = ("val", "validation")
SPLITS = ("train", "val", "test")
# Characters that end a line for `str.splitlines` (and for other readers of one name per line),
# and the byte-order mark, which readers of UTF-8 text may strip: a class name holding one would
# not read back from class_names.txt as it was written.
LINE_BREAKS = frozenset("\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029")
BYTE_ORDER_MARK = "\ufeff"


class FolderError(ValueError):
    """A folder that cannot be a dataset; the one-line message names the path."""


@dataclasses.dataclass
class ClassFolders:
    """The image files of one split folder, in sorted order."""

    root: Path
    class_names: list[str]
    paths: list[bytes]  # relative to the dataset folder
    labels: np.ndarray
    ignored: int  # files that are not images (by extension)


def check_class_name(folder: Path) -> None:
    """Raises `FolderError` unless the name of the class folder `folder` can be a class name:
    UTF-8 text with no line break (see `LINE_BREAKS`) and no byte-order mark."""
    name = folder.name
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise FolderError(
            f"class folder {os.fsencode(folder)!r} has a name that is not UTF-8: rename it "
            "(class names are stored as UTF-8 text)"
        ) from None
    found = sorted({c for c in name if c in LINE_BREAKS or c == BYTE_ORDER_MARK})
    if found:
        raise FolderError(
            f"class folder {os.fspath(folder)!r} has a name holding {''.join(found)!r}, which "
            "class_names.txt (one name per line) cannot store: rename it"
        )


def _identity(path: str | os.PathLike) -> tuple[int, int] | None:
    """(st_dev, st_ino) of the folder `path` (links followed), None if it cannot be read."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_dev, stat.st_ino)


def _walk_once(top: Path, visited: set, ancestors: tuple[str, ...]):
    """`os.walk(top, followlinks=True)` in sorted order that enters each real folder once: a
    link to a folder of `visited` (updated as folders are entered), or to one of `ancestors`
    (real paths) or above them, is not followed."""
    for folder, dirs, files in os.walk(top, followlinks=True):
        kept = []
        for name in sorted(dirs):
            path = os.path.join(folder, name)
            identity = _identity(path)
            if identity is None or identity in visited:
                continue
            if os.path.islink(path):
                real = os.path.realpath(path)
                if any(a == real or a.startswith(real.rstrip(os.sep) + os.sep) for a in ancestors):
                    continue
            visited.add(identity)
            kept.append(name)
        dirs[:] = kept
        yield folder, files


def scan_split(root: Path, base: Path) -> ClassFolders:
    """Lists `root/<class>/**` (sorted), checking there are >= 2 classes and none is empty.

    Paths are kept relative to `base` as bytes: a file list of ImageNet's size stays a few tens
    of MB. Links to folders are followed once per real folder (see the module docstring).

    Raises:
        FolderError: no class folders, a single class, an empty class folder, a class folder
            name that cannot be a class name (`check_class_name`), or two class folders that
            are one folder (a link).
    """
    classes = sorted(
        entry.name for entry in os.scandir(root) if entry.is_dir() and entry.name[0] != "."
    )
    if not classes:
        raise FolderError(f"{root} holds no class folders (expected {root}/<class>/<image>)")
    if len(classes) == 1:
        raise FolderError(
            f"{root} has one class folder ({classes[0]!r}): classification needs at least 2"
        )
    # The dataset folder, its split folders and every class folder are entered only as
    # themselves: a link inside a class to any of them would relabel or repeat their images.
    visited = {_identity(entry.path) for entry in os.scandir(base) if entry.is_dir()}
    visited |= {_identity(base), _identity(root)}
    class_ids: dict[tuple[int, int] | None, str] = {}
    for name in classes:
        check_class_name(root / name)
        identity = _identity(root / name)
        if identity is not None and identity in class_ids:
            raise FolderError(
                f"class folders {root / class_ids[identity]} and {root / name} are one folder "
                "(a link): each class needs a folder of its own"
            )
        class_ids[identity] = name
    visited |= set(class_ids)
    ancestors = (os.path.realpath(base), os.path.realpath(root))
    paths, labels, ignored = [], [], 0
    cut = len(os.fspath(base)) + 1
    for label, name in enumerate(classes):
        found = 0
        for folder, files in _walk_once(root / name, visited, ancestors):
            for file in sorted(files):
                if Path(file).suffix.lower() in IMAGE_EXTENSIONS:
                    paths.append(os.fsencode(os.path.join(folder, file)[cut:]))
                    found += 1
                else:
                    ignored += 1
        if not found:
            raise FolderError(f"class folder {root / name} holds no images")
        labels += [label] * found
    return ClassFolders(root, classes, paths, np.asarray(labels, np.int64), ignored)


def _split_layout(root: Path) -> dict[str, Path]:
    folders = {"train": root / "train"}
    for name in VAL_FOLDERS:
        if (root / name).is_dir():
            folders["val"] = root / name
            break
    if (root / "test").is_dir():
        folders["test"] = root / "test"
    return folders


@dataclasses.dataclass
class FolderSource:
    """A dataset streamed from image folders: file lists per split, decoded batch by batch.

    Attributes:
        root: the folder given.
        class_names: sorted class folder names; label i is class_names[i].
        files: split name ('train', 'val', 'test') -> (paths relative to root as bytes, int64
            labels).
        image_size: side of the square crops the pipelines yield.
        channels: 1 or 3, the model's channel count (images are converted to it).
        ignored: files that are not images (by extension), left out.
        skip_log: where unreadable images are recorded as the pipelines meet them.
        preprocessing: the evaluation crops' record (`keras_resnet.preprocessing`); None: the
            package's recipe for `image_size`.
    """

    root: Path
    class_names: list[str]
    files: dict[str, tuple[np.ndarray, np.ndarray]]
    image_size: int = 224
    channels: int = 3
    ignored: int = 0
    skip_log: SkipLog | None = None
    preprocessing: Preprocessing | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.image_size, self.image_size, self.channels)

    @property
    def counts(self) -> dict[str, int]:
        return {name: len(paths) for name, (paths, _) in self.files.items()}

    def path(self, relative: bytes) -> str:
        """The full path of a file of `files`."""
        return os.path.join(self.root, os.fsdecode(relative))

    @property
    def source(self) -> str:
        return f"folder:{self.root}"

    def skipped(self) -> dict:
        """For metrics.json: {'ignored_non_images', 'skipped': count, 'first_skipped': [...]}."""
        summary = self.skip_log.summary() if self.skip_log else {"count": 0, "first": []}
        return {
            "ignored_non_images": self.ignored,
            "skipped": summary["count"],
            "first_skipped": summary["first"],
        }

    def dataset(self, split: str, batch_size: int, *, train: bool | None = None, **options):
        """Batches of (uint8 images, int64 labels) for `model.fit`/`evaluate`.

        tf.data (`tf_dataset`) on the TensorFlow backend; a `keras.utils.PyDataset` with worker
        threads (`py_dataset`) on JAX and PyTorch, where TensorFlow may be absent. `train`
        defaults to `split == 'train'`; `options` go to the pipeline chosen.
        """
        import keras

        from keras_resnet.data import pipelines

        train = split == "train" if train is None else train
        if keras.backend.backend() == "tensorflow":
            return pipelines.tf_dataset(self, split, batch_size, train=train, **options)
        return pipelines.FolderPyDataset(self, split, batch_size, train=train, **options)


def open_folder(
    path: str | os.PathLike,
    *,
    image_size: int = 224,
    channels: int = 3,
    val_size: int | float = 0,
    seed: int = 0,
    log_dir: str | os.PathLike | None = None,
) -> FolderSource:
    """Scans an image folder (see the module docstring for the layouts) into a `FolderSource`.

    Args:
        path: the dataset folder.
        image_size: side of the crops (default 224).
        channels: 1 or 3.
        val_size: images held out of train for validation when there is no val folder: a count
            or a fraction in (0, 1); 0 for none. Split with `keras_resnet.data.split(seed=...)`.
        seed: seed of that split.
        log_dir: folder for the skip log (default: a new temporary folder).

    Raises:
        FolderError: not a folder, no classes, a single class, an empty class folder, or splits
            whose class folders differ; the message names the path.
    """
    root = Path(path)
    if not root.is_dir():
        raise FolderError(f"dataset folder not found, received dataset={os.fspath(path)!r}")
    layout = _split_layout(root) if (root / "train").is_dir() else {"train": root}
    scans = {name: scan_split(folder, root) for name, folder in layout.items()}
    classes = scans["train"].class_names
    for scan in scans.values():
        if scan.class_names != classes:
            only_here = sorted(set(scan.class_names) - set(classes))
            missing = sorted(set(classes) - set(scan.class_names))
            raise FolderError(
                f"{scan.root} has other classes than {scans['train'].root}: extra {only_here}, "
                f"missing {missing}"
            )
    files = {
        name: (np.asarray(scan.paths, dtype=np.bytes_), scan.labels) for name, scan in scans.items()
    }
    if "val" not in files and val_size:
        paths, labels = files["train"]
        kept, held = split(len(paths), val_size, seed=seed)
        files["train"] = (paths[kept], labels[kept])
        files["val"] = (paths[held], labels[held])
    log_dir = log_dir or tempfile.mkdtemp(prefix="keras_resnet_skips_")
    return FolderSource(
        root=root,
        class_names=classes,
        files=files,
        image_size=image_size,
        channels=channels,
        ignored=sum(scan.ignored for scan in scans.values()),
        skip_log=SkipLog(log_dir),
    )


def folder_dataset(
    path: str | os.PathLike,
    *,
    image_size: int | tuple[int, int] = 224,
    limit: int | None = None,
    channels: int = 3,
    workers: int | None = None,
):
    """A folder's train (and val or test) images decoded into an in-memory `Dataset`.

    For benchmarks and small folders only (center crops, the eval recipe; `limit` images per
    split at most): training streams through `FolderSource.dataset` instead.

    Args:
        path: the dataset folder.
        image_size: side of the square crops (an (h, w) pair must have h == w).
        limit: at most this many images per split (the first of a seeded permutation).
        channels: 1 or 3.
        workers: decoding threads (default: the CPU count).

    Returns:
        A `Dataset` named after the folder; unreadable files are left out.
    """
    from concurrent.futures import ThreadPoolExecutor

    from keras_resnet.data.dataset import Dataset
    from keras_resnet.data.pipelines import decoder_for

    if not isinstance(image_size, int):
        if image_size[0] != image_size[1]:
            raise FolderError(f"image_size must be square, received image_size={image_size!r}")
        image_size = int(image_size[0])
    source = open_folder(path, image_size=image_size, channels=channels)
    decode = decoder_for(source, train=False)
    arrays = {}
    for name in ("train", "test" if "test" in source.files else "val"):
        paths, labels = source.files.get(name, source.files["train"])
        if limit is not None and limit < len(paths):
            keep, _ = split(len(paths), len(paths) - limit, seed=0)
            paths, labels = paths[keep], labels[keep]
        with ThreadPoolExecutor(workers or os.cpu_count()) as pool:
            images = list(pool.map(lambda p: decode(p, 0), paths))
        ok = [i for i, image in enumerate(images) if image is not None]
        shape = (0, image_size, image_size, channels)
        x = np.stack([images[i] for i in ok]) if ok else np.zeros(shape, np.uint8)
        arrays[name] = (x, labels[ok])
    (x_train, y_train), (x_test, y_test) = arrays.values()
    return Dataset(
        source.root.name, x_train, y_train, x_test, y_test, source.class_names, source.source
    )
