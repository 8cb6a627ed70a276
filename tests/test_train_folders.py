"""Training and tuning from a folder of images: a folder written in the test from Fashion-MNIST
images (PNG and JPEG, class folders), trained by `train()` streamed against the same images in
memory; the run folder's class_names.txt and skipped-file counts; a two-trial search on the
folder; and a missing folder refused by the command line in one line."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import plan_of
from PIL import Image

import keras_resnet
from keras_resnet import data as data_lib
from keras_resnet import training
from keras_resnet.cli import train as train_cli
from keras_resnet.data.folders import folder_dataset
from keras_resnet.training import TrainConfig

REPO = Path(__file__).resolve().parents[1]
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ("tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
           "boot")  # fmt: skip
TRAIN_PER_CLASS, TEST_PER_CLASS = 60, 20

needs_fashion_mnist = pytest.mark.skipif(
    not (FASHION_MNIST / "train-images-idx3-ubyte.gz").exists(),
    reason="Fashion-MNIST IDX files not installed",
)


def write_image_folder(root: Path, per_class: dict[str, int], seed: int = 0) -> Path:
    """root/<split>/<class>/NNNN.png|.jpg from Fashion-MNIST's training images: the first half
    of each class as PNG, the rest as JPEG (quality 95)."""
    x = data_lib.read_idx(FASHION_MNIST / "train-images-idx3-ubyte.gz")
    y = data_lib.read_idx(FASHION_MNIST / "train-labels-idx1-ubyte.gz")
    order = np.random.default_rng(seed).permutation(len(x))
    taken = dict.fromkeys(range(10), 0)
    for split, count in per_class.items():
        for label, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            indices = order[y[order] == label][taken[label] : taken[label] + count]
            taken[label] += count
            for i, index in enumerate(indices):
                image = Image.fromarray(x[index])
                if i < count // 2:
                    image.save(folder / f"{index:05d}.png")
                else:
                    image.save(folder / f"{index:05d}.jpg", quality=95)
    return root


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    """600 training and 200 test images (10 classes), plus one corrupt PNG and one text file
    in the test split."""
    root = tmp_path_factory.mktemp("folder") / "fmnist"
    write_image_folder(root, {"train": TRAIN_PER_CLASS, "test": TEST_PER_CLASS})
    (root / "test" / "bag" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    (root / "test" / "bag" / "notes.txt").write_text("not an image\n")
    return root


def short_run(tmp_path: Path, name: str, **overrides) -> TrainConfig:
    """ResNet-18 of width 1/8, 4 epochs, batch 32: seconds per epoch on a CPU."""
    options = dict(
        width=0.125,
        epochs=4,
        batch_size=32,
        val_size=100,
        augment=False,
        learning_rate=0.05,
        warmup_epochs=0.0,
        label_smoothing=0.0,
        verbose=0,
        output_dir=str(tmp_path / name),
        tensorboard=False,
        track_test=False,
        backup=False,
    )
    options.update(overrides)
    return TrainConfig.create(**options)


@needs_fashion_mnist
@pytest.mark.slow
def test_folder_trains_like_the_same_images_in_memory(image_folder, tmp_path):
    streamed = training.train(
        short_run(tmp_path, "folder", dataset=str(image_folder), image_size=32)
    )
    # The same pixels in memory: the folder's images through the pipeline's evaluation crop,
    # which the small-image recipe trains on (the corrupt file is left out here too).
    arrays = folder_dataset(image_folder, image_size=32)
    assert arrays.x_train.shape == (10 * TRAIN_PER_CLASS, 32, 32, 3)
    in_memory = training.train(short_run(tmp_path, "memory"), dataset=arrays)

    assert streamed["train_images"] == in_memory["train_images"] == 10 * TRAIN_PER_CLASS - 100
    assert streamed["val_images"] == in_memory["val_images"] == 100
    assert streamed["test_images"] == 10 * TEST_PER_CLASS + 1  # the corrupt file is listed
    assert in_memory["test_images"] == 10 * TEST_PER_CLASS
    assert streamed["input_shape"] == [32, 32, 3]
    # Both learn (chance is 0.10), and agree within seed noise: 200 test images give a binomial
    # standard error of about 0.035 per run at these accuracies, and a 4-epoch run on 500 images
    # moves by a few points with the batch order alone (the streams and model.fit shuffle
    # differently), so 0.12 is about two standard deviations of the difference.
    assert streamed["test_accuracy"] > 0.4 and in_memory["test_accuracy"] > 0.4
    assert abs(streamed["test_accuracy"] - in_memory["test_accuracy"]) <= 0.12, (
        streamed["test_accuracy"],
        in_memory["test_accuracy"],
    )

    run = Path(streamed["run_dir"])
    assert (run / "class_names.txt").read_text().splitlines() == sorted(CLASSES)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["skipped"] == 1
    assert metrics["ignored_non_images"] == 1
    assert metrics["first_skipped"][0]["path"].endswith("corrupt.png")
    assert metrics["data_source"] == f"folder:{image_folder}"
    assert metrics["class_names"] == sorted(CLASSES)
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["stem"] == "cifar"  # <= 64 px keeps the small-image stem
    assert config["image_size"] == 32
    # model.keras takes raw pixels at the folder's size.
    model = keras.saving.load_model(run / "model.keras", compile=False)
    assert tuple(model.input_shape) == (None, 32, 32, 3)


@pytest.mark.one_backend("tensorflow")
def test_large_folder_gets_imagenet_stem_and_no_pad_crop(image_folder):
    config = TrainConfig.create(dataset=str(image_folder), image_size=96, width=0.125)
    plan = plan_of(config)
    assert plan.data.image_shape == (96, 96, 3) and not plan.data.small_images
    model = training.build_model(plan)
    assert config.model.stem == "cifar"  # the default, replaced from the image size:
    assert plan.model.stem == "imagenet"
    # The ImageNet recipe's evaluation crop, recorded for export and predict.
    assert plan.preprocessing.crop_mode == "center" and plan.preprocessing.resize_size == 109
    # The pipeline crops and flips: the raw pixels go straight to the normalization.
    assert [layer.name for layer in model.layers[:2]] == ["image", "normalize"]
    small = plan_of(TrainConfig.create(dataset=str(image_folder), image_size=32, width=0.125))
    assert small.preprocessing.crop_mode == "squash"  # small images: whole, as they train
    small_model = training.build_model(small)
    assert small_model.layers[1].name != "normalize"  # the small-image recipe's layers
    argv = ["--dataset", str(image_folder), "--image-size", "96", "--stem", "cifar"]
    typed = train_cli.config_from_args(train_cli.make_parser().parse_args(argv))
    assert plan_of(typed).model.stem == "cifar"  # a stem typed is kept
    assert TrainConfig.create(val_size=0.0).val_size == 0  # --val-size 0 arrives as 0.0
    # Normalization measured on the sampled training images, in pixel units.
    mean, std = plan.model.normalization
    assert len(mean) == 3 and 40 < mean[0] < 120 and 40 < std[0] < 120
    assert plan.preprocessing.mean == mean


@pytest.mark.one_backend("tensorflow")
def test_folder_validation_split_is_the_seeded_split(image_folder):
    config = TrainConfig.create(dataset=str(image_folder), image_size=32, val_size=0.25, seed=3)
    data = plan_of(config).data
    counts = data.folder.counts
    assert counts == {"train": 450, "val": 150, "test": 10 * TEST_PER_CLASS + 1}
    kept, held = data_lib.split(600, 0.25, seed=training.inputs.validation_seed(3))
    assert len(held) == 150 and len(kept) == 450
    defaults = plan_of(TrainConfig(dataset=str(image_folder))).config
    assert defaults.val_size == 0.1 and defaults.image_size == 224
    assert TrainConfig(val_size=5000.0).val_size == 5000  # a flag's float is a count


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(image_size=32), "image_size is for folders"),
        (dict(val_size=1.5), "val_size must be"),
        (dict(freeze_stages=-1), "freeze_stages must be an integer >= 0"),
        (dict(head_epochs=-1), "head_epochs must be an integer >= 0"),
    ],
)
@pytest.mark.one_backend("tensorflow")
def test_folder_and_finetune_options_are_checked(options, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig.create(**options)


@pytest.mark.slow
def test_train_command_refuses_a_missing_folder_in_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "train.py"), "--dataset", "/tmp/nonexistent/dir"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[-1] == (
        "train.py: error: argument --dataset: dataset must be a folder of images or a dataset "
        "name, received dataset='/tmp/nonexistent/dir' (no such folder)"
    )
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "saved_models").exists()  # refused before the run folder is made


@pytest.mark.one_backend("tensorflow")
def test_search_split_is_the_package_split():
    from keras_resnet.tuning.search import search_split

    x = np.arange(100)
    (x_train, _), (x_val, _) = search_split(
        x, x % 10, train_fraction=0.5, validation_fraction=0.2, seed=4
    )
    kept, held = data_lib.split(100, 0.2, seed=4)
    np.testing.assert_array_equal(x_val, held)
    assert len(x_train) == 40 and set(x_train) <= set(kept)
    assert list(x_train) == sorted(x_train)


@needs_fashion_mnist
@pytest.mark.slow
def test_two_trial_search_on_a_folder(image_folder, tmp_path):
    from keras_resnet import tuning

    space = tuning.SearchSpace(
        depths=(18,), block_kinds=("basic",), width_min=0.125, width_max=0.125
    )
    options = tuning.SearchOptions(
        tuner="random",
        max_trials=2,
        max_epochs=1,
        validation_fraction=0.2,
        directory=str(tmp_path / "runs"),
        project_name="folder",
        final_epochs=0,
        train=TrainConfig(dataset=str(image_folder), image_size=32, batch_size=64, verbose=0),
    )
    summary = tuning.run_search(space, options)
    # Streamed: the parts are file lists of train/ less its val_size hold-out (600 - 60), and
    # test/ (with its corrupt file) is never read by the search.
    assert summary["data"]["images"] == {"train": 432, "val": 108}
    assert summary["data"]["skipped"] == 0
    records = tuning.read_trials(Path(summary["project_dir"]))
    assert [r.status for r in records] == ["COMPLETED", "COMPLETED"]
    assert all(r.epochs == 1 and 0 <= r.val_accuracy <= 1 for r in records)
    # The trials' models take the folder's 32 px crops, 3 channels, 10 classes.
    reference = keras_resnet.ResNet18(
        block="basic", width=0.125, stem="cifar", num_classes=10, input_shape=(32, 32, 3)
    )
    assert all(r.params == keras_resnet.count_params(reference) for r in records)


@needs_fashion_mnist
@pytest.mark.one_backend("tensorflow")
def test_folder_without_test_split_reports_validation_accuracy(tmp_path, capsys):
    """No test/: the figure is the validation split's, and is named so: metrics.json has no
    test_accuracy, the command's last line says "validation accuracy (no test split)"."""
    root = write_image_folder(tmp_path / "only_train", {"train": 8})
    argv = [
        "--dataset",
        str(root),
        "--image-size",
        "28",
        "--width",
        "0.125",
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--val-size",
        "0.25",
        "--output-dir",
        str(tmp_path / "run"),
        "--verbose",
        "0",
        "--no-tensorboard",
    ]
    assert train_cli.main(argv) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert "test_accuracy" not in metrics and "test_loss" not in metrics
    assert metrics["evaluated_on"] == "validation" and metrics["test_images"] == 20
    assert metrics["validation_accuracy"] == metrics["accuracy"]
    out = capsys.readouterr().out
    assert "validation accuracy (no test split):" in out and "test accuracy" not in out
    history = (tmp_path / "run" / "history.csv").read_text().splitlines()[0]
    assert "test_accuracy" not in history  # no per-epoch figure under a false name


def write_colours(root: Path, per_class: dict[str, int], brightness: int = 120) -> Path:
    """root/<split>/class<k>/N.png, 20x24 noise below `brightness` with channel k at 250."""
    rng = np.random.default_rng(0)
    for split, count in per_class.items():
        for label in range(3):
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = rng.integers(0, brightness, (20, 24, 3), dtype=np.uint8)
                pixels[..., label] = 250
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


class FailAtEpoch(keras.callbacks.Callback):
    def __init__(self, epoch: int):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError(f"stopped at the start of epoch {epoch}")


@pytest.mark.one_backend("tensorflow")  # the resume check reads files: the same everywhere
def test_resume_on_a_changed_folder_names_the_dataset(tmp_path, capsys):
    """A folder whose images changed between a run's start and its resume: the statistics the
    run took from the data differ, and the command refuses in one line naming --dataset (it
    named --normalization, a flag of another meaning)."""
    folder = write_colours(tmp_path / "colours", {"train": 15, "test": 3})
    argv = [
        "--dataset", str(folder), "--image-size", "16", "--width", "0.125", "--epochs", "2",
        "--batch-size", "16", "--val-size", "0", "--no-tensorboard", "--verbose", "0",
        "--output-dir", str(tmp_path / "run"),
    ]  # fmt: skip
    config = train_cli.config_from_args(train_cli.make_parser().parse_args(argv))
    with pytest.raises(RuntimeError, match="start of epoch 1"):
        training.train(config, callbacks=[FailAtEpoch(1)])  # epoch 0 is in the backup
    write_colours(folder, {"train": 15}, brightness=30)  # the same files, darker
    with pytest.raises(SystemExit) as info:
        train_cli.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("keras-resnet train: error: argument --dataset: cannot resume"), err
    assert "its data changed (the model's normalization" in err, err


def test_a_folder_runs_schedule_decays_to_zero_over_whole_batches(tmp_path):
    """45 training images in batches of 16: the stream gives 2 whole batches an epoch (the last
    13 images are left out), and the learning-rate schedule is laid over those 2 steps, so the
    cosine reaches 0 at the last step. (Over ceil(45 / 16) = 3 steps an epoch it stopped at a
    quarter of the peak.)"""
    write_colours(tmp_path / "colours", {"train": 15, "test": 3})
    config = short_run(
        tmp_path, "run", dataset=str(tmp_path / "colours"), image_size=16, epochs=2,
        batch_size=16, val_size=0, track_test=False,
    )  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metrics = training.train(config)
    # Keras warned "Your input ran out of data; interrupting training" at the end of each
    # evaluation of a folder's test stream on TensorFlow (its length unknown to tf.data).
    assert [str(w.message) for w in caught if "ran out of data" in str(w.message)] == []
    assert metrics["train_images"] == 45 and metrics["steps_per_epoch"] == 2
    history = training.read_history(Path(config.output_dir) / "history.csv")
    assert history["learning_rate"][0] == pytest.approx(0.05 / 2)  # half way down the cosine
    assert history["learning_rate"][-1] == pytest.approx(0.0, abs=1e-7)
