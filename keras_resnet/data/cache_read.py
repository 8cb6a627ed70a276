"""Reading a built cache: its record, the checks made when it is opened, and its batches.

A cache folder (built by `cache.build_cache` / `cache.open_cache`) holds one `<split>.u8` (a
uint8 .npy file of rows) and one `<split>.meta.npy` (label, original height and width, readable)
per split, and `cache.json`, the record, written last: the version, the dataset folder, a
`fingerprint` of the files, labels and split, each file's size and the digests of the labels
files and of a seeded sample of rows. `cache_info` reads the record, `check_same_data` refuses a
cache built for other data and `verify_cache` one whose files are missing, cut short or changed,
each in one line naming the folder or file.

`CachePyDataset` serves the batches: it either crops on the CPU (one Pillow resize per image)
or, with `crop_on_device=True`, only gathers rows of the memory map for
`gpu_crop.RandomResizedCrop` to crop inside the model (the fast path: docs/DATA.md).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import keras
import numpy as np
from PIL import Image

from keras_resnet.data.recipe import random_resized_crop_box
from keras_resnet.utils import one_line

# 2: the record holds each file's size and the digests checked at open.
CACHE_VERSION = 2
RECORD_FILE = "cache.json"
# Rows of a split whose pixels the record's digest covers (drawn from a seed of the build).
DIGEST_ROWS = 64


class CacheError(ValueError):
    """A cache that cannot be built or used; the one-line message names the folder or file."""


def _digests(folder: Path, split: str, seed: int) -> dict[str, str]:
    """sha256 of a split's labels file whole, and of its `.npy` header with `DIGEST_ROWS`
    rows drawn with `seed` (all rows of a smaller split)."""
    images = np.load(folder / f"{split}.u8", mmap_mode="r")
    count = len(images)
    rows = np.random.default_rng(seed).choice(count, min(count, DIGEST_ROWS), replace=False)
    pixels = hashlib.sha256()
    with open(folder / f"{split}.u8", "rb") as f:
        pixels.update(f.read(images.offset))
    for row in np.sort(rows):
        pixels.update(np.ascontiguousarray(images[row]).tobytes())
    labels = hashlib.sha256((folder / f"{split}.meta.npy").read_bytes())
    return {"rows": pixels.hexdigest(), "labels": labels.hexdigest()}


def _delete_hint(folder: Path) -> str:
    return f"delete the cache folder {folder} to rebuild it (or give another --cache folder)"


def fingerprint(source) -> str:
    """A digest of what a cache holds: each split's files (relative paths) and labels, the
    image size, the channels and the preprocessing record of the evaluation crops (when the
    source has one). A different validation split (another `val_size` or seed), an added or
    removed file gives another digest."""
    digest = hashlib.sha256(f"{source.image_size}:{source.channels}".encode())
    record = getattr(source, "preprocessing", None)
    if record is not None:  # the evaluation crops' geometry and filter
        digest.update(json.dumps(record.to_dict(), sort_keys=True).encode())
    for split in sorted(source.files):
        paths, labels = source.files[split]
        digest.update(f"\n[{split}]".encode())
        for path, label in zip(paths, labels, strict=True):
            # The path's bytes: a file name that is not UTF-8 is a file like any other.
            digest.update(b"\n" + os.fsencode(path) + f"\t{int(label)}".encode())
    return digest.hexdigest()


def check_same_data(source, folder: Path, info: dict) -> None:
    """Raises `CacheError` when the cache `info` of `folder` was built for other data than
    `source`: another dataset folder (two folders of the same layout list the same files),
    image size, channels, classes, or files and split."""
    differs = [
        f"{key} {info.get(key)!r} (this run: {value!r})"
        for key, value in (
            ("root", os.path.realpath(source.root)),
            ("image_size", source.image_size),
            ("channels", source.channels),
            ("class_names", list(source.class_names)),
        )
        if info.get(key) != value
    ]
    if not differs and info.get("fingerprint") != fingerprint(source):
        differs = ["its files or its train/val split (another folder, --val-size or --seed)"]
    if differs:
        raise CacheError(
            f"cache {folder} was built for other data: {'; '.join(differs)}; give another "
            "--cache folder or delete this one"
        )


def verify_cache(folder: str | os.PathLike, info: dict | None = None) -> None:
    """Checks a cache against its record: every file present with its recorded size, and the
    digests of the labels files and of the sampled rows (`DIGEST_ROWS` a split).

    Raises:
        CacheError: one line naming the first file that differs, and saying to delete the
            folder to rebuild the cache.
    """
    folder = Path(folder)
    info = cache_info(folder) if info is None else info
    if info is None:
        raise CacheError(f"no complete cache in {folder} (no {RECORD_FILE})")
    files, digests = info.get("files"), info.get("digests")
    if not isinstance(files, dict) or not isinstance(digests, dict):
        raise CacheError(
            f"cache record {folder / RECORD_FILE} lists no files: {_delete_hint(folder)}"
        )
    for name, size in files.items():
        path = folder / name
        try:
            actual = path.stat().st_size
        except FileNotFoundError:
            raise CacheError(f"cache file {path} is missing: {_delete_hint(folder)}") from None
        if actual != size:
            raise CacheError(
                f"cache file {path} holds {actual:,} bytes, its record {size:,}: "
                f"{_delete_hint(folder)}"
            )
    for split, expected in digests.items():
        try:
            got = _digests(folder, split, int(info.get("digest_seed", 0)))
        except (OSError, ValueError) as error:
            raise CacheError(
                f"cache file {folder / f'{split}.u8'} cannot be read ({one_line(error)}): "
                f"{_delete_hint(folder)}"
            ) from None
        for key, name in (("labels", f"{split}.meta.npy"), ("rows", f"{split}.u8")):
            if got[key] != expected.get(key):
                raise CacheError(
                    f"cache file {folder / name} does not hold what was built (its digest "
                    f"differs): {_delete_hint(folder)}"
                )


def cache_info(folder: str | os.PathLike) -> dict | None:
    """The cache's description, or None when `folder` holds no complete cache (no record, or
    one of an earlier version).

    Raises:
        CacheError: a `cache.json` that is not a cache record (one line naming it).
    """
    path = Path(folder) / RECORD_FILE
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:  # UnicodeDecodeError and JSONDecodeError included
        raise CacheError(
            f"cache record {path} is not readable ({one_line(error)}): {_delete_hint(Path(folder))}"
        ) from None
    if not isinstance(info, dict):
        raise CacheError(f"cache record {path} is not a cache record: {_delete_hint(Path(folder))}")
    return info if info.get("version") == CACHE_VERSION else None


def _load(path: Path, mmap_mode: str | None) -> np.ndarray:
    try:
        return np.load(path, mmap_mode=mmap_mode)
    except (OSError, ValueError) as error:
        raise CacheError(
            f"cache file {path} cannot be read ({one_line(error)}): {_delete_hint(path.parent)}"
        ) from None


class CachePyDataset(keras.utils.PyDataset):
    """Batches from a cache built by `build_cache`, for `model.fit`/`evaluate` on any backend.

    Train: a permutation per (seed, epoch), the last partial batch dropped. Eval: file order,
    every image. Two forms:

    - `crop_on_device=False`: (uint8 (B, size, size, C), int64 (B,)); train images get their
      random-resized crop and flip here, on the CPU (Pillow, one image at a time).
    - `crop_on_device=True`: ({"image": uint8 (B, S, S, C), "size": int32 (B, 2)}, int64 (B,))
      with no per-image work: a gather of the stored rows from the memory map. Train images are
      the stored `side x side` squashes with their original (height, width), for a
      `gpu_crop.RandomResizedCrop` inside the model (`gpu_crop.training_model`); eval images are
      the stored center crops, `size` then being (image_size, image_size).

    `workers` threads build batches (the gather is a memcpy that releases the GIL).
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        split: str,
        batch_size: int,
        *,
        train: bool,
        seed: int = 0,
        crop_on_device: bool = False,
        workers: int | None = None,
        max_queue_size: int | None = None,
    ):
        workers = workers or min(16, os.cpu_count() or 1)
        super().__init__(workers=workers, max_queue_size=max_queue_size or 2 * workers)
        folder = Path(folder)
        self.info = cache_info(folder)
        if self.info is None:
            raise FileNotFoundError(f"no complete cache in {folder} (build it with build_cache)")
        self.images = _load(folder / f"{split}.u8", "r")
        meta = _load(folder / f"{split}.meta.npy", None)
        kept = meta[:, 3] == 1
        self.index = np.flatnonzero(kept)
        self.labels, self.sizes = meta[:, 0], meta[:, 1:3].astype(np.int32)
        self.batch_size, self.train, self.seed, self.epoch = batch_size, train, seed, 0
        self.crop_on_device = crop_on_device
        self.size = self.info["image_size"]
        self._order = (-1, None)

    def __len__(self) -> int:
        n = len(self.index)
        return n // self.batch_size if self.train else -(-n // self.batch_size)

    def _crop(self, i: int, rng: np.random.Generator) -> np.ndarray:
        stored = self.images[i]
        height, width = self.sizes[i]
        left, top, right, bottom = random_resized_crop_box(rng, int(height), int(width))
        sx, sy = stored.shape[1] / width, stored.shape[0] / height
        box = (left * sx, top * sy, right * sx, bottom * sy)
        image = Image.fromarray(stored[..., 0] if stored.shape[-1] == 1 else stored)
        out = np.asarray(image.resize((self.size, self.size), Image.Resampling.BILINEAR, box=box))
        out = out.reshape(self.size, self.size, stored.shape[-1])
        return out[:, ::-1] if rng.integers(2) else out

    def rows(self, index: int) -> np.ndarray:
        """The cache rows of batch `index` this epoch (sorted: the memory map is read forward)."""
        start = index * self.batch_size
        if not self.train:
            return self.index[start : start + self.batch_size]
        if self._order[0] != self.epoch:  # one permutation per epoch, not one per batch
            perm = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.index))
            self._order = (self.epoch, perm)
        return self.index[np.sort(self._order[1][start : start + self.batch_size])]

    def __getitem__(self, index: int):
        rows = self.rows(index)
        labels = self.labels[rows].astype(np.int64)
        if self.crop_on_device:
            return {"image": self.images[rows], "size": self.sizes[rows]}, labels
        if not self.train:
            return np.asarray(self.images[rows]), labels
        rng = np.random.default_rng([self.seed, self.epoch, index])
        return np.stack([self._crop(i, rng) for i in rows]), labels

    def on_epoch_end(self) -> None:
        self.epoch += 1
