"""What `model.fit` takes: the data of a run as arrays (subset, validation split, one-hot
targets) or, for a streamed dataset, its streams of batches. The one seam between a dataset and
the training loop.

Streamed datasets implement `keras_resnet.data.streamed.StreamedSource` (a folder's
`FolderData`, in `keras_resnet.training.folders`; a large TFDS dataset's `TfdsStream`):
`fit_data` and `data_report` read them through it, whatever their type. A folder is never
loaded whole: `FolderData` keeps the file lists and `fit_data` turns its splits into streams of
(uint8 images, one-hot targets) batches (`keras_resnet.training.batches`).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from keras_resnet import data as data_lib
from keras_resnet.data import tfds_stream
from keras_resnet.data.mixing import MixedBatches
from keras_resnet.data.streamed import StreamedSource
from keras_resnet.data.tfds_source import DataNotFoundError, default_data_dir, tfds_available
from keras_resnet.training import distributed
from keras_resnet.training.batches import (  # noqa: F401 (also imported from here)
    CacheRowBatches,
    OneHotBatches,
    OneHotCacheBatches,
    ShareOfBatches,
    ShareOfCacheBatches,
    folder_stream,
    part_stream,
)
from keras_resnet.training.config import TrainConfig
from keras_resnet.training.folders import (  # noqa: F401 (also imported from here)
    STATS_SAMPLE,
    FolderData,
    FolderParts,
    cache_skipped,
    cached_count,
    folder_parts,
    open_folder_cache,
    open_folder_data,
    sample_stats,
    validation_seed,
)
from keras_resnet.training.recipe import one_hot
from keras_resnet.training.run_folder import CLASS_NAMES_FILE, RunFolder  # noqa: F401
from keras_resnet.utils import OptionError, one_line


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
    return RunFolder(folder).write_class_names(dataset.class_names)
