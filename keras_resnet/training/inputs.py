"""What `model.fit` takes: the data of a run as arrays (subset, validation split, one-hot
targets) or, for a folder of images, as streams of batches. The one seam between a dataset and
the training loop.

Streamed datasets implement `keras_resnet.data.streamed.StreamedSource` (a folder's
`FolderData` here, a large TFDS dataset's `TfdsStream`): `fit_data` and `data_report` read them
through it, whatever their type.

A folder is never loaded whole: `FolderData` keeps the file lists (`keras_resnet.data`'s
`FolderSource`) and `fit_data` turns its splits into streams of (uint8 images, one-hot targets)
batches. Folders whose images are trained at <= 64 px (`SMALL_IMAGE_MAX`) keep the small-image
recipe: the whole image (the pipeline's evaluation crop) in a new order every epoch, then the
model's pad-crop, flip and erasing layers. Larger ones take the ImageNet recipe from the
pipeline (random-resized crop and flip), with no augmentation layer in the model.
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
from keras_resnet.data import pipelines, tfds_stream
from keras_resnet.data.decode import BadImage
from keras_resnet.data.mixing import MixedBatches
from keras_resnet.data.pipelines import FolderPyDataset, decoder_for
from keras_resnet.data.streamed import StreamedSource, channel_stats_of
from keras_resnet.data.tfds_source import DataNotFoundError, default_data_dir, tfds_available
from keras_resnet.training import distributed
from keras_resnet.training.config import SMALL_IMAGE_MAX, TrainConfig
from keras_resnet.training.recipe import one_hot
from keras_resnet.utils import OptionError, one_line, write_text_atomic

# The file `keras_resnet.serving.read_class_names` reads beside a model (export, predict).
CLASS_NAMES_FILE = "class_names.txt"


def split_validation(images: np.ndarray, labels: np.ndarray, size: int, *, seed: int):
    """Holds `size` random examples out of (images, labels), each part in its original order:
    `keras_resnet.data.split`, the package's one seeded split, seeded with `seed + 1` (as this
    split always was, so that a resumed run holds out the same images).

    Args:
        images, labels: the training split.
        size: examples held out (0: none).
        seed: the run's seed.

    Returns:
        ((train_images, train_labels), (val_images, val_labels) or None).
    """
    if size == 0:
        return (images, labels), None
    if isinstance(size, int) and size >= len(images):
        raise OptionError(
            "val_size",
            f"val_size must be smaller than the {len(images)} training images, "
            f"received val_size={size}",
        )
    try:
        train, val = data_lib.split(len(images), size, seed=validation_seed(seed))
    except ValueError as error:
        raise OptionError("val_size", str(error)) from None
    return (images[train], labels[train]), (images[val], labels[val])


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


class OneHotCacheBatches(data_cache.CachePyDataset):
    """`CachePyDataset` batches (crop on the device) with one-hot float32 targets."""

    def __init__(self, folder, split, batch_size, *, num_classes, train, seed=0):
        super().__init__(folder, split, batch_size, train=train, seed=seed, crop_on_device=True)
        self.num_classes = num_classes

    def __getitem__(self, index: int):
        inputs, labels = super().__getitem__(index)
        return inputs, one_hot(labels, self.num_classes)


class OneHotBatches(FolderPyDataset):
    """`FolderPyDataset` batches with one-hot float32 targets (the recipe's loss needs dense
    targets for label smoothing).

    `whole_images=True`: training order and dropped remainder as for training, but each image
    is the evaluation crop (the whole image resized), for the small-image recipe whose crops
    and flips are Keras layers.
    """

    def __init__(self, source, split, batch_size, *, train, seed=0, whole_images=False):
        super().__init__(source, split, batch_size, train=train, seed=seed)
        self.num_classes = source.num_classes
        if whole_images:
            self.decode = decoder_for(source, train=False)

    def __getitem__(self, index: int):
        images, labels = super().__getitem__(index)
        return images, one_hot(labels, self.num_classes)


class ShareOfCacheBatches(OneHotCacheBatches):
    """`OneHotCacheBatches` (training) of one process's share of every global batch
    (`distributed.share_bounds`): the batch's rows, sorted as one process reads them, cut
    into `shard[1]` parts; the global batches are a one-process run's."""

    def __init__(self, folder, split, batch_size, *, shard, num_classes, seed=0):
        super().__init__(folder, split, batch_size, num_classes=num_classes, train=True, seed=seed)
        self.shard = shard

    def rows(self, index: int) -> np.ndarray:
        start, stop = distributed.share_bounds(0, self.batch_size, self.shard)
        return super().rows(index)[start:stop]


class ShareOfBatches(OneHotBatches):
    """`OneHotBatches` (training) of one process's share of every global batch: positions
    `distributed.share_bounds` of the epoch's order, each image with the crop seed it takes in
    a one-process run, so that the processes' shares make up that run's batches (an
    unreadable file is replaced by the next file of the order, as there)."""

    def __init__(self, source, split, batch_size, *, shard, seed=0, whole_images=False):
        super().__init__(
            source, split, batch_size, train=True, seed=seed, whole_images=whole_images
        )
        self.shard = shard

    def __getitem__(self, index: int):
        order = self.order()
        start, stop = distributed.share_bounds(index, self.batch_size, self.shard)
        rng = np.random.default_rng([self.seed, self.epoch, index])
        for _ in range(start - index * self.batch_size):  # the seeds of the shares before
            rng.integers(2**63)
        images, labels = [], []
        position, misses = start, 0
        while len(images) < stop - start:
            i = order[position % len(order)]
            image = self.decode(self.paths[i], int(rng.integers(2**63)))
            position += 1
            if image is None:
                misses += 1
                if misses > pipelines._MAX_REPLACEMENTS:
                    raise BadImage(
                        f"over {pipelines._MAX_REPLACEMENTS} unreadable files in one batch"
                    )
                continue
            images.append(image)
            labels.append(self.labels[i])
        return np.stack(images), one_hot(np.asarray(labels, np.int64), self.num_classes)


def folder_stream(
    data: FolderData, split: str, batch_size: int, *, train: bool, seed: int, augment: bool = True
):
    """Batches of (uint8 images, one-hot targets) of one split: tf.data on TensorFlow for the
    ImageNet recipe, else (and for small images, or training without augmentation: whole
    images in a new order every epoch) a `OneHotBatches` PyDataset.

    Over several processes (`distributed.shard`), a training stream serves this process's
    share of every global batch (`batch_size`); evaluation streams are read whole."""
    source = data.folder
    shard = distributed.shard() if train else None
    if shard is not None and data.cache is not None:
        return ShareOfCacheBatches(
            data.cache, split, batch_size, shard=shard, num_classes=source.num_classes, seed=seed
        )
    if shard is not None:
        whole_images = data.small_images or not augment
        return ShareOfBatches(
            source, split, batch_size, shard=shard, seed=seed, whole_images=whole_images
        )
    if data.cache is not None:
        return OneHotCacheBatches(
            data.cache, split, batch_size, num_classes=source.num_classes, train=train, seed=seed
        )
    if train and (data.small_images or not augment):
        return OneHotBatches(source, split, batch_size, train=True, seed=seed, whole_images=True)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        n = source.num_classes
        stream = source.dataset(split, batch_size, train=train, seed=seed)
        return stream.map(lambda x, y: (x, tf.one_hot(y, n)))
    return OneHotBatches(source, split, batch_size, train=train, seed=seed)


@dataclasses.dataclass
class FitData:
    """What `model.fit` and the test evaluation take; targets one-hot (float32).

    `x_train` is a stream of training batches (arrays in memory are served in whole batches
    of a new order every epoch, mixed with mixup or CutMix when asked: `MixedBatches`; a
    streamed dataset's own stream otherwise), `validation` a 1-tuple of a stream or None, and
    `test` an (images, targets) pair of arrays or a 1-tuple of a stream, so that
    `model.evaluate(*data.test)` reads the same either way.
    """

    x_train: object
    validation: tuple | None
    test: tuple
    counts: dict[str, int]
    report: dict | None = None  # streams: metrics.json's additions (skipped files, splits)

    @property
    def train_images(self) -> int:
        return self.counts["train"]

    @property
    def val_images(self) -> int:
        return self.counts.get("val", 0) if self.validation is not None else 0

    @property
    def test_images(self) -> int:
        return self.counts["test"]

    @property
    def test_arrays(self) -> bool:
        """The test split is held as arrays (flip TTA can mirror them)."""
        return len(self.test) == 2

    def fit_arguments(self, batch_size: int | None = None) -> dict:
        """`model.fit`'s data arguments (the streams are batched and shuffled already)."""
        return {"x": self.x_train, "validation_data": self.validation, "shuffle": False}


def train_count(data) -> int:
    """Images a run (or a search trial) trains on before its validation hold-out: the
    arrays' length, or a streamed dataset's count of training images."""
    if isinstance(data, StreamedSource):
        return data.counts["train"]
    return len(data.x_train)


def split_counts(config: TrainConfig, data) -> dict[str, int]:
    """Images per part as the run uses them ('train', 'val', 'test'): the data's checks that
    need no decoding (the validation hold-out leaves training images; `config` resolved)."""
    if isinstance(data, StreamedSource):
        counts = data.counts
        return {
            "train": counts["train"],
            "val": counts.get("val", 0),
            "test": counts[data.test_split],
        }
    total = len(data.x_train)
    try:
        _, held = data_lib.split(total, config.val_size, seed=validation_seed(config.seed))
    except ValueError as error:
        raise OptionError("val_size", str(error)) from None
    return {"train": total - len(held), "val": len(held), "test": len(data.x_test)}


def streamed_fit_data(config: TrainConfig, data: StreamedSource, counts: dict) -> FitData:
    """The streams of a streamed dataset (a folder, a TFDS stream; `StreamedSource`): train
    (shuffled, augmented), val and test (the preprocessing record's crops); a folder without
    test/ is tested on its validation split (`data.test_split`)."""

    def stream(split, train=False):
        return data.fit_stream(
            split, config.batch_size, train=train, seed=config.seed, augment=config.augment
        )

    return FitData(
        x_train=stream("train", train=True),
        validation=(stream("val"),) if "val" in data.counts else None,
        test=(stream(data.test_split),),
        counts=counts,
        report=data.fit_report(),
    )


def cached_count(folder: Path, split: str) -> int:
    """Images of `split` in a cache (`keras_resnet.data.cache`)."""
    return int(data_cache.cache_info(folder)["splits"][split]["count"])


def fit_data(plan) -> FitData:
    """The run's data as `fit` takes it (a `RunPlan`'s): arrays split into train and
    validation (`val_size`, seeded), served in whole batches (`MixedBatches`, mixed with
    mixup/CutMix when asked; the last partial batch dropped, as the streams drop it), or a
    streamed dataset's streams."""
    config, dataset = plan.config, plan.data
    if isinstance(dataset, StreamedSource):
        return streamed_fit_data(config, dataset, plan.counts)
    (x_train, y_train), validation = split_validation(
        dataset.x_train, dataset.y_train, config.val_size, seed=config.seed
    )
    classes = dataset.num_classes
    batches = MixedBatches(
        x_train,
        one_hot(y_train, classes),
        config.batch_size,
        mixup=config.mixup,
        cutmix=config.cutmix,
        drop_remainder=True,
        seed=config.seed,
        shard=distributed.shard(),  # several processes: this one's share of every batch
    )
    if validation is not None:  # batches of the run's size, not fit's default 32
        validation = (
            MixedBatches(
                validation[0], one_hot(validation[1], classes), config.batch_size, shuffle=False
            ),
        )
    test = (dataset.x_test, one_hot(dataset.y_test, classes))
    return FitData(x_train=batches, validation=validation, test=test, counts=plan.counts)


def load_data(config: TrainConfig, dataset: data_lib.Dataset | None = None, *, log_dir=None):
    """`dataset`, or `config.dataset` loaded, reduced to `train_size`/`test_size`; a folder
    becomes a `FolderData` (streamed; `log_dir` keeps its skipped-files log), a large TFDS
    dataset a `TfdsStream` (`keras_resnet.data.tfds_stream`). A streamed source given
    (`StreamedSource`) is used as it is."""
    if isinstance(dataset, StreamedSource):
        return dataset
    if dataset is None and config.is_folder:
        return open_folder_data(config, log_dir=log_dir)
    if dataset is None:
        stream = open_tfds_stream(config)
        if stream is not None:
            return stream
        if config.image_size is not None:
            raise OptionError(
                "image_size",
                f"image_size is for folders and streamed datasets; {config.dataset!r} loads into "
                f"memory at its own size, received image_size={config.image_size}",
            )
        try:
            dataset = data_lib.load_dataset(
                config.dataset,
                source_dir=config.source_dir,
                data_dir=config.data_dir,
                loader=config.loader,
            )
        except OptionError:
            raise
        except ValueError as error:  # an unknown dataset (for this loader)
            raise OptionError("dataset", str(error)) from None
    return data_lib.subset(dataset, config.train_size, config.test_size, seed=config.seed)


def open_tfds_stream(config: TrainConfig) -> tfds_stream.TfdsStream | None:
    """`config.dataset` as a `TfdsStream` when it is a TFDS dataset that streams (images of no
    fixed shape, or too large for memory: `tfds_stream.should_stream`), else None."""
    name = config.dataset.lower()
    if config.loader == "idx" or name in data_lib.IDX_DATASETS or not tfds_available():
        return None
    data_dir = os.fspath(config.data_dir or default_data_dir())
    try:
        try:
            builder = tfds_stream.prepared_builder(name, data_dir)
        except DataNotFoundError:  # not prepared: the in-memory loaders look elsewhere
            return None
        if not tfds_stream.should_stream(builder):
            return None
        for option in ("train_size", "test_size"):
            if getattr(config, option) is not None:
                raise OptionError(
                    option, f"{option} is for datasets in memory, not streamed {name!r}"
                )
        channels = int(config.model.input_shape[-1]) if config.model.input_shape else 3
        return tfds_stream.open_stream(
            name,
            data_dir,
            image_size=config.image_size,
            channels=channels,
            val_size=config.val_size,
            seed=config.seed,
        )
    except OptionError:
        raise
    except ValueError as error:  # unknown to TFDS, or a val_size that leaves nothing to train
        raise OptionError("dataset", one_line(error)) from None


def data_report(dataset, data: FitData) -> dict:
    """metrics.json's additions for a streamed dataset: its streams' report (`fit_report`:
    image size, the test split or the TFDS splits used), then for a folder the files skipped
    and ignored; {} for arrays."""
    if not isinstance(dataset, StreamedSource):
        return {}
    return {**(data.report or {}), **dataset.skipped()}


def write_class_names(folder: str | os.PathLike, dataset) -> Path:
    """class_names.txt (one per line, label order) in a run folder, where export and predict
    read them (`keras_resnet.serving.read_class_names`)."""
    path = Path(folder) / CLASS_NAMES_FILE
    write_text_atomic(path, "".join(f"{name}\n" for name in dataset.class_names))
    return path


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


class CacheRowBatches(OneHotCacheBatches):
    """`OneHotCacheBatches` over some rows of a cache's split (a part of it, `FolderParts`)."""

    def __init__(self, folder, split, batch_size, *, rows, num_classes, train, seed=0):
        super().__init__(folder, split, batch_size, num_classes=num_classes, train=train, seed=seed)
        self.index = np.intersect1d(self.index, np.asarray(rows))


def part_stream(
    data: FolderParts, part: str, batch_size: int, *, train: bool, seed: int, augment=True
):
    """Batches of (uint8 images, one-hot targets) of one part, as `folder_stream` gives a split:
    the files streamed, or with a cache the part's rows of the cache (cropped on the device)."""
    if data.cache is None:
        return folder_stream(data, part, batch_size, train=train, seed=seed, augment=augment)
    return CacheRowBatches(
        data.cache,
        data.cache_split,
        batch_size,
        rows=data.cache_rows[part],
        num_classes=data.num_classes,
        train=train,
        seed=seed,
    )


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
