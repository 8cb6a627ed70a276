"""The batch streams of a folder dataset (`folders.FolderData`, `folders.FolderParts`): PyDatasets
of (uint8 images, one-hot targets), read from the files or from the folder's preprocessed cache,
and over several processes each process's share of every global batch."""

from __future__ import annotations

import keras
import numpy as np

from keras_resnet.data import cache as data_cache
from keras_resnet.data import pipelines
from keras_resnet.data.decode import BadImage
from keras_resnet.data.pipelines import FolderPyDataset, decoder_for
from keras_resnet.training import distributed
from keras_resnet.training.recipe import one_hot


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
    data, split: str, batch_size: int, *, train: bool, seed: int, augment: bool = True
):
    """Batches of (uint8 images, one-hot targets) of one split of `data` (a
    `folders.FolderData`): tf.data on TensorFlow for the
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


class CacheRowBatches(OneHotCacheBatches):
    """`OneHotCacheBatches` over some rows of a cache's split (a part of it, `FolderParts`)."""

    def __init__(self, folder, split, batch_size, *, rows, num_classes, train, seed=0):
        super().__init__(folder, split, batch_size, num_classes=num_classes, train=train, seed=seed)
        self.index = np.intersect1d(self.index, np.asarray(rows))


def part_stream(data, part: str, batch_size: int, *, train: bool, seed: int, augment=True):
    """Batches of (uint8 images, one-hot targets) of one part of `data` (a
    `folders.FolderParts`), as `folder_stream` gives a split:
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
