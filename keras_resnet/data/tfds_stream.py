"""Large tensorflow-datasets datasets, streamed with tf.data instead of loaded into memory.

`load_dataset` reads a prepared TFDS dataset into numpy arrays: right for Fashion-MNIST or
CIFAR (the arrays are small and `fit` on arrays is the fastest path), impossible for ImageNet
(1.28 M images, ~190 GB decoded). A dataset streams (`open_stream`) when its images have no fixed
shape (photos: imagenet2012, imagenette, food101, ...) or when its decoded train split would
exceed `STREAM_BYTES`. The stream is TFDS' own `as_dataset` (records read in parallel, files
shuffled) followed by the ImageNet recipe in tf.image ops, as TF Model Garden's ImageNet input
does:

- train: `tf.image.stateless_sample_distorted_bounding_box` with the random-resized-crop
  parameters (area (0.08, 1), aspect ratio (3/4, 4/3), 10 tries, the whole image otherwise),
  bilinear resize to `image_size`, random horizontal flip; a per-element seed from
  `tf.data.Dataset.random` (new draws every epoch); the last partial batch dropped;
- eval: the model's preprocessing record (`keras_resnet.preprocessing`; by default the
  shorter side resized to `floor(image_size / 0.875)`, then the central `image_size` square,
  torchvision's reference recipe), by the same Pillow code as folders and `predict`.

The validation split is held out of `train` with TFDS' split slicing (`train[:N]` /
`train[N:]`): TFDS shuffles examples when it prepares a dataset, so the first N are a random
sample, and the two parts never overlap. TensorFlow only: on JAX or PyTorch without TensorFlow
there is no tf.data (a TFDS dataset prepared as ArrayRecord could be read with grain; not done).
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import numpy as np

from keras_resnet.data.streamed import StreamedSource
from keras_resnet.data.tfds_source import DataNotFoundError, missing_message, tfds_builder
from keras_resnet.preprocessing import Preprocessing, crop_array
from keras_resnet.utils import OptionError

# A train split whose decoded images take more than this streams instead of loading.
STREAM_BYTES = 4 * 1024**3
DEFAULT_IMAGE_SIZE = 224
SCALE = (0.08, 1.0)
RATIO = (3 / 4, 4 / 3)
STATS_SAMPLE = 1000  # train images (eval crops) for the per-channel mean and std


def prepared_builder(name: str, data_dir: str):
    """TFDS' builder of `name` in `data_dir`, prepared, or DataNotFoundError/ValueError."""
    builder = tfds_builder(name, data_dir)
    if not builder.is_prepared():
        raise DataNotFoundError(missing_message(name, data_dir=data_dir))
    return builder


def should_stream(builder) -> bool:
    """Whether a prepared dataset streams: images of no fixed shape, or a train split whose
    decoded images exceed `STREAM_BYTES`."""
    features = builder.info.features
    if "image" not in features or "label" not in features:
        return False  # load_dataset gives the one-line error
    shape = features["image"].shape
    if any(d is None for d in shape):
        return True
    return builder.info.splits["train"].num_examples * math.prod(shape) > STREAM_BYTES


@dataclasses.dataclass
class TfdsStream(StreamedSource):
    """A TFDS dataset as a run streams it (a `StreamedSource`, as a folder's `FolderData`):
    always the ImageNet recipe, in the stream; no cache, no file skipped, tested on 'test'.

    Attributes:
        builder_name, data_dir: the prepared dataset.
        class_names: from the label feature.
        image_size: side of the square crops.
        channels: the model's channel count (1 or 3; images are converted).
        splits: split name ('train', 'val', 'test') -> (TFDS split string, examples).
        mean, std: per-channel, of up to `STATS_SAMPLE` training images' eval crops.
    """

    kind: ClassVar[str] = "streamed TFDS datasets"
    builder_name: str
    data_dir: str
    class_names: list[str]
    image_size: int
    channels: int
    splits: dict[str, tuple[str, int]]
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    preprocessing: Preprocessing | None = None

    @property
    def record(self) -> Preprocessing:
        """The evaluation crops' record (default: the package's recipe for `image_size`)."""
        return self.preprocessing or Preprocessing.for_images(self.image_size, self.channels)

    @property
    def name(self) -> str:
        return self.builder_name

    @property
    def source(self) -> str:
        return f"tfds-stream:{self.data_dir}"

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.image_size, self.image_size, self.channels)

    @property
    def counts(self) -> dict[str, int]:
        return {split: count for split, (_, count) in self.splits.items()}

    def check_options(self, config) -> None:
        """Refuses what the stream cannot honour, rather than ignoring it: mixup and CutMix
        (`StreamedSource.check_options`) and `augment=False` (the training stream always takes
        the random-resized crop and flip)."""
        super().check_options(config)
        if not config.augment:
            raise OptionError(
                "augment",
                "a streamed TFDS dataset always trains on random-resized crops and flips "
                f"(dataset={config.dataset!r}), received augment=False",
            )

    def fit_stream(self, split: str, batch_size: int, *, train: bool, seed: int, augment=True):
        """`stream` with one-hot float32 targets. `augment` does not apply (`check_options`
        refuses augment=False): the training stream always takes the random-resized crop and
        flip."""
        import tensorflow as tf

        n = self.num_classes
        data = self.stream(split, batch_size, train=train, seed=seed)
        return data.map(lambda x, y: (x, tf.one_hot(y, n)))

    def fit_report(self) -> dict:
        return {"image_size": self.image_size, "tfds_splits": dict(self.splits)}

    def stream(self, split: str, batch_size: int, *, train: bool, seed: int = 0):
        """Batches of (uint8 (B, S, S, C), int64 (B,)) of one split (see the module docstring)."""
        import tensorflow as tf
        import tensorflow_datasets as tfds

        builder = tfds.builder(self.builder_name, data_dir=self.data_dir)
        data = builder.as_dataset(
            split=self.splits[split][0],
            as_supervised=True,
            shuffle_files=train,
            read_config=tfds.ReadConfig(shuffle_seed=seed),
        )
        if train:
            data = data.shuffle(16 * batch_size, seed=seed, reshuffle_each_iteration=True)
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        size, channels, record = self.image_size, self.channels, self.record

        def prepare(example, element_seed):
            image, label = example
            image = _to_channels(image, channels)
            if train:
                image = train_crop(image, size, tf.cast(element_seed, tf.int32))
            else:
                image = eval_crop(image, record)
            return image, tf.cast(label, tf.int64)

        data = tf.data.Dataset.zip(data, seeds).map(
            prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=not train
        )
        return data.batch(batch_size, drop_remainder=train).prefetch(tf.data.AUTOTUNE)


def _to_channels(image, channels: int):
    import tensorflow as tf

    if image.shape.rank == 2:
        image = image[..., None]
    have = image.shape[-1]
    if have == 4:
        image = image[..., :3]
        have = 3
    if have == 1 and channels == 3:
        return tf.image.grayscale_to_rgb(image)
    if have == 3 and channels == 1:
        return tf.cast(tf.round(tf.image.rgb_to_grayscale(tf.cast(image, tf.float32))), tf.uint8)
    return image


def _to_uint8(image):
    import tensorflow as tf

    return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)


def train_crop(image, size: int, seed):
    """Random-resized crop (`SCALE`, `RATIO`, 10 tries) and flip of one uint8 HWC image."""
    import tensorflow as tf

    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image),
        bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], shape=(1, 1, 4)),
        seed=seed,
        min_object_covered=0.0,
        aspect_ratio_range=RATIO,
        area_range=SCALE,
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    crop = tf.slice(image, begin, crop_size)
    resized = tf.image.resize(crop, (size, size), method="bilinear", antialias=True)
    flipped = tf.image.stateless_random_flip_left_right(resized, seed=seed[::-1])
    return _to_uint8(flipped)


def eval_crop(image, record: Preprocessing):
    """The record's evaluation crop of one uint8 HWC image: the Pillow implementation of the
    preprocessing contract (`keras_resnet.preprocessing.crop_array`), the pixels `predict`
    gives for the same decoded image."""
    import tensorflow as tf

    crop = tf.numpy_function(lambda x: crop_array(x, record), [image], tf.uint8, stateful=False)
    crop.set_shape((*record.image_size, record.channels))
    return crop


def open_stream(
    name: str,
    data_dir: str,
    *,
    image_size: int | None,
    channels: int = 3,
    val_size: int | float = 0,
    seed: int = 0,
) -> TfdsStream | None:
    """`name` as a `TfdsStream` when it should stream (`should_stream`), else None (load it into
    memory). Raises ValueError/DataNotFoundError for an unknown or unprepared dataset."""
    builder = prepared_builder(name, data_dir)
    if not should_stream(builder):
        return None
    info = builder.info
    label = info.features["label"]
    names = list(getattr(label, "names", None) or [str(i) for i in range(label.num_classes)])
    train_n = info.splits["train"].num_examples
    if isinstance(val_size, float) and 0 < val_size < 1:
        held = max(1, int(round(train_n * val_size)))
    else:
        held = int(val_size)
    if held >= train_n:
        raise ValueError(
            f"val_size must leave training examples out of {train_n}, received val_size={val_size}"
        )
    test_name = "test" if "test" in info.splits else "validation"
    if test_name not in info.splits:
        raise ValueError(f"dataset {name!r} has neither a test nor a validation split")
    splits = {"train": (f"train[{held}:]", train_n - held)}
    if held:
        splits["val"] = (f"train[:{held}]", held)
    splits["test"] = (test_name, info.splits[test_name].num_examples)
    stream = TfdsStream(
        name, data_dir, names, int(image_size or DEFAULT_IMAGE_SIZE), channels, splits
    )
    sample = stream.stream("train", 100, train=False, seed=seed).take(-(-STATS_SAMPLE // 100))
    pixels = np.concatenate([x.numpy().reshape(-1, channels) for x, _ in sample])
    stream.mean = tuple(float(v) for v in pixels.mean(0))
    stream.std = tuple(float(v) for v in pixels.std(0))
    return stream


__all__ = ["STREAM_BYTES", "TfdsStream", "open_stream", "should_stream"]
