"""Training: a short fit that learns, the optimizer recipe, the run folder, NaN handling, resume
after SIGKILL, portable artifacts, Keras' global state, and the command line (`--config`, one-line
errors). Tiny widths on a synthetic IDX dataset."""

from __future__ import annotations

import csv
import importlib
import json
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
import types
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import plan_of
from idx_files import make_idx_folder

from keras_resnet import data as data_lib
from keras_resnet import training
from keras_resnet.cli import train as train_cli
from keras_resnet.config import ResNetConfig
from keras_resnet.data.mixing import MixedBatches
from keras_resnet.models import build_model as build_resnet
from keras_resnet.training import TrainConfig
from keras_resnet.training import recipe as recipe_lib
from keras_resnet.training.evaluation import flip_tta_accuracy
from keras_resnet.training.outputs import from_data_fields
from keras_resnet.utils import OptionError

REPO = Path(__file__).resolve().parents[1]
BACKEND = keras.backend.backend()


def keras_state() -> tuple:
    """Keras' global settings that a run may change and must restore."""
    return (
        keras.config.dtype_policy().name,
        keras.distribution.distribution(),
        keras.config.image_data_format(),
    )


def tiny(tmp_path: Path, **overrides) -> TrainConfig:
    """A ResNet-18 of width 1/8 (8-64 channels) on 28 px images; seconds per epoch on CPU."""
    options = dict(
        width=0.125,
        epochs=3,
        batch_size=32,
        val_size=100,
        augment=False,
        learning_rate=0.05,
        warmup_epochs=0.0,
        label_smoothing=0.0,
        verbose=0,
        output_dir=str(tmp_path / "run"),
        loader="idx",
        tensorboard=False,
    )
    options.update(overrides)
    return TrainConfig.create(**options)


@pytest.fixture(scope="module")
def stripes(tmp_path_factory) -> data_lib.Dataset:
    """500 training and 200 test images; class k is a bright stripe at column 2k+4."""
    folder = make_idx_folder(tmp_path_factory.mktemp("idx") / "fashion-mnist", 500, 200)
    return data_lib.load_dataset("fashion_mnist", source_dir=folder, loader="idx")


def read_csv(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


# --- the recipe ---


def test_config_resolves_defaults(stripes):
    config = plan_of(TrainConfig(val_size=100), stripes).config
    expected = ResNetConfig.named("resnet18", stem="cifar").to_dict()
    got = config.model.to_dict()
    for key in from_data_fields():  # completed from the data
        expected.pop(key), got.pop(key)
    assert got == expected
    assert config.learning_rate == pytest.approx(0.1 * 256 / 128)
    assert config.weight_decay == pytest.approx(5e-3)  # decoupled; = L2 5e-4 under momentum 0.9
    assert config.output_dir == os.path.join("saved_models", "resnet18_fashion_mnist")
    assert config.normalization == "data"
    adamw = plan_of(TrainConfig(optimizer="adamw", val_size=100), stripes).config
    assert adamw.weight_decay == pytest.approx(0.05)
    # digits are not mirror-symmetric
    assert plan_of(TrainConfig(dataset="mnist", val_size=100), stripes).config.flip is False


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("model", "resnet19", "model must be one of"),
        ("optimizer", "rmsprop", "optimizer must be one of"),
        ("precision", "float16", "precision must be one of"),
        ("epochs", 0, "epochs must be an integer >= 1, received epochs=0"),
        ("batch_size", -4, "batch_size must be an integer >= 1"),
        ("label_smoothing", 1.0, r"label_smoothing must be a number in \[0, 1\)"),
        ("val_size", -1, "val_size must be an integer >= 0"),
        ("warmup_epochs", float("inf"), "warmup_epochs must be a number >= 0, received .*inf"),
        ("width", float("inf"), "width must be a number > 0, received width=inf"),
        ("stem", "big", "stem must be one of"),
        ("no_such_option", 1, "unknown training option"),
    ],
)
@pytest.mark.one_backend("jax")
def test_config_errors_name_the_option(field, value, message):
    with pytest.raises(OptionError, match=message) as info:
        TrainConfig.create(**{field: value})
    assert info.value.field == field


@pytest.mark.one_backend("jax")
def test_config_round_trips_and_reads_the_old_flat_form():
    config = TrainConfig.create(
        model="resnet50", width=0.5, dropout_rate=0.2, epochs=7, run_name="resnet50_fashion_mnist"
    )
    assert config.model.block == "bottleneck" and config.model.stem == "cifar"
    assert config.run_name == "resnet50_fashion_mnist"
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    # config.json as written before the model was a ResNetConfig: run folders still resume.
    old = {**{k: v for k, v in config.to_dict().items() if k != "model"}, "model": "resnet50"}
    old.update(block=None, width=0.5, expansion=None, stem="cifar", stride_in=None, groups=None)
    old.update(width_per_group=None, zero_init_residual=False, dropout_rate=0.2)
    assert TrainConfig.from_dict(old) == config
    # Another architecture by name keeps the other model options.
    other = TrainConfig.create(base=config, model="resnext50_32x4d")
    assert (other.model.groups, other.model.width, other.model.stem) == (32, 0.5, "cifar")
    assert TrainConfig(model="resnet34").model == ResNetConfig.named("resnet34", stem="cifar")


@pytest.mark.one_backend("jax")
def test_split_validation_is_the_seeded_split_of_earlier_runs():
    images, labels = np.arange(50) * 10, np.arange(50)
    (x, y), (x_val, y_val) = training.split_validation(images, labels, 10, seed=3)
    # The held-out images of runs made before the split moved to data.split: resumes agree.
    order = np.random.default_rng(3 + 1).permutation(50)
    np.testing.assert_array_equal(y_val, np.sort(order[:10]))
    np.testing.assert_array_equal(y, np.sort(order[10:]))
    np.testing.assert_array_equal(x, y * 10)
    assert training.split_validation(images, labels, 0, seed=3) == ((images, labels), None)
    with pytest.raises(OptionError, match="val_size must be smaller than the 50 training images"):
        training.split_validation(images, labels, 50, seed=3)


def test_optimizer_schedule_and_weight_decay_exclusions(stripes):
    plan = plan_of(
        TrainConfig.create(
            width=0.125, epochs=10, warmup_epochs=2, learning_rate=0.4, val_size=100
        ),
        stripes,
    )
    model = training.build_model(plan)
    optimizer = training.build_optimizer(plan.config, steps_per_epoch=100, model=model)
    assert isinstance(optimizer, keras.optimizers.SGD) and optimizer.nesterov
    schedule = optimizer._learning_rate  # the schedule object
    lr = [float(keras.ops.convert_to_numpy(schedule(step))) for step in (0, 100, 200, 600, 1000)]
    assert lr[0] == pytest.approx(0.0)
    assert lr[1] == pytest.approx(0.2, rel=1e-5)  # half-way through the warmup
    assert lr[2] == pytest.approx(0.4, rel=1e-5)  # peak
    assert lr[3] == pytest.approx(0.2, rel=1e-5)  # cosine half-way
    assert lr[4] == pytest.approx(0.0, abs=1e-7)
    decayed = {v.path for v in model.trainable_variables if optimizer._use_weight_decay(v)}
    assert "conv1_conv/kernel" in decayed and "fc/kernel" in decayed
    assert not any("_bn/" in p or p.endswith("bias") for p in decayed)
    n_kernels = sum(1 for v in model.trainable_variables if len(v.shape) > 1)
    assert len(decayed) == n_kernels
    adamw_config = plan_of(TrainConfig(optimizer="adamw", val_size=100), stripes).config
    adamw = training.build_optimizer(adamw_config, steps_per_epoch=10)
    assert isinstance(adamw, keras.optimizers.AdamW)


def test_model_takes_raw_pixels_and_augments_only_in_training(stripes):
    plan = plan_of(TrainConfig.create(width=0.125, seed=0, val_size=100), stripes)
    model = training.build_model(plan)
    names = [layer.name for layer in model.layers]
    assert names[:3] == ["image", "augment", "normalize"]
    normalize = model.get_layer("normalize")
    mean, std = data_lib.channel_stats(stripes.x_train)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(normalize.mean).ravel(), mean, rtol=1e-6)
    np.testing.assert_allclose(
        np.sqrt(keras.ops.convert_to_numpy(normalize.variance)).ravel(), std, rtol=1e-5
    )
    x = stripes.x_test[:4].astype("float32")
    inference = training.build_model(plan, augment=False)
    for layer in inference.layers:
        layer.set_weights(model.get_layer(layer.name).get_weights())
    np.testing.assert_allclose(
        model.predict(x, verbose=0), inference.predict(x, verbose=0), atol=1e-6
    )


# --- a short fit ---


def test_short_fit_learns_and_writes_the_run_folder(tmp_path, stripes):
    # Augmentation on, but no shift or flip: the classes here are stripe positions.
    config = tiny(tmp_path, track_test=True, augment=True, flip=False, crop_padding=0)
    metrics = training.train(config, dataset=stripes)
    run = Path(config.output_dir)
    history = read_csv(run / "history.csv")
    losses = [float(row["loss"]) for row in history]
    assert len(history) == 3 and [int(r["epoch"]) for r in history] == [0, 1, 2]
    assert losses[-1] < losses[0]  # the loss falls
    assert metrics["test_accuracy"] > 0.3  # chance is 0.1
    assert metrics["epochs"] == 3 and metrics["resumed_from_epoch"] == 0
    assert metrics["train_images"] == 400 and metrics["val_images"] == 100
    assert metrics["test_images"] == 200 and metrics["input_shape"] == [28, 28, 1]
    assert metrics["class_names"] == stripes.class_names and metrics["backend"] == BACKEND
    assert metrics["images_per_s"] > 0 and metrics["wall_time_s"] > 0
    assert float(history[-1]["test_accuracy"]) == pytest.approx(metrics["test_accuracy"])
    assert json.loads((run / "metrics.json").read_text()) == metrics
    saved_config = json.loads((run / "config.json").read_text())
    resolved = plan_of(config, stripes).config
    built = resolved.model.replace(
        num_classes=10,
        input_shape=(28, 28, 1),
        normalization=tuple(map(tuple, data_lib.channel_stats(stripes.x_train))),
        data_format="channels_last",
    )
    assert TrainConfig.from_dict(saved_config) == TrainConfig.create(base=resolved, model=built)
    # The preprocessing record beside the options: whole 28 px images, the data's statistics.
    record = saved_config["preprocessing"]
    assert record["crop_mode"] == "squash" and record["image_size"] == [28, 28]
    assert record["mean"] == pytest.approx(list(built.normalization[0]))
    for name in ("model.keras", "curves.png", "checkpoints/best.keras"):
        assert (run / name).stat().st_size > 0
    assert not (run / "backup").exists()  # removed once the run is complete
    # model.keras: plain Keras layers, raw pixels in, the test accuracy out.
    model = keras.saving.load_model(run / "model.keras")
    assert "augment" not in [layer.name for layer in model.layers]
    assert not [layer for layer in model.layers if "keras_resnet" in type(layer).__module__]
    predictions = model.predict(stripes.x_test.astype("float32"), verbose=0)
    accuracy = float(np.mean(predictions.argmax(-1) == stripes.y_test))
    assert accuracy == pytest.approx(metrics["test_accuracy"], abs=1e-6)


@pytest.mark.parametrize(
    "precision",
    # bfloat16 is slow on CPU (emulated); the GPU accuracy run uses it on JAX.
    [
        pytest.param("mixed_bfloat16", marks=pytest.mark.slow),
        pytest.param(
            "mixed_float16",
            marks=pytest.mark.skipif(
                BACKEND == "jax",
                reason="float16 is emulated on a CPU by JAX (41 s here); JAX trains in "
                "mixed_bfloat16 on GPUs, the slow case above",
            ),
        ),
    ],
)
def test_mixed_precision_fit(tmp_path, stripes, precision):
    """Also: Keras' global settings are restored when train() returns (on error:
    test_train_restores_keras_globals_on_error)."""
    small = data_lib.subset(stripes, 96, 32)
    config = tiny(tmp_path, precision=precision, epochs=1, val_size=32, xla="off")
    seen = keras.callbacks.LambdaCallback()
    seen.on_train_begin = lambda logs=None: setattr(seen, "optimizer", seen.model.optimizer)
    keras.config.set_image_data_format("channels_first")  # the run works in channels_last
    try:
        before = keras_state()
        metrics = training.train(config, dataset=small, callbacks=[seen])
        assert keras_state() == before
    finally:
        keras.config.set_image_data_format("channels_last")
    assert metrics["precision"] == precision and np.isfinite(metrics["test_loss"])
    model = keras.saving.load_model(Path(config.output_dir) / "model.keras")
    assert model.get_layer("conv1_conv").compute_dtype == precision.split("_")[1]
    assert model.get_layer("predictions").compute_dtype == "float32"
    # float16 needs loss scaling: Keras wraps the optimizer (bfloat16 has float32's range).
    wrapped = isinstance(seen.optimizer, keras.optimizers.LossScaleOptimizer)
    assert wrapped == (precision == "mixed_float16")


@pytest.mark.one_backend("jax")
def test_quick_preset():
    options = training.preset("quick")
    assert options["width"] == 0.25 and options["epochs"] == 3 and options["augment"] is False
    assert training.preset("default") == {}
    with pytest.raises(OptionError, match="preset must be one of"):
        training.preset("fast")


@pytest.mark.one_backend("jax")
def test_batch_larger_than_the_data(tmp_path, stripes):
    with pytest.raises(ValueError, match="batch_size must be at most the 400 training images"):
        training.train(tiny(tmp_path, batch_size=401), dataset=stripes)


# --- NaN: stop with a clear message, keep the best checkpoint ---


class PoisonAtEpoch(keras.callbacks.Callback):
    """Sets the classifier's kernel to NaN when `epoch` begins (after recording the checkpoint)."""

    def __init__(self, epoch: int, checkpoint: Path):
        super().__init__()
        self.epoch, self.checkpoint, self.before = epoch, checkpoint, None

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            # The previous epoch's checkpoint is written in the background: wait for it.
            deadline = time.monotonic() + 120
            while not self.checkpoint.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            self.before = self.checkpoint.read_bytes()
            kernel = self.model.get_layer("fc").kernel
            kernel.assign(np.full(kernel.shape, np.nan, dtype="float32"))


def test_nan_loss_stops_and_keeps_the_best_checkpoint(tmp_path, stripes):
    config = tiny(tmp_path, epochs=3)
    checkpoint = Path(config.output_dir) / "checkpoints" / "best.keras"
    poison = PoisonAtEpoch(1, checkpoint)
    with pytest.raises(training.TrainingDiverged, match="loss became NaN/Inf in epoch 2") as info:
        training.train(config, dataset=stripes, callbacks=[poison])
    assert str(checkpoint) in str(info.value)
    backup = Path(config.output_dir) / "backup"
    assert f"the backup of the last completed epoch (1) is in {backup}" in str(info.value)
    assert (backup / "training_metadata.json").exists()
    assert poison.before is not None and checkpoint.read_bytes() == poison.before
    assert not (Path(config.output_dir) / "model.keras").exists()
    # The best checkpoint still loads and predicts finite probabilities.
    model = keras.saving.load_model(checkpoint)
    assert np.isfinite(model.predict(stripes.x_test[:8].astype("float32"), verbose=0)).all()


class PoisonAtStart(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        kernel = self.model.get_layer("fc").kernel
        kernel.assign(np.full(kernel.shape, np.nan, dtype="float32"))


@pytest.mark.one_backend("jax")  # the message and the folder: the same on every backend
def test_nan_loss_in_the_first_epoch_names_no_backup(tmp_path, stripes):
    """Diverged before any epoch completed: the message says there is nothing to resume
    from (it named a backup folder that did not exist), and the new run's folder is gone."""
    config = tiny(tmp_path, epochs=2)
    with pytest.raises(training.TrainingDiverged, match="in epoch 1") as info:
        training.train(config, dataset=stripes, callbacks=[PoisonAtStart()])
    message = str(info.value)
    assert "no epoch completed, so there is no backup to resume from" in message
    assert "backup of the last completed epoch" not in message and "\n" not in message
    assert not Path(config.output_dir).exists()


# --- the command line ---


@pytest.fixture(scope="module")
def stripes_folder(tmp_path_factory) -> Path:
    return make_idx_folder(tmp_path_factory.mktemp("idx") / "fashion-mnist", 600, 100)


def cli_error(capsys, argv: list[str]) -> str:
    """`keras-resnet train argv` in this process: exit status 2 and one error line."""
    with pytest.raises(SystemExit) as info:
        train_cli.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.one_backend("jax")  # the flag checks do not depend on the backend
@pytest.mark.parametrize(
    "args, flag",
    [
        (["--model", "resnet19"], "--model"),
        (["--optimizer", "lamb"], "--optimizer"),
        (["--epochs", "0"], "--epochs"),
        (["--warmup-epochs", "inf"], "--warmup-epochs"),
        (["--width", "inf"], "--width"),
        (["--width", "0"], "--width"),
        (["--dataset", "no_such_dataset"], "--dataset"),
        (["--batch-size", "1000", "--train-size", "300", "--val-size", "0"], "--batch-size"),
        (["--output-dir", "/proc/no/such/dir"], "--output-dir"),
        (["--config", "/no/such/config.json"], "--config"),
    ],
)
def test_bad_flags_give_one_line_errors(tmp_path, capsys, args, flag, stripes_folder):
    common = ["--source-dir", str(stripes_folder), "--loader", "idx", "--width", "0.125"]
    if "--dataset" in args:
        common.remove("idx"), common.remove("--loader")
    if "--output-dir" not in args:
        common += ["--output-dir", str(tmp_path / "run")]
    line = cli_error(capsys, [*common, *args])
    assert line.startswith(f"keras-resnet train: error: argument {flag}: "), line
    assert not (tmp_path / "run").exists()  # a refused start leaves no folder behind


class FailAtEpochBegin(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        raise RuntimeError(f"stopped at the start of epoch {epoch}")


@pytest.mark.one_backend("jax")  # the run folder's files: the same on every backend
def test_a_run_that_fails_before_an_epoch_is_saved_leaves_no_folder(tmp_path, stripes):
    """config.json and class_names.txt are written before the first epoch; a run that fails
    before it saves one removes the folder it made. A folder that was there before is kept."""
    with pytest.raises(RuntimeError, match="start of epoch 0"):
        training.train(tiny(tmp_path, epochs=1), dataset=stripes, callbacks=[FailAtEpochBegin()])
    assert not (tmp_path / "run").exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    config = tiny(tmp_path, epochs=1, output_dir=str(mine))
    with pytest.raises(RuntimeError, match="start of epoch 0"):
        training.train(config, dataset=stripes, callbacks=[FailAtEpochBegin()])
    assert (mine / "config.json").is_file()


@pytest.mark.one_backend("jax")
def test_bad_config_files_name_the_file(tmp_path, capsys):
    empty, text, bad = tmp_path / "empty.json", tmp_path / "text.json", tmp_path / "bad.json"
    empty.write_text("")
    text.write_text("[1, 2]")
    bad.write_text(json.dumps({"epochs": 0}))
    for path, reason in (
        (empty, "config must be a readable JSON file"),
        (text, "config must hold a JSON object"),
        (bad, "epochs must be an integer >= 1, received epochs=0"),
    ):
        line = cli_error(capsys, ["--config", str(path)])
        assert line.startswith("keras-resnet train: error: argument --config: "), line
        assert str(path) in line and reason in line, line


@pytest.mark.one_backend("jax")
def test_config_file_precedence(tmp_path):
    """defaults < --preset < --config FILE < the flags typed."""
    file = tmp_path / "config.json"
    file.write_text(json.dumps({"epochs": 7, "batch_size": 64, "model": {"width": 0.5}}))
    parser = train_cli.make_parser()
    args = parser.parse_args(["--preset", "quick", "--config", str(file), "--batch-size", "32"])
    config = train_cli.config_from_args(args)
    assert config.epochs == 7  # the file over the preset's 3
    assert config.model.width == 0.5  # the file over the preset's 0.25
    assert config.batch_size == 32  # the flag over the file
    assert config.augment is False and config.label_smoothing == 0.0  # the preset's
    assert config.momentum == 0.9 and config.model.stem == "cifar"  # the defaults
    # A whole run's config.json is the same config again; --model keeps the other options.
    full = TrainConfig.create(
        model="resnet34", width=0.25, epochs=5, output_dir="x", learning_rate=0.2, flip=True
    )
    file.write_text(json.dumps(full.to_dict()))
    assert train_cli.config_from_args(parser.parse_args(["--config", str(file)])) == full
    args = parser.parse_args(["--config", str(file), "--model", "resnet50", "--stem", "imagenet"])
    config = train_cli.config_from_args(args)
    assert (config.model.block, config.model.width, config.model.stem) == (
        "bottleneck",
        0.25,
        "imagenet",
    )
    assert (config.epochs, config.output_dir) == (5, "x")


def run_script(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "KERAS_BACKEND": BACKEND, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / "train.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.one_backend("jax")  # the flag checks do not depend on the backend
def test_script_is_the_same_command(tmp_path):
    """scripts/train.py (a shim over keras_resnet.cli.train): its errors still read
    'train.py: error: argument --flag: ...', exit status 2, no traceback."""
    result = run_script("--epochs", "0", "--output-dir", str(tmp_path / "run"))
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("train.py: error")]
    assert lines == [
        "train.py: error: argument --epochs: epochs must be an integer >= 1, received epochs=0"
    ], result.stderr
    assert "Traceback" not in result.stderr


# --- resume after SIGKILL ---


def output_lines(process: subprocess.Popen) -> queue.Queue:
    """The process's output lines, read by a thread as they come."""
    lines: queue.Queue = queue.Queue()

    def read():
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    return lines


@pytest.mark.slow
def test_sigkill_then_same_command_resumes(tmp_path, stripes_folder):
    """Kill the process once epoch 2 has begun (epoch 1's backup written: epoch-end callbacks
    all run before the next epoch's 'Epoch 2/4' line), rerun the same command: it continues
    from the last completed epoch and ends after the same 4 epochs."""
    out = tmp_path / "run"
    command = [
        *("--source-dir", str(stripes_folder), "--loader", "idx", "--width", "0.125"),
        *("--epochs", "4", "--batch-size", "16", "--val-size", "100", "--no-augment"),
        *("--learning-rate", "0.05", "--warmup-epochs", "0", "--no-tensorboard"),
        *("--verbose", "2", "--output-dir", str(out)),
    ]
    env = {
        **os.environ,
        "KERAS_BACKEND": BACKEND,
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "PYTHONUNBUFFERED": "1",
    }
    metadata = out / "backup" / "training_metadata.json"
    process = subprocess.Popen(
        [sys.executable, str(REPO / "scripts" / "train.py"), *command],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines, seen = output_lines(process), []
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            line = lines.get(timeout=max(deadline - time.monotonic(), 0.1))
            if line is None or line.startswith("Epoch 2/4"):
                break
            seen.append(line)
        assert process.poll() is None, "the run ended before it could be killed"
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    first_output = "".join(seen)
    assert process.returncode == -signal.SIGKILL
    completed = json.loads(metadata.read_text())["epoch"]
    assert 1 <= completed < 4
    assert not (out / "metrics.json").exists()

    result = run_script(*command)
    assert result.returncode == 0, result.stdout + result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["resumed_from_epoch"] == completed  # not 0
    assert metrics["epochs_this_session"] == 4 - completed and metrics["epochs"] == 4
    assert f"Epoch {completed + 1}/4" in result.stdout
    assert "Epoch 1/4" in first_output and "Epoch 1/4" not in result.stdout
    history = read_csv(out / "history.csv")
    assert sorted({int(row["epoch"]) for row in history}) == [0, 1, 2, 3]
    assert not (out / "backup").exists()
    # Wall time adds up over both sessions.
    assert metrics["wall_time_s"] >= float(history[completed - 1]["elapsed_s"])


# --- portable artifacts ---

LOAD_WITHOUT_PACKAGE = textwrap.dedent(
    """
    import sys
    import keras, numpy
    model = keras.saving.load_model(sys.argv[1])
    numpy.save(sys.argv[3], model.predict(numpy.load(sys.argv[2]), verbose=0))
    assert "keras_resnet" not in sys.modules, "keras_resnet was imported"
    print("layers:", len(model.layers))
    """
)


class KeepModel(keras.callbacks.Callback):
    """Keeps a reference to the model being trained."""


@pytest.mark.slow
def test_model_keras_loads_without_keras_resnet(tmp_path, stripes):
    """model.keras of a run loads in a process that never imports keras_resnet, with the
    trained model's outputs (float32: max|diff| <= 1e-6); config.json's model rebuilds the same
    architecture, and the file's weights fit it."""
    small = data_lib.subset(stripes, 300, 64)
    kept = KeepModel()
    config = tiny(tmp_path, width=0.25, epochs=1, val_size=0, augment=True, flip=True)
    training.train(config, dataset=small, callbacks=[kept])
    run = Path(config.output_dir)
    x = small.x_test.astype("float32")
    np.save(tmp_path / "x.npy", x)
    expected = kept.model.predict(x, verbose=0)
    env = {**os.environ, "KERAS_BACKEND": BACKEND, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("PYTHONPATH", None)
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            LOAD_WITHOUT_PACKAGE,
            str(run / "model.keras"),
            str(tmp_path / "x.npy"),
            str(tmp_path / "y.npy"),
        ],
        env=env,
        cwd=tmp_path,  # not the checkout, whose keras_resnet/ would be importable
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    loaded = np.load(tmp_path / "y.npy")
    assert np.max(np.abs(loaded - expected)) <= 1e-6

    saved = json.loads((run / "config.json").read_text())
    rebuilt = build_resnet(ResNetConfig.from_dict(saved["model"]))
    model = keras.saving.load_model(run / "model.keras")
    assert [layer.name for layer in rebuilt.layers] == [layer.name for layer in model.layers]
    assert rebuilt.count_params() == model.count_params()
    rebuilt.set_weights(model.get_weights())
    model.save_weights(tmp_path / "run.weights.h5")
    rebuilt.load_weights(tmp_path / "run.weights.h5")
    np.testing.assert_allclose(rebuilt.predict(x, verbose=0), expected, atol=1e-6)


# --- Keras' global state ---


class Boom(keras.callbacks.Callback):
    """Records Keras' settings during the run, then fails in the first epoch."""

    def on_train_begin(self, logs=None):
        self.during = keras_state()

    def on_epoch_begin(self, epoch, logs=None):
        raise RuntimeError("boom")


def test_train_restores_keras_globals_on_error(tmp_path, stripes):
    """train() sets the dtype policy and a channels_last format for the run (and a
    distribution over several GPUs), and restores each on error as on return (on return:
    test_mixed_precision_fit)."""
    small = data_lib.subset(stripes, 96, 32)
    keras.config.set_image_data_format("channels_first")
    try:
        before = keras_state()
        config = tiny(tmp_path, precision="mixed_float16", epochs=1, val_size=32)
        boom = Boom()
        with pytest.raises(RuntimeError, match="boom"):
            training.train(config, dataset=small, callbacks=[boom])
        assert boom.during[0] == "mixed_float16" and boom.during[2] == "channels_last"
        assert keras_state() == before
        with pytest.raises(OptionError, match="batch_size must be at most"):
            training.train(tiny(tmp_path, batch_size=1000, val_size=32), dataset=small)
        assert keras_state() == before
    finally:
        keras.config.set_image_data_format("channels_last")


@pytest.mark.slow
@pytest.mark.skipif(BACKEND != "jax", reason="keras.distribution is JAX's")
def test_train_restores_the_distribution(tmp_path, stripes, monkeypatch):
    """With several accelerators train() sets a DataParallel distribution for the run (here
    over the one CPU device, with two accelerators pretended), then restores the one before."""
    from keras_resnet.training import devices

    fake = types.SimpleNamespace(device_kind="pretended GPU", platform="gpu")
    monkeypatch.setattr(devices, "accelerators", lambda: [fake, fake])
    seen = Boom()
    seen.on_epoch_begin = lambda epoch, logs=None: None
    before = keras_state()
    training.train(
        tiny(tmp_path, epochs=1, val_size=32),
        dataset=data_lib.subset(stripes, 96, 32),
        callbacks=[seen],
    )
    assert isinstance(seen.during[1], keras.distribution.DataParallel)
    assert keras_state() == before


# --- asynchronous batch ends (no host synchronization per step) ---


class BatchEndThreads(keras.callbacks.Callback):
    """Records the thread of every batch end; itself safe for asynchronous dispatch."""

    async_safe = True

    def __init__(self):
        super().__init__()
        self.threads = set()

    def on_train_batch_end(self, batch, logs=None):
        self.threads.add(threading.get_ident())


@pytest.mark.skipif(BACKEND == "tensorflow", reason="Keras dispatches batch ends inline on TF")
def test_batch_ends_are_dispatched_asynchronously(tmp_path, stripes):
    """Every callback of a run is async-safe, so Keras hands batch ends to its worker thread
    and `fit` never waits for a step's logs; one callback that is not (say a plain
    ModelCheckpoint) would bring every batch end back to the main thread."""
    probe = BatchEndThreads()
    training.train(tiny(tmp_path, epochs=1), dataset=stripes, callbacks=[probe])
    assert probe.threads and threading.get_ident() not in probe.threads


# --- the clock and the optional per-epoch saves ---


class SlowEpochEnd(keras.callbacks.Callback):
    """Spends `seconds` after the run's own epoch-end callbacks, as a slow checkpoint would."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = seconds

    def on_epoch_end(self, epoch, logs=None):
        time.sleep(self.seconds)


@pytest.mark.one_backend("torch")
def test_elapsed_counts_the_time_between_epochs(tmp_path, stripes):
    """elapsed_s is wall time since the start: time spent after an epoch's clock reading
    (checkpoint saves, a slow callback) shows in the next epoch's reading."""
    training.train(tiny(tmp_path, epochs=2), dataset=stripes, callbacks=[SlowEpochEnd(1.5)])
    rows = list(csv.DictReader((tmp_path / "run" / "history.csv").open()))
    gap = float(rows[1]["elapsed_s"]) - float(rows[0]["elapsed_s"])
    assert gap >= 1.5 + float(rows[1]["train_time_s"])


@pytest.mark.one_backend("torch")
def test_without_checkpoint_and_backup(tmp_path, stripes):
    out = tmp_path / "run"
    backup = out / "backup"
    backup.mkdir(parents=True)
    (backup / "earlier.txt").write_text("an earlier run's backup")  # left as it is
    metrics = training.train(
        tiny(tmp_path, epochs=2, checkpoint=False, backup=False), dataset=stripes
    )
    assert not (out / "checkpoints").exists()
    assert metrics["best_checkpoint"] is None and metrics["epochs_this_session"] == 2
    assert sorted(p.name for p in backup.iterdir()) == ["earlier.txt"]
    assert (out / "model.keras").exists() and (out / "history.csv").exists()


# --- recipe levers: EMA of the weights, mixup/CutMix, flip test-time augmentation ---


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("ema", 1.0, r"ema must be a number in \[0, 1\), received ema=1.0"),
        ("ema", -0.5, "received ema=-0.5"),
        ("mixup", -1.0, "mixup must be a number >= 0, received mixup=-1.0"),
        ("cutmix", 1.5, r"cutmix must be a number in \[0, 1\], received cutmix=1.5"),
    ],
)
@pytest.mark.one_backend("jax")
def test_recipe_lever_errors_name_the_option(field, value, message):
    with pytest.raises(OptionError, match=message) as info:
        TrainConfig(**{field: value})
    assert info.value.field == field


def test_ema_optimizer_and_callbacks():
    config = TrainConfig(ema=0.999, learning_rate=0.1, weight_decay=5e-3)
    optimizer = training.build_optimizer(config, steps_per_epoch=10)
    assert optimizer.use_ema and optimizer.ema_momentum == pytest.approx(0.999)
    (swap,) = recipe_lib.training_callbacks(config)
    assert isinstance(swap, keras.callbacks.SwapEMAWeights) and swap.swap_on_epoch
    assert not recipe_lib.training_callbacks(config, swap_on_epoch=False)[0].swap_on_epoch
    plain = TrainConfig(learning_rate=0.1, weight_decay=5e-3)
    assert not training.build_optimizer(plain, steps_per_epoch=10).use_ema
    assert recipe_lib.training_callbacks(TrainConfig()) == []


def recipe_callbacks_in_run(monkeypatch) -> None:
    """The recipe's callbacks first in the run's list (where run.py places them), patched in
    while run.py does not call `training_callbacks` itself."""
    run_module = importlib.import_module("keras_resnet.training.run")
    if hasattr(run_module, "training_callbacks"):
        return
    original = run_module._make_callbacks

    def make_callbacks(config, *args, **kwargs):
        return recipe_lib.training_callbacks(config) + original(config, *args, **kwargs)

    monkeypatch.setattr(run_module, "_make_callbacks", make_callbacks)


class StopAtEpoch(keras.callbacks.Callback):
    """Stops the run when `epoch` begins (the epoch before it is backed up): a kill."""

    def __init__(self, epoch: int):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt


def ema_config(tmp_path: Path, name: str, **overrides) -> TrainConfig:
    # One batch of the whole train part per epoch: the order of the images does not change the
    # step, so a resumed run can agree with an uninterrupted one (fit's shuffle draws differ).
    options = dict(epochs=3, batch_size=400, ema=0.5, learning_rate=0.2, track_test=True)
    options.update(stage_blocks=(1, 1), name="resnet_1-1")  # two stages of one block: fast
    return tiny(tmp_path / name, **{**options, **overrides})


def saved_weights(run: Path) -> list[np.ndarray]:
    return keras.saving.load_model(run / "model.keras").get_weights()


def max_difference(first: list[np.ndarray], second: list[np.ndarray]) -> float:
    return max(float(np.abs(a - b).max()) for a, b in zip(first, second, strict=True))


@pytest.mark.slow  # 20-55 s on the shared 2-core CPU: four short runs
def test_ema_resume_gives_the_uninterrupted_weights(tmp_path, stripes, monkeypatch):
    """A run killed after epoch 2 of 3 and resumed ends with the weights of the run that was
    not interrupted (float32 CPU, |diff| <= 1e-5): the backup holds the average and the raw
    weights, and the resumed fit trains on the raw ones. (After one step the average is the
    raw weights: the kill comes after two, one per epoch.)"""
    recipe_callbacks_in_run(monkeypatch)
    whole = ema_config(tmp_path, "whole")
    training.train(whole, dataset=stripes)
    resumed = ema_config(tmp_path, "resumed")
    with pytest.raises(KeyboardInterrupt):
        training.train(resumed, dataset=stripes, callbacks=[StopAtEpoch(2)])
    assert (Path(resumed.output_dir) / "backup").exists()
    metrics = training.train(resumed, dataset=stripes)
    assert metrics["resumed_from_epoch"] == 2
    expected, got = saved_weights(Path(whole.output_dir)), saved_weights(Path(resumed.output_dir))
    assert max_difference(got, expected) <= 1e-5
    # and the average is not the raw weights: without EMA the run ends elsewhere
    raw = ema_config(tmp_path, "raw", ema=0.0)
    training.train(raw, dataset=stripes)
    assert max_difference(saved_weights(Path(raw.output_dir)), expected) > 1e-3


def test_ema_checkpoint_and_test_see_the_averaged_weights(tmp_path, stripes, monkeypatch):
    """best.keras holds the weights whose validation loss history.csv records (the average),
    and the last epoch's test accuracy is that of model.keras."""
    recipe_callbacks_in_run(monkeypatch)
    config = ema_config(tmp_path, "run", epochs=3, batch_size=100, ema=0.9)
    metrics = training.train(config, dataset=stripes)
    run = Path(config.output_dir)
    history = read_csv(run / "history.csv")
    best = int(np.argmax([float(r["val_accuracy"]) for r in history]))
    (_, _), (x_val, y_val) = training.split_validation(
        stripes.x_train, stripes.y_train, 100, seed=config.seed
    )
    model = keras.saving.load_model(run / "checkpoints" / "best.keras")
    probabilities = model.predict(x_val.astype("float32"), verbose=0)
    loss = float(np.mean(-np.log(probabilities[np.arange(len(y_val)), y_val])))
    assert loss == pytest.approx(float(history[best]["val_loss"]), rel=1e-4)
    assert float(history[-1]["test_accuracy"]) == pytest.approx(metrics["test_accuracy"])


def test_mixup_and_cutmix_train_on_mixed_batches(tmp_path, stripes):
    config = tiny(tmp_path, epochs=1, mixup=0.4, cutmix=1.0, track_test=True)
    data = training.fit_data(plan_of(config, stripes))
    assert isinstance(data.x_train, MixedBatches) and data.x_train.mixing
    assert (data.train_images, data.val_images, data.test_images) == (400, 100, 200)
    assert len(data.x_train) == 400 // 32  # whole batches: the last partial one dropped
    assert len(data.validation[0]) == 4  # batches of 32, not fit's default
    metrics = training.train(config, dataset=stripes)
    assert metrics["train_images"] == 400 and metrics["val_images"] == 100
    assert 0 <= metrics["test_accuracy"] <= 1 and np.isfinite(metrics["test_loss"])
    saved = json.loads((Path(config.output_dir) / "config.json").read_text())
    assert (saved["mixup"], saved["cutmix"], saved["ema"]) == (0.4, 1.0, 0.0)
    # both off: the same whole batches, unmixed
    plain = training.fit_data(plan_of(tiny(tmp_path), stripes))
    assert isinstance(plain.x_train, MixedBatches) and not plain.x_train.mixing
    assert plain.fit_arguments()["shuffle"] is False  # the batches are shuffled per epoch


def test_flip_tta_equals_accuracy_for_a_flip_invariant_model(stripes):
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(4, 3),
            keras.layers.GlobalAveragePooling2D(),  # the mean forgets left and right
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    x, y = stripes.x_test[:64].astype("float32"), stripes.y_test[:64]
    # Kernels symmetric left-right: the flipped image's feature map is the flipped map.
    kernel, bias = model.layers[0].get_weights()
    model.layers[0].set_weights([(kernel + kernel[:, ::-1]) / 2, bias])
    plain = float(np.mean(model.predict(x, verbose=0).argmax(-1) == y))
    assert flip_tta_accuracy(model, x, y, batch_size=16) == pytest.approx(plain, abs=1e-12)
    one_hot = np.eye(10, dtype="float32")[y]
    assert flip_tta_accuracy(model, x, one_hot, batch_size=16) == pytest.approx(plain, abs=1e-12)


def test_flip_tta_differs_on_a_crafted_case():
    """Two-pixel images (left L, right R), logits (L, 3R - L): class 1 iff 3R > 2L; with the
    flip the mean of the two softmaxes picks class 1 whenever L + R > 0. Image (1, 0.5),
    label 1: wrong alone, right with TTA; image (1, 2), label 1: right either way."""
    model = keras.Sequential(
        [
            keras.Input((1, 2, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(2, use_bias=False, activation="softmax"),
        ]
    )
    model.layers[-1].set_weights([np.array([[1.0, -1.0], [0.0, 3.0]], "float32")])
    x = np.array([[1.0, 0.5], [1.0, 2.0]], "float32").reshape(2, 1, 2, 1)
    y = np.array([1, 1])
    assert float(np.mean(model.predict(x, verbose=0).argmax(-1) == y)) == 0.5
    assert flip_tta_accuracy(model, x, y, batch_size=1) == 1.0
    logits = keras.Sequential([keras.Input((1, 2, 1)), *model.layers[:-1]])
    logits.add(keras.layers.Dense(2, use_bias=False))
    logits.layers[-1].set_weights(model.layers[-1].get_weights())
    assert flip_tta_accuracy(logits, x, y, batch_size=2, from_logits=True) == 1.0
