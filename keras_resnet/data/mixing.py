"""Mixup and CutMix of in-memory training batches: `MixedBatches`, a `keras.utils.PyDataset`
over (images, one-hot targets) arrays that mixes each batch with Keras' own `keras.layers.MixUp`
and `keras.layers.CutMix`.

The layers mix whole batches (each image with another of the batch, targets by the mixed
share), so they run here rather than inside the model, where every image is alone and the
targets are out of reach. When both are on, each batch takes one of the two, as timm's `Mixup`
does (`switch_prob` 0.5). The model's own augmentation (pad-crop, flip, erasing) then runs on
the mixed images.

Each call of a layer costs milliseconds whatever its size (eager operations; on a GPU, a round
trip): called per batch of 256 Fashion-MNIST images on an H200 (JAX), it made an epoch 4.5x
slower (1.39 s -> 6.26 s). So consecutive batches are mixed in one call per layer, up to
`CHUNK_BYTES` of images: a partner is then drawn from those batches rather than from the
image's own batch, which is the same thing for shuffled data (a random training image).
"""

from __future__ import annotations

import contextlib
import math
import threading

import keras
import numpy as np

# Input bytes mixed per call of a layer (see the module docstring); at least one batch.
CHUNK_BYTES = 32 * 2**20


class MixedBatches(keras.utils.PyDataset):
    """Batches of `(images, targets)` in a new seeded order every epoch, mixed when asked.

    With `mixup` and `cutmix` both 0 the batches are the arrays' rows unchanged (in order when
    `shuffle` is False: an evaluation stream of the run's batch size).

    Args:
        images: (N, H, W, C) array, uint8 pixels or floats.
        targets: (N, classes) one-hot (or soft) float targets.
        batch_size: images per batch; the last batch holds the remainder, unless
            `drop_remainder`.
        mixup: Beta alpha of `keras.layers.MixUp` (0: off; timm's default 0.8).
        cutmix: Beta alpha of `keras.layers.CutMix`, in (0, 1] (0: off; timm's default 1.0).
        switch_prob: with both on, the chance that a batch takes CutMix rather than MixUp.
        shuffle: a new order every epoch (seeded by `seed` and the epoch).
        drop_remainder: leave out the last partial batch (training: every step then sees a
            whole batch, one compiled program, and no backend sees a batch of one image, on
            which TensorFlow's oneDNN kernels crashed).
        seed: seeds the order, the choice of mix per batch and the layers.
        shard: (index, count): serve process `index` of `count` its share of every batch
            (data-parallel training over several processes): rows [index * b, (index + 1) * b)
            of the batch, b = batch_size / count, `batch_size` being the global batch. Every
            process draws the same order and mixes whole batches alike, so the processes'
            shares make up the batches of one process. Needs `drop_remainder`.
        **kwargs: `keras.utils.PyDataset`'s (`workers`, `use_multiprocessing`, ...).

    Mixed uint8 images are rounded back to uint8, so that the model is fed as without mixing
    (a quarter of float32's bytes: feeding floats from the host costs a third of a GPU step,
    /work/shared/TRAPS.md); the rounding moves a pixel by at most 0.5 of 255.
    """

    def __init__(
        self,
        images: np.ndarray,
        targets: np.ndarray,
        batch_size: int,
        *,
        mixup: float = 0.0,
        cutmix: float = 0.0,
        switch_prob: float = 0.5,
        shuffle: bool = True,
        drop_remainder: bool = False,
        seed: int = 0,
        shard: tuple[int, int] | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if len(images) != len(targets):
            raise ValueError(
                f"images and targets must have the same length, received {len(images)} "
                f"images and {len(targets)} targets"
            )
        if mixup < 0 or not 0 <= cutmix <= 1:
            raise ValueError(
                f"mixup must be >= 0 and cutmix in [0, 1], received mixup={mixup!r}, "
                f"cutmix={cutmix!r}"
            )
        if shard is not None and (not drop_remainder or batch_size % shard[1]):
            raise ValueError(
                f"a shard of every batch needs drop_remainder and a batch_size that is a "
                f"multiple of the {shard[1]} processes, received batch_size={batch_size}, "
                f"drop_remainder={drop_remainder}"
            )
        self.shard = shard
        self.images = images
        self.targets = np.asarray(targets, dtype="float32")
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.drop_remainder = drop_remainder
        self.seed = int(seed)
        self.switch_prob = float(switch_prob)
        with _local_layers(shard):
            self.mixup = keras.layers.MixUp(alpha=mixup, seed=seed) if mixup else None
            # CutMix samples its alpha uniformly from `factor`: (a, a) fixes it at a.
            self.cutmix = None
            if cutmix:
                self.cutmix = keras.layers.CutMix(factor=(cutmix, cutmix), seed=seed + 1)
        image_bytes = int(np.prod(images.shape[1:])) * images.dtype.itemsize
        self.chunk_batches = max(1, CHUNK_BYTES // max(1, self.batch_size * image_bytes))
        self.epoch = 0
        self.order = self._order()
        self._lock = threading.Lock()  # PyDataset workers may ask for batches concurrently
        self._chunks: dict[int, list] = {}  # chunk -> [images, targets, batches not served]

    @property
    def mixing(self) -> bool:
        return self.mixup is not None or self.cutmix is not None

    def _order(self) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self.images))
        return np.random.default_rng((self.seed, self.epoch)).permutation(len(self.images))

    def __len__(self) -> int:
        if self.drop_remainder:
            return len(self.images) // self.batch_size
        return math.ceil(len(self.images) / self.batch_size)

    def layer_for(self, index: int):
        """The mixing layer of batch `index` this epoch (None: no mixing); seeded, so that it
        does not depend on the order in which workers ask for batches."""
        if self.mixup is None or self.cutmix is None:
            return self.mixup or self.cutmix
        draw = np.random.default_rng((self.seed, self.epoch, index)).random()
        return self.cutmix if draw < self.switch_prob else self.mixup

    def __getitem__(self, index: int):
        if not self.mixing:
            chosen = self.order[index * self.batch_size : (index + 1) * self.batch_size]
            chosen = self._share(chosen)
            return self.images[chosen], self.targets[chosen]
        chunk, offset = divmod(index, self.chunk_batches)
        with self._lock:
            # A chunk is kept until each of its batches is served: fit asks for the batches of
            # a PyDataset in a random order unless given shuffle=False.
            if chunk not in self._chunks:
                size = min(self.chunk_batches, len(self) - chunk * self.chunk_batches)
                self._chunks[chunk] = [*self._mixed_chunk(chunk), size]
            entry = self._chunks[chunk]
            images, targets = entry[0], entry[1]
            entry[2] -= 1
            if entry[2] <= 0:
                del self._chunks[chunk]
        batch = slice(offset * self.batch_size, (offset + 1) * self.batch_size)
        return self._share(images[batch]), self._share(targets[batch])

    def _share(self, batch: np.ndarray) -> np.ndarray:
        """This process's share of a whole batch (its rows, or its images): all of it
        without `shard`."""
        if self.shard is None:
            return batch
        index, count = self.shard
        part = self.batch_size // count
        return batch[index * part : (index + 1) * part]

    def _mixed_chunk(self, chunk: int) -> tuple[np.ndarray, np.ndarray]:
        """The images and targets of the batches of `chunk`, each batch mixed by its layer
        (`layer_for`).

        Each layer mixes the whole chunk and each batch keeps its layer's rows: the calls then
        take one shape (two with the epoch's last chunk), where rows split by layer would take
        a new one every call, and JAX compiles its operations again for every new shape
        (45 s an epoch instead of 1.4 on an H200)."""
        first = chunk * self.chunk_batches
        batches = range(first, min(first + self.chunk_batches, len(self)))
        rows = self.order[first * self.batch_size : batches[-1] * self.batch_size + self.batch_size]
        data = {"images": self.images[rows], "labels": self.targets[rows]}
        mixed = {}
        for layer in (self.mixup, self.cutmix):
            if layer is not None:
                out = layer(data, training=True)
                images = keras.ops.convert_to_numpy(out["images"])
                if data["images"].dtype == np.uint8:
                    images = np.clip(np.rint(images), 0, 255)
                labels = keras.ops.convert_to_numpy(out["labels"]).astype("float32")
                mixed[layer] = (images.astype(data["images"].dtype), labels)
        if len(mixed) == 1:
            return next(iter(mixed.values()))
        sizes = [min(self.batch_size, len(rows) - (b - first) * self.batch_size) for b in batches]
        chosen = np.repeat([self.layer_for(b) is self.cutmix for b in batches], sizes)
        (cut_images, cut_labels), (mix_images, mix_labels) = mixed[self.cutmix], mixed[self.mixup]
        images = np.where(chosen.reshape(-1, *[1] * (cut_images.ndim - 1)), cut_images, mix_images)
        return images, np.where(chosen[:, None], cut_labels, mix_labels)

    def on_epoch_end(self):
        with self._lock:
            self.epoch += 1
            self.order = self._order()
            self._chunks.clear()


@contextlib.contextmanager
def _local_layers(shard):
    """Keras' distribution unset while the mixing layers are made, when the batches are a
    process's share: their seed state then lives on this process's device, and each process
    mixes its batches alone (a state spread over every process's devices would make each
    call a collective step that all processes must run together)."""
    if shard is None or shard[1] == 1:
        yield
        return
    previous = keras.distribution.distribution()
    keras.distribution.set_distribution(None)
    try:
        yield
    finally:
        keras.distribution.set_distribution(previous)


__all__ = ["MixedBatches"]
