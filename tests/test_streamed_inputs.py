"""Streamed inputs: a folder (`FolderData`, and the search's `FolderParts`) and a TFDS stream
(`TfdsStream`) are one `StreamedSource`, which the training code reads without knowing their
type; the folder's normalization is summed image by image (the stacked sample's figures, a
fraction of its memory); best.keras is settled once on every path of a run."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import plan_of
from idx_files import make_idx_folder
from PIL import Image

from keras_resnet import data as data_lib
from keras_resnet import training
from keras_resnet.data import tfds_stream
from keras_resnet.data.pipelines import decoder_for
from keras_resnet.data.streamed import StreamedSource, channel_stats_of
from keras_resnet.training import TrainConfig, inputs
from keras_resnet.training import run as run_module

CLASSES = ("Bag", "Sneaker", "Trouser")


def write_folder(root: Path, n_per_class: int, seed: int = 0) -> Path:
    """`root/<class>/*.png`: 28x28 grey images shaped like Fashion-MNIST's (class k a bright
    stripe at its own columns, over noise), as tests/test_folders.py writes them."""
    rng = np.random.default_rng(seed)
    for k, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True, exist_ok=True)
        images = rng.integers(0, 60, (n_per_class, 28, 28), dtype=np.uint8)
        images[:, 4:24, 6 * k + 4 : 6 * k + 8] = 250
        for i, image in enumerate(images):
            Image.fromarray(image, "L").save(root / name / f"{i:05d}.png")
    return root


@pytest.fixture(scope="module")
def split_folder(tmp_path_factory) -> Path:
    """train/ (8 per class) and test/ (3 per class)."""
    root = tmp_path_factory.mktemp("streamed") / "fmnist"
    write_folder(root / "train", 8)
    write_folder(root / "test", 3, seed=1)
    return root


def folder_plan(folder: Path, **options):
    values = dict(dataset=str(folder), image_size=32, val_size=6, batch_size=4, seed=0)
    values.update(options)
    return plan_of(TrainConfig.create(**values))


def one_batch(stream):
    if isinstance(stream, keras.utils.PyDataset):
        return stream[0]
    x, y = next(iter(stream))
    return np.asarray(x), np.asarray(y)


def check_streamed(plan, *, counts: dict, test_split: str) -> None:
    """The plan's data is a StreamedSource and `fit_data`/`data_report` read it through the
    interface."""
    source, config = plan.data, plan.config
    assert isinstance(source, StreamedSource) and plan.streamed
    assert source.num_classes == len(source.class_names)
    assert len(source.mean) == len(source.std) == source.image_shape[-1]
    assert source.counts == counts
    assert source.test_split == test_split
    data = training.fit_data(plan)
    assert (data.train_images, data.val_images, data.test_images) == (
        counts["train"],
        counts.get("val", 0),
        counts[test_split],
    )
    x, y = one_batch(data.x_train)
    assert x.dtype == np.uint8 and x.shape == (config.batch_size, *source.image_shape)
    assert y.dtype == np.float32 and y.shape == (config.batch_size, source.num_classes)
    np.testing.assert_array_equal(y.sum(axis=1), 1.0)
    x, _ = one_batch(data.test[0])
    assert x.shape[1:] == source.image_shape
    assert inputs.data_report(source, data) == {**source.fit_report(), **source.skipped()}


@pytest.mark.one_backend("tensorflow")
def test_folder_data_and_parts_are_streamed_sources(split_folder):
    plan = folder_plan(split_folder)
    folder = plan.data
    assert type(folder) is inputs.FolderData
    assert (folder.name, folder.source) == ("fmnist", f"folder:{split_folder}")
    assert folder.class_names == list(CLASSES)
    assert folder.image_shape == (32, 32, 3) and folder.small_images
    assert folder.folder.preprocessing == plan.preprocessing  # the pipelines crop by it
    check_streamed(plan, counts={"train": 18, "val": 6, "test": 9}, test_split="test")
    report = inputs.data_report(folder, training.fit_data(plan))
    assert report["test_split"] == "test" and report["image_size"] == 32
    assert report["skipped"] == 0 and report["ignored_non_images"] == 0
    # The search's parts of the training split: a StreamedSource too, with their own counts.
    parts = inputs.folder_parts(folder, {"train": np.arange(12), "val": np.arange(12, 18)})
    assert isinstance(parts, StreamedSource)
    assert parts.counts == parts.part_counts == {"train": 12, "val": 6}
    x, y = one_batch(parts.fit_stream("val", 3, train=False, seed=0))
    assert x.shape == (3, 32, 32, 3) and y.shape == (3, 3)


@pytest.mark.one_backend("tensorflow")
def test_folder_refusals_are_unchanged(split_folder):
    with pytest.raises(ValueError, match=r"mixup is for datasets in memory, not folders"):
        folder_plan(split_folder, mixup=0.2)
    with pytest.raises(ValueError, match=r"batch_size must be at most the 18 training images"):
        folder_plan(split_folder, batch_size=19)


def photos(count: int, seed: int):
    """Examples of a TFDS builder: RGB images of 40-90 px a side whose class is their dominant
    channel (tests/test_tfds_stream.py's builder, under another registered name)."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        label = i % 3
        height, width = rng.integers(40, 91, size=2)
        image = rng.integers(0, 60, size=(height, width, 3), dtype=np.uint8)
        image[..., label] += 150
        yield i, {"image": image, "label": label}


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory) -> str:
    tfds = pytest.importorskip("tensorflow_datasets")

    class KerasResnetStreamedPhotos(tfds.core.GeneratorBasedBuilder):
        """Registered as 'keras_resnet_streamed_photos'."""

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
            return {"train": photos(24, 0), "test": photos(9, 1)}

        def _generate_examples(self):  # pragma: no cover - the splits give generators
            raise NotImplementedError

    folder = tmp_path_factory.mktemp("tfds")
    KerasResnetStreamedPhotos(data_dir=str(folder)).download_and_prepare()
    return str(folder)


@pytest.mark.one_backend("tensorflow")
def test_tfds_stream_is_a_streamed_source(tfds_dir):
    plan = plan_of(
        TrainConfig.create(
            dataset="keras_resnet_streamed_photos",
            data_dir=tfds_dir,
            image_size=32,
            val_size=6,
            batch_size=4,
        )
    )
    stream = plan.data
    assert type(stream) is tfds_stream.TfdsStream
    assert stream.name == "keras_resnet_streamed_photos"
    assert stream.source == f"tfds-stream:{tfds_dir}"
    assert stream.class_names == ["red", "green", "blue"]
    assert stream.image_shape == (32, 32, 3) and not stream.small_images
    assert stream.cache is None and stream.skipped() == {}
    check_streamed(plan, counts={"train": 18, "val": 6, "test": 9}, test_split="test")
    report = inputs.data_report(stream, training.fit_data(plan))
    assert report == {
        "image_size": 32,
        "tfds_splits": {"train": ("train[6:]", 18), "val": ("train[:6]", 6), "test": ("test", 9)},
    }


def test_arrays_are_not_streamed_sources():
    x = np.random.default_rng(0).integers(0, 256, (20, 8, 8, 1), dtype=np.uint8)
    y = np.arange(20) % 2
    arrays = data_lib.Dataset("toy", x[:16], y[:16], x[16:], y[16:], ["a", "b"])
    assert not isinstance(arrays, StreamedSource)
    plan = plan_of(TrainConfig.create(val_size=4, batch_size=4), arrays)
    data = training.fit_data(plan)
    assert not plan.streamed and data.train_images == 12 and data.test_arrays
    assert inputs.data_report(arrays, data) == {}


class ListStream(StreamedSource):
    """A third streamed source, defined outside the package: lists of batches."""

    class_names = ["a", "b"]
    mean, std = (1.0,), (2.0,)

    def __init__(self):
        self.batches = {
            split: [(np.full((2, 8, 8, 1), i, np.uint8), np.eye(2, dtype=np.float32))]
            for i, split in enumerate(("train", "val", "test"))
        }

    name = "lists"
    source = "lists:"
    image_shape = (8, 8, 1)

    @property
    def counts(self):
        return {split: 2 for split in self.batches}

    def fit_stream(self, split, batch_size, *, train, seed, augment=True):
        return self.batches[split]

    def fit_report(self):
        return {"kind": "lists"}


def test_a_new_streamed_source_needs_no_change_in_training():
    """What a maintainer adding a loader writes: a subclass; fit_data, data_report and the
    model's config read it as they read a folder."""
    source = ListStream()
    plan = plan_of(TrainConfig.create(batch_size=2), source)
    data = training.fit_data(plan)
    assert data.x_train is source.batches["train"]
    assert data.validation == (source.batches["val"],)
    assert data.test == (source.batches["test"],)
    assert data.counts == {"train": 2, "val": 2, "test": 2}
    assert inputs.data_report(source, data) == {"kind": "lists"}
    model = plan.model
    assert model.num_classes == 2 and model.input_shape == (8, 8, 1)
    assert model.normalization == ((1.0,), (2.0,))
    with pytest.raises(TypeError, match="abstract"):

        class Incomplete(StreamedSource):
            pass

        Incomplete()


def test_channel_stats_of_equals_the_stacked_figures():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (37, 9, 11, 3), dtype=np.uint8)
    assert channel_stats_of(images) == data_lib.channel_stats(images)  # bit for bit
    assert channel_stats_of(iter(images[:5])) == data_lib.channel_stats(images[:5])
    assert channel_stats_of([]) == ([], [])


@pytest.mark.one_backend("tensorflow")
def test_sample_stats_equal_the_stacked_sample_in_bounded_memory(tmp_path):
    """200 images decoded at 64 px (2.4 MB stacked): the same mean and std as the stacked
    computation within 1e-6, with a traced peak below the stacked array's size (the old code
    held the decoded list and its stack, twice that)."""
    write_folder(tmp_path / "train", 70)
    source = data_lib.open_dataset(tmp_path, image_size=64, channels=3, val_size=10, seed=1)
    paths, _ = source.files["train"]
    assert len(paths) == 200  # under STATS_SAMPLE: every training image is in the sample
    decode = decoder_for(source, train=False)
    stacked = np.stack([decode(p, 0) for p in paths])
    assert stacked.shape == (200, 64, 64, 3)
    flat = stacked.reshape(-1, 3).astype(np.float64)
    expected_mean, expected_std = flat.mean(0), flat.std(0)
    del flat

    tracemalloc.start()
    try:
        mean, std = inputs.sample_stats(source, seed=0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    np.testing.assert_allclose(mean, expected_mean, rtol=1e-6)
    np.testing.assert_allclose(std, expected_std, rtol=1e-6)
    assert (mean, std) == data_lib.channel_stats(stacked)
    assert peak < stacked.nbytes, f"peak {peak} B, stacked sample {stacked.nbytes} B"


# --- best.keras is settled in one place on every path of a run -------------------------------


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs, no `except Exception` handles it."""


class KillAt(keras.callbacks.Callback):
    """Raises Killed when epoch `epoch` begins (the epochs before it are committed)."""

    def __init__(self, epoch: int):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch >= self.epoch:
            raise Killed


@pytest.fixture(scope="module")
def stripes(tmp_path_factory) -> data_lib.Dataset:
    folder = make_idx_folder(tmp_path_factory.mktemp("idx") / "fashion-mnist", 160, 40)
    return data_lib.load_dataset("fashion_mnist", source_dir=folder, loader="idx")


@pytest.fixture
def settle_calls(monkeypatch) -> list:
    """The calls of `settle_best` made by a run: (completed epochs, backup's best model)."""
    calls = []
    original = run_module.settle_best

    def recording(best_file, completed, backup_best=None):
        calls.append((completed, backup_best))
        original(best_file, completed, backup_best)

    monkeypatch.setattr(run_module, "settle_best", recording)
    return calls


def tiny(tmp_path: Path) -> TrainConfig:
    return TrainConfig.create(
        width=0.125,
        epochs=3,
        batch_size=32,
        val_size=32,
        augment=False,
        warmup_epochs=0.0,
        verbose=0,
        output_dir=str(tmp_path / "run"),
        loader="idx",
        tensorboard=False,
    )


@pytest.mark.one_backend("torch")
@pytest.mark.parametrize("path", ["fresh", "resume", "fallback to .bkp"])
def test_best_keras_is_settled_once_on_every_path(tmp_path, stripes, settle_calls, path):
    config = tiny(tmp_path)
    run = Path(config.output_dir)
    best = run / "checkpoints" / "best.keras"
    if path != "fresh":
        with pytest.raises(Killed):  # epochs 0 and 1 committed: the backup has a .bkp
            training.train(config, dataset=stripes, callbacks=[KillAt(2)])
        assert (run / "backup" / "training_metadata.json.bkp").is_file()
        if path == "fallback to .bkp":
            (run / "backup" / "training_metadata.json").write_text("")
        settle_calls.clear()
    with pytest.raises(Killed):  # stopped as training starts: settled by then
        training.train(config, dataset=stripes, callbacks=[KillAt(0)])
    assert len(settle_calls) == 1, settle_calls
    completed, backup_best = settle_calls[0]
    if path == "fresh":
        assert (completed, backup_best) == (0, None)
        assert not best.exists()
        return
    assert completed == {"resume": 2, "fallback to .bkp": 1}[path]
    assert backup_best is not None and backup_best.parent == run / "backup"
    assert best.samefile(backup_best)
