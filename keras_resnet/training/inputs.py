"""What `model.fit` takes: the data of a run as arrays (subset, validation split, one-hot
targets). The one seam between a dataset and the training loop: other input forms (streamed
folders) go here."""

from __future__ import annotations

import dataclasses

import numpy as np

from keras_resnet import data as data_lib
from keras_resnet.training.config import TrainConfig
from keras_resnet.training.recipe import one_hot
from keras_resnet.utils import OptionError


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
    if size >= len(images):
        raise OptionError(
            "val_size",
            f"val_size must be smaller than the {len(images)} training images, "
            f"received val_size={size}",
        )
    train, val = data_lib.split(len(images), size, seed=seed + 1)
    return (images[train], labels[train]), (images[val], labels[val])


@dataclasses.dataclass
class FitData:
    """Arrays for `model.fit` and the test evaluation; targets one-hot (float32)."""

    x_train: np.ndarray
    y_train: np.ndarray
    validation: tuple[np.ndarray, np.ndarray] | None
    test: tuple[np.ndarray, np.ndarray]

    @property
    def train_images(self) -> int:
        return len(self.x_train)

    @property
    def val_images(self) -> int:
        return 0 if self.validation is None else len(self.validation[0])


def fit_data(config: TrainConfig, dataset: data_lib.Dataset) -> FitData:
    """The run's arrays: `dataset` (already subset) split into train and validation with
    `config.val_size` and `config.seed`; raises OptionError for a batch larger than the train
    part."""
    (x_train, y_train), validation = split_validation(
        dataset.x_train, dataset.y_train, config.val_size, seed=config.seed
    )
    if config.batch_size > len(x_train):
        raise OptionError(
            "batch_size",
            f"batch_size must be at most the {len(x_train)} training images, "
            f"received batch_size={config.batch_size}",
        )
    classes = dataset.num_classes
    return FitData(
        x_train=x_train,
        y_train=one_hot(y_train, classes),
        validation=None if validation is None else (validation[0], one_hot(validation[1], classes)),
        test=(dataset.x_test, one_hot(dataset.y_test, classes)),
    )


def load_data(config: TrainConfig, dataset: data_lib.Dataset | None = None) -> data_lib.Dataset:
    """`dataset`, or `config.dataset` loaded, reduced to `train_size`/`test_size`."""
    if dataset is None:
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
