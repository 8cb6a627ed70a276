"""The two streaming pipelines over a `FolderSource`: tf.data, and Keras' `PyDataset`.

Both decode with the same Pillow code (`decode.recipe_crop`), so a file gives the same pixels,
the same skips and the same 16-bit handling on every backend; evaluation crops follow the
model's preprocessing record (`keras_resnet.preprocessing`), as `keras-resnet predict` does.
TensorFlow's own decoders are not used: inside a tf.data graph a decode error can only be
dropped (`ignore_errors`), never counted nor traced to its file, and `decode_image` neither
draft-decodes nor maps 16-bit PNGs the way predict.py does. Pillow releases the GIL while it
decodes and resizes, so threads scale.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import warnings

import keras
import numpy as np

from keras_resnet.data.decode import BadImage, SkipLog, recipe_crop
from keras_resnet.preprocessing import Preprocessing

# Consecutive unreadable files tolerated in one batch of the PyDataset before giving up.
_MAX_REPLACEMENTS = 64


@dataclasses.dataclass(frozen=True)
class Decoder:
    """One file to one crop; a bad file is recorded in `skip_log` and gives None."""

    root: str
    size: int
    channels: int
    train: bool
    skip_log: SkipLog | None
    record: Preprocessing | None = None

    def __call__(self, relative: bytes, seed: int) -> np.ndarray | None:
        path = os.path.join(self.root, os.fsdecode(relative))
        try:
            return recipe_crop(
                path, self.size, self.channels, train=self.train, seed=seed, record=self.record
            )
        except BadImage as error:
            if self.skip_log is not None:
                self.skip_log.record(path, str(error))
            return None


def decoder_for(source, train: bool, record: Preprocessing | None = None) -> Decoder:
    """The decoder of a folder's files: training crops, or evaluation crops by `record`
    (default: `source.preprocessing` when it has one, else the package's recipe for its image
    size)."""
    record = record or getattr(source, "preprocessing", None)
    return Decoder(
        os.fspath(source.root), source.image_size, source.channels, train, source.skip_log, record
    )


@contextlib.contextmanager
def quiet_end_of_data():
    """Hides Keras' "Your input ran out of data; interrupting training" warning, which
    `evaluate` (and `fit`'s validation) gives at the natural end of every tf.data stream whose
    length tf.data cannot know: a folder's evaluation stream, which leaves out the files that
    do not decode. There the end of the data is the end of the evaluation, not an
    interruption."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Your input ran out of data", UserWarning)
        yield


def _decoded(image, label, ok):
    """tf.data filter: the files that decoded. (Named functions: AutoGraph cannot read two
    lambdas on one line and warned on every run.)"""
    return ok


def _image_and_label(image, label, ok):
    return image, label


def tf_dataset(source, split: str, batch_size: int, *, train: bool, seed: int = 0):
    """A `tf.data.Dataset` of (uint8 (B, S, S, C), int64 (B,)) batches.

    Train: reshuffled every epoch, random-resized crops and flips drawn from a per-element seed
    (`Dataset.random`, new draws every epoch), the last partial batch dropped (static shapes);
    unreadable files are filtered out and logged. Eval: file order, center crops, every image.
    """
    import tensorflow as tf

    paths, labels = source.files[split]
    decode = decoder_for(source, train)
    size, channels = source.image_size, source.channels

    def load(relative, element_seed):
        image = decode(bytes(relative), int(element_seed) % 2**63)
        if image is None:
            return np.zeros((size, size, channels), np.uint8), False
        return np.ascontiguousarray(image), True

    def tf_load(item, element_seed):
        path, label = item
        image, ok = tf.numpy_function(load, [path, element_seed], [tf.uint8, tf.bool])
        image.set_shape((size, size, channels))
        ok.set_shape(())
        return image, label, ok

    data = tf.data.Dataset.from_tensor_slices((paths, labels))
    if train:
        data = data.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    data = tf.data.Dataset.zip(data, seeds)
    data = data.map(tf_load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=not train)
    data = data.filter(_decoded).map(_image_and_label)
    return data.batch(batch_size, drop_remainder=train).prefetch(tf.data.AUTOTUNE)


class FolderPyDataset(keras.utils.PyDataset):
    """A `keras.utils.PyDataset` of (uint8 (B, S, S, C), int64 (B,)) batches, for any backend.

    Batches are built by `workers` threads (processes with `use_multiprocessing=True`). Train:
    the order is a permutation drawn from (seed, epoch), random-resized crops and flips drawn
    from (seed, epoch, batch), the last partial batch dropped; an unreadable file is logged and
    replaced by the next file of the order, so every batch keeps its shape (one XLA program).
    Eval: file order, center crops, the last batch partial.
    """

    def __init__(
        self,
        source,
        split: str,
        batch_size: int,
        *,
        train: bool,
        seed: int = 0,
        workers: int | None = None,
        use_multiprocessing: bool = False,
        max_queue_size: int | None = None,
    ):
        workers = workers or min(16, os.cpu_count() or 1)
        super().__init__(
            workers=workers,
            use_multiprocessing=use_multiprocessing,
            max_queue_size=max_queue_size or 2 * workers,
        )
        self.paths, self.labels = source.files[split]
        self.batch_size = batch_size
        self.train = train
        self.seed = seed
        self.epoch = 0
        self.decode = decoder_for(source, train)
        self._order = (-1, None)

    def __len__(self) -> int:
        n = len(self.paths)
        return n // self.batch_size if self.train else -(-n // self.batch_size)

    def order(self) -> np.ndarray:
        if self._order[0] != self.epoch:  # one permutation per epoch, cached per worker
            n = len(self.paths)
            perm = np.random.default_rng([self.seed, self.epoch]).permutation(n)
            self._order = (self.epoch, perm if self.train else np.arange(n))
        return self._order[1]

    def __getitem__(self, index: int):
        order = self.order()
        start = index * self.batch_size
        stop = min(start + self.batch_size, len(order))
        rng = np.random.default_rng([self.seed, self.epoch, index])
        images, labels = [], []
        position, misses = start, 0
        while len(images) < stop - start:
            i = order[position % len(order)]
            image = self.decode(self.paths[i], int(rng.integers(2**63)))
            position += 1
            if image is None:
                misses += 1
                if misses > _MAX_REPLACEMENTS:
                    raise BadImage(f"over {_MAX_REPLACEMENTS} unreadable files in one batch")
                continue
            images.append(image)
            labels.append(self.labels[i])
        return np.stack(images), np.asarray(labels, np.int64)

    def on_epoch_end(self) -> None:
        self.epoch += 1
