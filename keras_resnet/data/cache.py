"""A one-time preprocessed cache of a folder's images, for when JPEG decoding cannot keep up.

Decoding photo-like JPEGs costs milliseconds a file; a GPU training ResNet-50 at 224 px takes
thousands a second. As FFCV does, the cache decodes every image once and stores it as raw uint8
in one memory-mapped file per split, so that an epoch costs only a crop and a resize per image:

- train: each image squashed to `side x side` (default 256) with its original height and width
  kept, so that a random-resized crop is drawn in original coordinates (the recipe's aspect
  ratios stay right) and mapped onto the stored pixels;
- val/test: the eval recipe's center crop itself, at `image_size`: evaluating from the cache
  gives the same pixels as streaming from the folder.

The cost is disk: side 256 takes 192 KiB an image (9.4 GiB for 50,000, 235 GiB for ImageNet's
1.28 M), and the crops are taken from a 256-px copy rather than the full-size file.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import keras
import numpy as np
from PIL import Image

from keras_resnet.data.decode import BadImage, open_scaled, recipe_crop, to_channels
from keras_resnet.data.recipe import random_resized_crop_box
from keras_resnet.utils import atomic_path, write_text_atomic

CACHE_VERSION = 1


def squash(path: str, side: int, channels: int) -> tuple[np.ndarray, tuple[int, int]]:
    """The whole image resized to side x side, and its original (height, width)."""
    image, factor = open_scaled(path, side, channels)
    height, width = round(image.size[1] / factor), round(image.size[0] / factor)
    try:
        with image:
            out = to_channels(image, channels).resize((side, side), Image.Resampling.BILINEAR)
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as error:
        raise BadImage(f"cannot be decoded ({error})") from None
    return np.asarray(out, np.uint8).reshape(side, side, channels), (height, width)


def _fill(path: Path, shape: tuple[int, ...], one, workers: int) -> None:
    images = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda i: one(images, i), range(shape[0])))
    images.flush()


def _write_split(source, split: str, folder: Path, side: int, workers: int) -> dict:
    paths, labels = source.files[split]
    train = split == "train"
    size = side if train else source.image_size
    shape = (len(paths), size, size, source.channels)
    sizes = np.zeros((len(paths), 2), np.int32)
    ok = np.zeros(len(paths), bool)

    def one(images, i):
        path = source.path(paths[i])
        try:
            if train:
                image, sizes[i] = squash(path, side, source.channels)
            else:
                image = recipe_crop(path, size, source.channels, train=False)
        except BadImage as error:
            source.skip_log.record(path, str(error))
            return
        images[i] = image
        ok[i] = True

    with atomic_path(folder / f"{split}.u8") as tmp:
        _fill(tmp, shape, one, workers)
    np.save(folder / f"{split}.meta.npy", np.column_stack([labels, sizes, ok]).astype(np.int64))
    return {"count": int(ok.sum()), "size": size}


def build_cache(
    source,
    folder: str | os.PathLike,
    *,
    side: int = 256,
    workers: int | None = None,
) -> Path:
    """Decodes every image of `source` (a `FolderSource`) once into `folder`.

    Args:
        source: the folder dataset.
        folder: where the cache goes (one `<split>.u8` .npy file and `<split>.meta.npy` per split,
            `cache.json` last, so a cache without it is incomplete and is rebuilt).
        side: side of the stored train images.
        workers: decoding threads (default: the CPU count).

    Returns:
        The cache folder. Unreadable files are recorded in the source's skip log and left out.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    splits = {
        split: _write_split(source, split, folder, side, workers or os.cpu_count() or 1)
        for split in source.files
    }
    info = {
        "version": CACHE_VERSION,
        "root": os.fspath(source.root),
        "class_names": source.class_names,
        "channels": source.channels,
        "image_size": source.image_size,
        "side": side,
        "splits": splits,
    }
    write_text_atomic(folder / "cache.json", json.dumps(info, indent=2))
    return folder


def cache_info(folder: str | os.PathLike) -> dict | None:
    """The cache's description, or None when `folder` holds no complete cache."""
    path = Path(folder) / "cache.json"
    if not path.is_file():
        return None
    info = json.loads(path.read_text())
    return info if info.get("version") == CACHE_VERSION else None


class CachePyDataset(keras.utils.PyDataset):
    """Batches of (uint8 (B, S, S, C), int64 (B,)) from a cache built by `build_cache`.

    Train: a permutation per (seed, epoch), a random-resized crop drawn on the original image's
    geometry and a flip per image, the last partial batch dropped. Eval: the stored center crops
    in file order. Works on every backend (numpy only); `workers` threads build batches.
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        split: str,
        batch_size: int,
        *,
        train: bool,
        seed: int = 0,
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
        self.labels, self.sizes = meta[:, 0], meta[:, 1:3]
        self.batch_size, self.train, self.seed, self.epoch = batch_size, train, seed, 0
        self.size = self.info["image_size"]

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

    def __getitem__(self, index: int):
        start = index * self.batch_size
        if not self.train:
            rows = self.index[start : start + self.batch_size]
            return np.asarray(self.images[rows]), self.labels[rows].astype(np.int64)
        order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.index))
        rows = self.index[np.sort(order[start : start + self.batch_size])]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        images = np.stack([self._crop(i, rng) for i in rows])
        return images, self.labels[rows].astype(np.int64)

    def on_epoch_end(self) -> None:
        self.epoch += 1
