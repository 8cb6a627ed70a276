"""`StreamedSource`: what the training code needs of a dataset it streams batch by batch
instead of holding in memory (a folder of class folders, `training.inputs.FolderData`; a large
TFDS dataset, `tfds_stream.TfdsStream`).

The training code asks one question, `isinstance(dataset, StreamedSource)`, and reads
everything else through this interface: the model's classes, input shape and normalization,
the streams `model.fit` takes, and metrics.json's additions. A new streamed source (a grain or
WebDataset loader, say) subclasses it and implements the abstract members; nothing in
`keras_resnet.training` has to learn its type.

In-memory arrays (`keras_resnet.data.Dataset`) are not streamed sources.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable
from pathlib import Path
from typing import ClassVar

import numpy as np

from keras_resnet.utils import OptionError


class StreamedSource(abc.ABC):
    """A dataset streamed batch by batch, as a training run uses it.

    Subclasses provide the data attributes below (dataclass fields or properties) and the
    abstract members.

    Attributes:
        class_names: label i is class_names[i].
        mean, std: per-channel, in pixel units (0-255), measured on a sample of the training
            images (their evaluation crops): the model's input normalization.
        cache: a preprocessed cache (`keras_resnet.data.cache`) the batches are gathered from,
            cropped on the accelerator; None when the source has none.
    """

    class_names: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    cache: Path | None = None

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """The dataset's name, as metrics.json's `dataset`."""

    @property
    @abc.abstractmethod
    def source(self) -> str:
        """Where the data comes from ('folder:PATH', 'tfds-stream:DIR'), as metrics.json's
        `data_source`."""

    @property
    @abc.abstractmethod
    def image_shape(self) -> tuple[int, int, int]:
        """(height, width, channels) of the batches' images (NHWC)."""

    @property
    @abc.abstractmethod
    def counts(self) -> dict[str, int]:
        """Images per split ('train', optional 'val', and the test split), as streamed."""

    @abc.abstractmethod
    def fit_stream(self, split: str, batch_size: int, *, train: bool, seed: int, augment=True):
        """Batches of (uint8 NHWC images, one-hot float32 targets) of one split, that `fit` and
        `evaluate` take as they are (batched and, for training, shuffled already).

        Args:
            split: a key of `counts`.
            batch_size: images per batch.
            train: the training stream (shuffled, augmented, last partial batch dropped).
            seed: the run's seed.
            augment: False trains on evaluation crops (`TrainConfig.augment`).
        """

    @abc.abstractmethod
    def fit_report(self) -> dict:
        """metrics.json's additions that describe the streams (image size, splits used)."""

    # What the refusals call this kind of source ("not folders").
    kind: ClassVar[str] = "streamed datasets"

    def check_options(self, config) -> None:
        """Raises `keras_resnet.utils.OptionError` for an option of `config` (a
        `TrainConfig`) that this source's streams cannot honour. Every streamed source refuses
        mixup and CutMix (`keras_resnet.data.MixedBatches` mixes batches of arrays in memory);
        a subclass adds its own refusals and calls this."""
        for name in ("mixup", "cutmix"):
            if getattr(config, name):
                raise OptionError(
                    name,
                    f"{name} is for datasets in memory, not {self.kind} "
                    f"(dataset={config.dataset!r}), received {name}={getattr(config, name)}",
                )

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def small_images(self) -> bool:
        """Trained with the small-image recipe (whole images, augmented by the model's
        layers) rather than the pipeline's random-resized crops."""
        return False

    @property
    def test_split(self) -> str:
        """The split the run is tested on."""
        return "test"

    def skipped(self) -> dict:
        """metrics.json's counts of files left out (unreadable, not images); {} for none."""
        return {}


def channel_stats_of(images: Iterable[np.ndarray]) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of uint8 images (..., C) given one at a time (or
    a batch at a time), in pixel units: running float64 sums, so that only one image is held
    at once. Sums of uint8 values and their squares are exact in float64 (below 2**53), so the
    figures equal `keras_resnet.data.channel_stats` of the images stacked, bit for bit.

    Returns:
        (mean, std) as lists of floats; ([], []) for no image.
    """
    total = squares = None
    count = 0
    for image in images:
        flat = np.asarray(image).reshape(-1, np.shape(image)[-1]).astype(np.float64)
        if total is None:
            total = np.zeros(flat.shape[1])
            squares = np.zeros(flat.shape[1])
        total += flat.sum(axis=0)
        squares += np.square(flat).sum(axis=0)
        count += len(flat)
    if total is None:
        return [], []
    mean = total / max(count, 1)
    variance = np.maximum(squares / max(count, 1) - np.square(mean), 0.0)
    return mean.tolist(), np.sqrt(variance).tolist()


__all__ = ["StreamedSource", "channel_stats_of"]
