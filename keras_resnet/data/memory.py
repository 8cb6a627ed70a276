"""In-memory datasets: train and test splits as numpy arrays (Fashion-MNIST, MNIST, small TFDS).

`load_dataset("fashion_mnist")` returns uint8 NHWC images, int labels and the class names, from
the first of: the IDX files on disk (through tensorflow-datasets where TensorFlow is installed,
`tfds_source`, else with numpy, `idx`), a prepared tensorflow-datasets copy, and keras.datasets
(`keras_datasets`: its cache, else one download). For folders of images and large datasets, see
`open_dataset`, which streams from disk instead. The `Dataset` type itself is defined in
`dataset` (and importable from here too).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from keras_resnet.data.dataset import Dataset  # also `keras_resnet.data.memory.Dataset`
from keras_resnet.data.idx import IDX_DATASETS, find_source_dir, read_idx_dataset
from keras_resnet.data.keras_datasets import KERAS_DATASETS, load_keras_dataset
from keras_resnet.data.tfds_source import (
    DataNotFoundError,
    default_data_dir,
    load_tfds,
    missing_message,
    tfds_available,
)

LOADERS = ("auto", "tfds", "idx")


def load_dataset(
    name: str = "fashion_mnist",
    *,
    source_dir: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    loader: str = "auto",
) -> Dataset:
    """Loads a dataset's train and test splits into memory.

    With `loader='auto'` the first of these that holds the data serves it: the IDX files of
    mnist/fashion_mnist (`source_dir`, else `$KERAS_RESNET_DATA_DIR`,
    `/usr/share/datasets/<name>`, `./.data/<name>`), read through tensorflow-datasets when
    TensorFlow is installed; a prepared tensorflow-datasets copy in `data_dir`; then
    keras.datasets for mnist, fashion_mnist, cifar10 and cifar100 (its cache in
    `$KERAS_HOME/datasets`, else one download; one line on stderr says so). A `source_dir` that
    is given is the only place the IDX files are looked for: without them, an error. TFDS never
    downloads here.

    Args:
        name: a tensorflow-datasets name: 'fashion_mnist' (default), 'mnist', 'cifar10',
            'cifar100', or any TFDS dataset with 'image' and 'label' features.
        source_dir: folder of the IDX files of 'mnist'/'fashion_mnist'.
        data_dir: TFDS' data folder, where prepared datasets are cached (default
            $TFDS_DATA_DIR or ~/tensorflow_datasets).
        loader: 'auto' (above), 'tfds' (tensorflow-datasets only: the IDX files or a prepared
            copy) or 'idx' (read the IDX files with numpy; mnist and fashion_mnist only).

    Returns:
        A `Dataset` with uint8 NHWC images, int64 labels and the class names; its `source`
        says where they came from.

    Raises:
        ValueError: unknown dataset or loader; an IDX file that fails its checks (`IdxError`).
        DataNotFoundError: no data found, none downloaded; the message (one line) says how to
            get it.

    Example:
        >>> data = load_dataset("fashion_mnist")
        >>> data.x_train.shape, data.class_names[0]
        ((60000, 28, 28, 1), 'T-shirt/top')
    """
    if loader not in LOADERS:
        raise ValueError(f"loader must be one of {LOADERS}, received loader={loader!r}")
    if not isinstance(name, str) or not name:
        raise ValueError(f"dataset must be a dataset name, received dataset={name!r}")
    name = name.lower()
    if source_dir is not None and not Path(source_dir).is_dir():
        raise DataNotFoundError(f"source_dir is not a folder, received source_dir={source_dir!r}")
    folder = find_source_dir(name, source_dir) if name in IDX_DATASETS else None
    use_tfds = loader == "tfds" or (loader == "auto" and tfds_available())
    if loader == "tfds" and not tfds_available():
        raise ValueError(
            "loader='tfds' needs tensorflow and tensorflow-datasets installed, "
            "received loader='tfds'"
        )
    # keras.datasets comes last, and only for 'auto' without a source_dir named.
    keras_fallback = loader == "auto" and source_dir is None and name in KERAS_DATASETS
    if use_tfds:
        try:
            return load_tfds(name, folder, os.fspath(data_dir or default_data_dir()))
        except DataNotFoundError as error:
            if not keras_fallback:
                raise
            missing = str(error)
    elif folder is not None:
        return read_idx_dataset(name, folder)
    elif keras_fallback:
        missing = (
            missing_message(name)
            if name in IDX_DATASETS
            else f"no local {name} data (tensorflow-datasets is not installed)"
        )
    elif name not in IDX_DATASETS:
        hint = (
            ""
            if loader == "idx"
            else " (other datasets need tensorflow and tensorflow-datasets installed)"
        )
        raise ValueError(
            f"dataset must be one of {sorted(IDX_DATASETS)} without TensorFlow"
            f"{hint}, received dataset={name!r}"
        )
    else:
        raise DataNotFoundError(missing_message(name))
    try:
        return load_keras_dataset(name)
    except DataNotFoundError as error:
        raise DataNotFoundError(f"{missing}; {error}") from None


def subset(
    data: Dataset, train_size: int | None = None, test_size: int | None = None, *, seed: int = 0
) -> Dataset:
    """A class-stratified-enough random subset (the first `n` of a seeded permutation)."""
    rng = np.random.default_rng(seed)

    def take(x, y, n):
        if n is None or n >= len(x):
            return x, y
        index = np.sort(rng.permutation(len(x))[:n])
        return x[index], y[index]

    x_train, y_train = take(data.x_train, data.y_train, train_size)
    x_test, y_test = take(data.x_test, data.y_test, test_size)
    return dataclasses.replace(data, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)


def channel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of uint8 NHWC images, in pixel units (0-255).

    Summed in chunks of about 16 M values in float64 (a float64 copy of the whole array took
    2.3 GB for 1,000 images of 224 px): exact sums for uint8 data, so the result equals
    `flat.mean(0)`/`flat.std(0)` within float64 rounding."""
    channels = images.shape[-1]
    flat = images.reshape(-1, channels)
    total = np.zeros(channels)
    squares = np.zeros(channels)
    step = max(1, (1 << 24) // channels)
    for start in range(0, len(flat), step):
        chunk = flat[start : start + step].astype(np.float64)
        total += chunk.sum(axis=0)
        squares += np.square(chunk).sum(axis=0)
    count = max(len(flat), 1)
    mean = total / count
    variance = np.maximum(squares / count - np.square(mean), 0.0)
    return mean.tolist(), np.sqrt(variance).tolist()


def split(count: int, holdout: int | float, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The package's one seeded split of `count` examples into kept and held-out indices.

    The held-out part is the first `n` of `np.random.default_rng(seed).permutation(count)`, the
    convention the training and tuning splits use, so a split of in-memory arrays and of a
    folder's file list agree for the same seed.

    Args:
        count: number of examples.
        holdout: a count (int >= 0) or a fraction in (0, 1) of `count` (at least one example).
        seed: seed of the permutation.

    Returns:
        `(kept, held_out)`: sorted int64 index arrays that together cover `range(count)`.

    Raises:
        ValueError: `holdout` is not a count below `count` nor a fraction in (0, 1).
    """
    if isinstance(holdout, float) and 0 < holdout < 1:
        n = max(1, int(round(count * holdout)))
    elif isinstance(holdout, int) and not isinstance(holdout, bool) and 0 <= holdout:
        n = holdout
    else:
        raise ValueError(
            f"val_size must be a count >= 0 or a fraction in (0, 1), received val_size={holdout!r}"
        )
    if n >= count and n > 0:
        raise ValueError(
            f"val_size must leave training examples out of {count}, received val_size={holdout!r}"
        )
    order = np.random.default_rng(seed).permutation(count)
    return np.sort(order[n:]), np.sort(order[:n])
