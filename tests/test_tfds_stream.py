"""A TFDS dataset of photos (images of no fixed shape) streams through tf.data with the ImageNet
recipe instead of loading into memory. The dataset is a builder defined here and prepared
offline into a temporary data_dir: 3 classes of images 40-90 px on a side whose class is their
dominant colour, so a short run learns them."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import plan_of

tf = pytest.importorskip("tensorflow")
tfds = pytest.importorskip("tensorflow_datasets")
# tf.data feeds Keras on TensorFlow and JAX alike; PyTorch's path through it is the same adapter
# as JAX's, so CI skips it there to stay within its time.
pytestmark = pytest.mark.skipif(
    keras.backend.backend() == "torch", reason="tf.data input: run on TensorFlow and JAX"
)

from keras_resnet import training  # noqa: E402
from keras_resnet.data import tfds_stream  # noqa: E402
from keras_resnet.preprocessing import Preprocessing, crop_array  # noqa: E402
from keras_resnet.training import TrainConfig  # noqa: E402
from keras_resnet.utils import OptionError  # noqa: E402

TRAIN, TEST = 90, 30


def _examples(count: int, seed: int):
    rng = np.random.default_rng(seed)
    for i in range(count):
        label = i % 3
        height, width = rng.integers(40, 91, size=2)
        image = rng.integers(0, 60, size=(height, width, 3), dtype=np.uint8)
        image[..., label] += 150  # the class is the dominant channel
        yield i, {"image": image, "label": label}


class KerasResnetTestPhotos(tfds.core.GeneratorBasedBuilder):
    """Variable-size RGB images in 3 classes (registered as 'keras_resnet_test_photos')."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(None, None, 3)),
                    "label": tfds.features.ClassLabel(names=["red", "green", "blue"]),
                }
            ),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        return {"train": _examples(TRAIN, 0), "test": _examples(TEST, 1)}

    def _generate_examples(self):  # pragma: no cover - the splits give generators directly
        raise NotImplementedError


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("tfds")
    KerasResnetTestPhotos(data_dir=str(folder)).download_and_prepare()
    return str(folder)


@pytest.mark.one_backend("tensorflow")
def test_photos_stream_and_arrays_do_not(data_dir):
    builder = tfds_stream.prepared_builder("keras_resnet_test_photos", data_dir)
    assert tfds_stream.should_stream(builder)  # no fixed image shape
    stream = tfds_stream.open_stream(
        "keras_resnet_test_photos", data_dir, image_size=48, val_size=15, seed=0
    )
    assert stream.counts == {"train": TRAIN - 15, "val": 15, "test": TEST}
    assert stream.class_names == ["red", "green", "blue"]
    images, labels = next(iter(stream.stream("train", 8, train=True, seed=0)))
    assert images.shape == (8, 48, 48, 3) and images.dtype == tf.uint8
    # Every eval batch: whole, center crops; the held-out part and the rest do not overlap.
    test = [x.shape[0] for x, _ in stream.stream("test", 8, train=False)]
    assert sum(test) == TEST and test[-1] == TEST % 8
    train_ids = {bytes(x.numpy().tobytes()) for x, _ in stream.stream("train", 100, train=False)}
    val_ids = {bytes(x.numpy().tobytes()) for x, _ in stream.stream("val", 100, train=False)}
    assert len(train_ids) == 1 and len(val_ids) == 1 and train_ids != val_ids
    # The colour survives the recipe: the labelled channel dominates every crop.
    x, y = next(iter(stream.stream("train", 30, train=True, seed=1)))
    means = x.numpy().reshape(30, -1, 3).mean(1)
    assert (means.argmax(1) == y.numpy()).all()
    assert len(stream.mean) == 3 and 30 < stream.mean[0] < 120


@pytest.mark.one_backend("tensorflow")
def test_eval_crop_is_the_center_of_the_resized_image():
    image = np.zeros((100, 200, 3), np.uint8)
    image[:, 100:] = 255  # right half white
    record = Preprocessing.for_images(72, 3)  # resize 82 x 164, central 72: columns 46..118
    crop = tfds_stream.eval_crop(tf.constant(image), record).numpy()
    assert crop.shape == (72, 72, 3)
    assert crop[:, :33].max() == 0 and crop[:, 39:].min() == 255
    # The Pillow implementation of the record, pixel for pixel (what predict gives).
    np.testing.assert_array_equal(crop, crop_array(image, record))


def test_train_streams_a_tfds_dataset(data_dir, tmp_path):
    config = TrainConfig.create(
        dataset="keras_resnet_test_photos",
        data_dir=data_dir,
        image_size=48,
        width=0.125,
        epochs=3,
        batch_size=16,
        val_size=15,
        learning_rate=0.05,
        warmup_epochs=0.0,
        label_smoothing=0.0,
        verbose=0,
        output_dir=str(tmp_path / "run"),
        tensorboard=False,
        backup=False,
    )
    metrics = training.train(config)
    assert metrics["data_source"] == f"tfds-stream:{data_dir}"
    assert metrics["train_images"] == TRAIN - 15 and metrics["val_images"] == 15
    assert metrics["test_images"] == TEST
    assert metrics["input_shape"] == [48, 48, 3]
    assert list(metrics["tfds_splits"]["val"]) == ["train[:15]", 15]
    assert metrics["test_accuracy_flip_tta"] is None  # streams: no flip TTA
    run = Path(metrics["run_dir"])
    # 48 px: the stem follows the size as for folders (cifar up to 64 px); the crops are the
    # stream's random-resized ones, so the model has no pad-crop layers.
    assert json.loads((run / "config.json").read_text())["model"]["stem"] == "cifar"
    assert [layer.name for layer in keras.saving.load_model(run / "model.keras").layers[:2]] == [
        "image",
        "normalize",
    ]
    model = keras.saving.load_model(run / "model.keras", compile=False)
    assert tuple(model.input_shape) == (None, 48, 48, 3)
    assert (run / "class_names.txt").read_text().split() == ["red", "green", "blue"]


@pytest.mark.one_backend("tensorflow")
def test_streamed_options_are_checked(data_dir, tmp_path):
    base = dict(dataset="keras_resnet_test_photos", data_dir=data_dir, output_dir=str(tmp_path))
    with pytest.raises(OptionError, match="train_size is for datasets in memory"):
        plan_of(TrainConfig.create(**base, train_size=10))
    with pytest.raises(OptionError, match="val_size must leave training examples"):
        plan_of(TrainConfig.create(**base, val_size=TRAIN))
    with pytest.raises(OptionError, match="image_size is for folders"):
        TrainConfig.create(dataset="mnist", image_size=32)
    # The stream cannot mix batches nor train without its crops: refused, not ignored.
    for option, message in [
        (dict(mixup=0.2), "mixup is for datasets in memory, not streamed TFDS datasets"),
        (dict(cutmix=1.0), "received cutmix=1.0"),
        (dict(augment=False), "always trains on random-resized crops"),
    ]:
        config = TrainConfig.create(**base, image_size=48, val_size=15, **option)
        with pytest.raises(OptionError, match=message) as refused:
            plan_of(config)
        assert refused.value.field == next(iter(option))
