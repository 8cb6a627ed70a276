"""A folder of images as a run streams it (a `StreamedSource`): `FolderData` (the file lists,
the normalization measured on a sample, the optional preprocessed cache), opened by
`open_folder_data`, and `FolderParts`, a split cut into parts (the search's train and validation
parts). Their batches are `keras_resnet.training.batches`'.

Folders whose images are trained at <= 64 px (`SMALL_IMAGE_MAX`) keep the small-image recipe:
the whole image (the pipeline's evaluation crop) in a new order every epoch, then the model's
pad-crop, flip and erasing layers. Larger ones take the ImageNet recipe from the pipeline
(random-resized crop and flip), with no augmentation layer in the model.
"""

from __future__ import annotations

import dataclasses
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import ClassVar

import keras
import numpy as np

from keras_resnet import data as data_lib
from keras_resnet.data import cache as data_cache
from keras_resnet.data.pipelines import decoder_for
from keras_resnet.data.streamed import StreamedSource, channel_stats_of
from keras_resnet.training.batches import folder_stream, part_stream
from keras_resnet.training.config import SMALL_IMAGE_MAX, TrainConfig
from keras_resnet.utils import OptionError, one_line


def validation_seed(seed: int) -> int:
    """The seed of the validation split of a run seeded `seed` (arrays and folders alike)."""
    return seed + 1


# Images drawn (seeded) from a folder's training split for its per-channel mean and std.
STATS_SAMPLE = 1000


@dataclasses.dataclass
class FolderData(StreamedSource):
    """A folder dataset as a run uses it (a `StreamedSource`): the streamed `FolderSource` and
    the normalization measured on a sample of its training images.

    Attributes:
        folder: the file lists, classes and image size (`keras_resnet.data.FolderSource`).
        mean, std: per-channel, in pixel units, of up to `STATS_SAMPLE` training images (their
            evaluation crops), as the in-memory path measures all of its training images.
        cache: the folder's preprocessed cache (`keras_resnet.data.cache`), when the run uses
            one: batches are then gathered from it and cropped on the accelerator.
    """

    kind: ClassVar[str] = "folders"
    folder: data_lib.FolderSource
    mean: tuple[float, ...]
    std: tuple[float, ...]
    cache: Path | None = None

    @property
    def name(self) -> str:
        return self.folder.root.name

    @property
    def source(self) -> str:
        """'folder:PATH', as metrics.json's `data_source`."""
        return self.folder.source

    @property
    def class_names(self) -> list[str]:
        return list(self.folder.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.folder.image_shape

    @property
    def small_images(self) -> bool:
        """Trained with the small-image recipe (see the module docstring)."""
        return self.folder.image_size <= SMALL_IMAGE_MAX

    @property
    def test_split(self) -> str:
        """'test', or 'val' for a folder without test/ (its test figures are validation's)."""
        return "test" if "test" in self.folder.files else "val"

    def skipped(self) -> dict:
        """metrics.json's counts of files left out (`FolderSource.skipped`); with a cache,
        the files its build could not decode (recorded in it, so counted on every run)."""
        report = self.folder.skipped()
        if self.cache is not None:
            report["cache"] = os.fspath(self.cache)
            report["skipped"] = max(report["skipped"], cache_skipped(self.cache))
        return report

    @property
    def counts(self) -> dict[str, int]:
        """Files per split, or with a cache the images its build could decode (it leaves
        unreadable files out)."""
        if self.cache is None:
            return self.folder.counts
        return {split: cached_count(self.cache, split) for split in self.folder.counts}

    def fit_stream(self, split: str, batch_size: int, *, train: bool, seed: int, augment=True):
        """`folder_stream` of one split."""
        return folder_stream(self, split, batch_size, train=train, seed=seed, augment=augment)

    def fit_report(self) -> dict:
        return {"test_split": self.test_split, "image_size": self.folder.image_size}


def cache_skipped(folder: Path) -> int:
    """Images of a cache that its build could not decode (left out of every split)."""
    return sum(int((np.load(f)[:, 3] == 0).sum()) for f in Path(folder).glob("*.meta.npy"))


def open_folder_data(config: TrainConfig, log_dir: str | os.PathLike | None = None) -> FolderData:
    """`config.dataset` opened as a folder (`keras_resnet.data.open_dataset`), with its
    validation split (`config.val_size`, seeded as the arrays' split) and its normalization.

    Raises:
        OptionError: a folder that is no dataset (`field` 'dataset', the message names the
            path), or one with neither test/ nor a validation split.
    """
    channels = 3
    if config.model.input_shape is not None:
        channels = int(config.model.input_shape[-1])
    try:
        source = data_lib.open_dataset(
            config.dataset,
            image_size=config.image_size,
            channels=channels,
            val_size=config.val_size,
            seed=validation_seed(config.seed),
            log_dir=log_dir,
        )
    except ValueError as error:
        raise OptionError("dataset", str(error)) from None
    if not {"val", "test"} & set(source.files):
        raise OptionError(
            "dataset",
            f"{config.dataset} has no test/ nor val/ folder and val_size=0: nothing to "
            "evaluate on (give --val-size)",
        )
    mean, std = sample_stats(source, seed=config.seed)
    cache = None
    if config.cache is not None:
        try:
            # Forked decoding workers (3x threads' rate), safe while no accelerator runtime has
            # started in this process: the model is built after the data.
            cache = data_cache.open_cache(source, config.cache, processes=_fork_is_safe())
        except (ValueError, OSError) as error:
            raise OptionError("cache", one_line(error)) from None
    return FolderData(source, tuple(mean), tuple(std), cache)


def _fork_is_safe() -> bool:
    """Whether forked workers may run: not on PyTorch with CUDA initialized, nor on JAX with a
    backend initialized (both keep threads that a fork does not copy)."""
    backend = keras.backend.backend()
    if backend == "jax":
        from jax._src import xla_bridge

        return not xla_bridge.backends_are_initialized()
    if backend == "torch":
        import torch

        return not torch.cuda.is_initialized()
    return True


def sample_stats(source: data_lib.FolderSource, *, seed: int) -> tuple[list, list]:
    """Per-channel mean and std of up to `STATS_SAMPLE` training images (evaluation crops,
    decoded by the pipelines' decoder; unreadable files left out).

    Summed image by image in float64 (`streamed.channel_stats_of`): the figures of the images
    stacked, bit for bit, holding a few dozen images instead of the whole sample (1,000 images
    of 224 px stacked took 150 MB)."""
    paths, _ = source.files["train"]
    if len(paths) > STATS_SAMPLE:
        _, chosen = data_lib.split(len(paths), STATS_SAMPLE, seed=seed)
        paths = paths[chosen]
    decode = decoder_for(source, train=False)
    threads = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(threads) as pool:
        mean, std = channel_stats_of(_decoded(pool, decode, paths, 4 * threads))
    if not mean:
        raise OptionError("dataset", f"no readable image in {source.root}")
    return mean, std


def _decoded(pool: ThreadPoolExecutor, decode, paths, chunk: int):
    """The readable images of `paths`, decoded by `pool` `chunk` files at a time: `pool.map`
    would submit every file at once and hold each decoded image until it is consumed."""
    for start in range(0, len(paths), chunk):
        for image in pool.map(lambda p: decode(p, 0), paths[start : start + chunk]):
            if image is not None:
                yield image


def cached_count(folder: Path, split: str) -> int:
    """Images of `split` in a cache (`keras_resnet.data.cache`)."""
    return int(data_cache.cache_info(folder)["splits"][split]["count"])


@dataclasses.dataclass
class FolderParts(FolderData):
    """Parts of one split of a folder, streamed as splits of their own: the search's train and
    validation parts of a folder's training split. Only file lists (or cache rows) and the
    normalization: a few tens of bytes a file, which is what a trial's process is sent.

    Attributes:
        folder: a `FolderSource` whose `files` are the parts (e.g. 'train' and 'val').
        cache_split: with a cache, the cache's split that the parts were taken from.
        cache_rows: with a cache, each part's rows in `cache_split` (the cache keeps the file
            order of the split it was built from).
    """

    cache_split: str = "train"
    cache_rows: dict[str, np.ndarray] | None = None

    @property
    def counts(self) -> dict[str, int]:
        """Images per part: files listed, or with a cache the rows its build could decode."""
        if self.cache is None:
            return self.folder.counts
        return {part: len(self._cache_index(part)) for part in self.cache_rows}

    @property
    def part_counts(self) -> dict[str, int]:
        """`counts` (the name the search reads)."""
        return self.counts

    def fit_stream(self, split: str, batch_size: int, *, train: bool, seed: int, augment=True):
        """`part_stream` of one part."""
        return part_stream(self, split, batch_size, train=train, seed=seed, augment=augment)

    def _cache_index(self, part: str) -> np.ndarray:
        meta = np.load(Path(self.cache) / f"{self.cache_split}.meta.npy", mmap_mode="r")
        rows = self.cache_rows[part]
        return rows[np.asarray(meta[rows, 3]) == 1]


def folder_parts(data: FolderData, parts: dict[str, np.ndarray], split: str = "train"):
    """`data` with its `split` cut into parts by index (e.g. the search's train and validation
    parts of the training split): a `FolderParts` whose `folder.files` are the parts.

    Args:
        data: an opened folder (`open_folder_data`), with or without a cache.
        parts: part name -> indices into `data.folder.files[split]`.
        split: the split that is cut.
    """
    paths, labels = data.folder.files[split]
    files = {name: (paths[rows], labels[rows]) for name, rows in parts.items()}
    folder = dataclasses.replace(data.folder, files=files)
    rows = None if data.cache is None else {name: np.asarray(r) for name, r in parts.items()}
    return FolderParts(folder, data.mean, data.std, data.cache, split, rows)


def open_folder_cache(data: FolderData, cache: str | os.PathLike) -> FolderData:
    """`data` with its preprocessed cache (`keras_resnet.data.cache.open_cache`: built once,
    else checked against the folder's files), for a caller that opens the folder first and the
    cache only after its own checks (the search). Raises OptionError('cache', ...) for a cache
    of other data."""
    try:
        folder = data_cache.open_cache(data.folder, cache, processes=_fork_is_safe())
    except (ValueError, OSError) as error:
        raise OptionError("cache", one_line(error)) from None
    return dataclasses.replace(data, cache=folder)
