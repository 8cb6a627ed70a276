"""A one-time preprocessed cache of a folder's images, for when JPEG decoding cannot keep up.

Decoding photo-like JPEGs costs milliseconds a file; a GPU training ResNet-50 at 224 px takes
thousands a second. As FFCV does, the cache decodes every image once and stores it as raw uint8
in one memory-mapped file per split:

- train: each image squashed to `side x side` (default 256) with its original height and width
  kept, so that a random-resized crop is drawn in original coordinates (the recipe's aspect
  ratios stay right) and mapped onto the stored pixels;
- val/test: the eval recipe's center crop itself, at `image_size`: evaluating from the cache
  gives the same pixels as streaming from the folder.

The build decodes JPEGs with OpenCV when it is installed (optional), else with Pillow, in forked
worker processes. `CachePyDataset` then either crops on the CPU (one Pillow resize per image) or,
with `crop_on_device=True`, only gathers rows of the memory map for `gpu_crop.RandomResizedCrop`
to crop inside the model (the fast path: docs/DATA.md).

The cost is disk: side 256 takes 192 KiB an image (9.4 GiB for 50,000, 235 GiB for ImageNet's
1.28 M), and the crops are taken from a 256-px copy rather than the full-size file.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import keras
import numpy as np
from PIL import Image

from keras_resnet.data.decode import BadImage, open_scaled, recipe_crop, to_channels
from keras_resnet.data.recipe import random_resized_crop_box
from keras_resnet.utils import atomic_path, write_text_atomic

CACHE_VERSION = 1


def opencv_module():
    """cv2 when OpenCV is installed (optional: `pip install opencv-python-headless`), else None."""
    try:
        import cv2
    except ImportError:
        return None
    return cv2


def _squash_opencv(
    cv2, path, side: int, channels: int, image, original: tuple[int, int]
) -> np.ndarray | None:
    """OpenCV's JPEG decode at the smallest 1/2, 1/4, 1/8 scale covering `side`, or None when
    the file is not a whole JPEG (OpenCV decodes a truncated JPEG silently: Pillow reports it)."""
    if image.format != "JPEG" or image.mode not in ("L", "RGB"):
        return None
    with open(path, "rb") as f:
        encoded = np.frombuffer(f.read(), np.uint8)
    if encoded[-2:].tobytes() != b"\xff\xd9":
        return None
    reduce = 1
    while reduce < 8 and min(original) // (2 * reduce) >= side:
        reduce *= 2
    flags = {1: "", 2: "_REDUCED_{}_2", 4: "_REDUCED_{}_4", 8: "_REDUCED_{}_8"}[reduce]
    kind = "GRAYSCALE" if channels == 1 else "COLOR"
    flag = getattr(cv2, "IMREAD" + (flags.format(kind) if flags else "_" + kind))
    decoded = cv2.imdecode(encoded, flag)
    if decoded is None:
        return None
    out = cv2.resize(decoded, (side, side), interpolation=cv2.INTER_AREA)
    if channels == 3:
        out = cv2.cvtColor(out, cv2.COLOR_BGR2RGB)
    return out.reshape(side, side, channels)


def squash(
    path: str, side: int, channels: int, *, opencv: bool = True
) -> tuple[np.ndarray, tuple[int, int]]:
    """The whole image resized to side x side, and its original (height, width).

    JPEGs are decoded by OpenCV at reduced scale when it is installed and `opencv` is true
    (about twice Pillow's rate on the GPU machine), else by Pillow at its draft scale.
    """
    image, factor = open_scaled(path, side, channels)
    height, width = round(image.size[1] / factor), round(image.size[0] / factor)
    cv2 = opencv_module() if opencv else None
    if cv2 is not None:
        fast = _squash_opencv(cv2, path, side, channels, image, (height, width))
        if fast is not None:
            image.close()
            return fast, (height, width)
    try:
        with image:
            out = to_channels(image, channels).resize((side, side), Image.Resampling.BILINEAR)
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as error:
        raise BadImage(f"cannot be decoded ({error})") from None
    return np.asarray(out, np.uint8).reshape(side, side, channels), (height, width)


def _decode_rows(job) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decodes rows `rows` of a split into the memory-mapped file (runs in a worker).

    Returns:
        The rows, their original (height, width) (train) and whether each was readable.
    """
    source, split, file, rows, side, opencv = job
    images = np.load(file, mmap_mode="r+")
    paths = source.files[split][0]
    sizes = np.zeros((len(rows), 2), np.int32)
    ok = np.zeros(len(rows), bool)
    for n, i in enumerate(rows):
        path = source.path(paths[i])
        try:
            if split == "train":
                images[i], sizes[n] = squash(path, side, source.channels, opencv=opencv)
            else:
                images[i] = recipe_crop(path, source.image_size, source.channels, train=False)
                sizes[n] = source.image_size
        except BadImage as error:
            source.skip_log.record(path, str(error))
            continue
        ok[n] = True
    images.flush()
    return rows, sizes, ok


def _pool(workers: int, processes: bool):
    # fork: the workers run only Pillow/OpenCV/numpy, and need not import Keras again (spawn
    # would re-import the package, seconds per worker). Threads where fork is unavailable.
    if processes and "fork" in multiprocessing.get_all_start_methods():
        return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
    return ThreadPoolExecutor(workers)


def _write_split(source, split, folder: Path, side: int, workers: int, processes: bool) -> dict:
    paths, labels = source.files[split]
    size = side if split == "train" else source.image_size
    shape = (len(paths), size, size, source.channels)
    sizes = np.zeros((len(paths), 2), np.int32)
    ok = np.zeros(len(paths), bool)
    opencv = opencv_module() is not None
    with atomic_path(folder / f"{split}.u8") as tmp:
        np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape).flush()
        chunks = np.array_split(np.arange(len(paths)), max(1, min(len(paths), 8 * workers)))
        jobs = [(source, split, tmp, rows, side, opencv) for rows in chunks if len(rows)]
        with _pool(workers, processes) as pool:
            for rows, chunk_sizes, chunk_ok in pool.map(_decode_rows, jobs):
                sizes[rows], ok[rows] = chunk_sizes, chunk_ok
    np.save(folder / f"{split}.meta.npy", np.column_stack([labels, sizes, ok]).astype(np.int64))
    return {"count": int(ok.sum()), "size": size}


def build_cache(
    source,
    folder: str | os.PathLike,
    *,
    side: int = 256,
    workers: int | None = None,
    processes: bool = True,
) -> Path:
    """Decodes every image of `source` (a `FolderSource`) once into `folder`.

    Args:
        source: the folder dataset.
        folder: where the cache goes (one `<split>.u8` .npy file and `<split>.meta.npy` per split,
            `cache.json` last, so a cache without it is incomplete and is rebuilt).
        side: side of the stored train images.
        workers: decoding workers (default: the CPU count).
        processes: decode in forked worker processes (Pillow's resize and the numpy glue hold
            the GIL: 16 threads built 1,238 img/s on the GPU machine where 16 processes decode
            3,350); threads when False or where fork is unavailable.

    Returns:
        The cache folder. Unreadable files are recorded in the source's skip log and left out.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    splits = {
        split: _write_split(source, split, folder, side, workers or os.cpu_count() or 1, processes)
        for split in source.files
    }
    info = {
        "version": CACHE_VERSION,
        "fingerprint": fingerprint(source),
        "root": os.fspath(source.root),
        "class_names": source.class_names,
        "channels": source.channels,
        "image_size": source.image_size,
        "side": side,
        "splits": splits,
    }
    write_text_atomic(folder / "cache.json", json.dumps(info, indent=2))
    return folder


def fingerprint(source) -> str:
    """A digest of what a cache holds: each split's files (relative paths) and labels, the
    image size and the channels. A different validation split (another `val_size` or seed),
    an added or removed file gives another digest."""
    digest = hashlib.sha256(f"{source.image_size}:{source.channels}".encode())
    for split in sorted(source.files):
        paths, labels = source.files[split]
        digest.update(f"\n[{split}]".encode())
        for path, label in zip(paths, labels, strict=True):
            digest.update(f"\n{os.fsdecode(path)}\t{int(label)}".encode())
    return digest.hexdigest()


def cache_side(image_size: int) -> int:
    """The stored side of train images for crops of `image_size`: 256 for 224, as the eval
    recipe's resize (a crop of the whole image then needs no upsampling)."""
    return max(image_size, round(image_size * 256 / 224))


def open_cache(source, folder: str | os.PathLike, *, processes: bool = True, log=print) -> Path:
    """The cache of `source` in `folder`: built when the folder holds none (an interrupted
    build has no cache.json and is built again), else checked against `source`.

    Raises:
        ValueError: the folder holds a cache of other files (another folder, validation split,
            image size or channel count): the message names the folder and what differs.
    """
    folder = Path(folder)
    info = cache_info(folder)
    if info is None:
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"cache {folder} is a file, not a folder")
        count = sum(source.counts.values())
        log(f"cache: decoding {count} images into {folder} (once)")
        start = time.perf_counter()
        build_cache(source, folder, side=cache_side(source.image_size), processes=processes)
        seconds = time.perf_counter() - start
        decoder = "OpenCV" if opencv_module() is not None else "Pillow"
        log(f"cache: built in {seconds:.1f} s ({count / seconds:.0f} images/s, {decoder})")
        return folder
    differs = [
        f"{key} {info.get(key)!r} (this run: {value!r})"
        for key, value in (
            ("image_size", source.image_size),
            ("channels", source.channels),
            ("class_names", list(source.class_names)),
        )
        if info.get(key) != value
    ]
    if not differs and info.get("fingerprint") != fingerprint(source):
        differs = ["its files or its train/val split (another folder, --val-size or --seed)"]
    if differs:
        raise ValueError(
            f"cache {folder} was built for other data: {'; '.join(differs)}; give another "
            "--cache folder or delete this one"
        )
    return folder


def cache_info(folder: str | os.PathLike) -> dict | None:
    """The cache's description, or None when `folder` holds no complete cache."""
    path = Path(folder) / "cache.json"
    if not path.is_file():
        return None
    info = json.loads(path.read_text())
    return info if info.get("version") == CACHE_VERSION else None


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
        self.images = np.load(folder / f"{split}.u8", mmap_mode="r")
        meta = np.load(folder / f"{split}.meta.npy")
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
