"""Training: a short fit that learns, the optimizer recipe, the run folder, NaN handling, resume
after SIGKILL, and the command line's one-line errors. Tiny widths on a synthetic IDX dataset."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from keras_resnet import data as data_lib
from keras_resnet import training
from keras_resnet.training import TrainConfig

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_data import make_idx_folder  # noqa: E402

BACKEND = keras.backend.backend()


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
    return TrainConfig(**options)


@pytest.fixture(scope="module")
def stripes(tmp_path_factory) -> data_lib.Dataset:
    """500 training and 200 test images; class k is a bright stripe at column 2k+4."""
    folder = make_idx_folder(tmp_path_factory.mktemp("idx") / "fashion-mnist", 500, 200)
    return data_lib.load_dataset("fashion_mnist", source_dir=folder, loader="idx")


def read_csv(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


# --- the recipe ---


def test_config_resolves_defaults():
    config = TrainConfig().resolve()
    assert config.model == "resnet18" and config.stem == "cifar"
    assert config.learning_rate == pytest.approx(0.1 * 256 / 128)
    assert config.weight_decay == pytest.approx(5e-3)  # decoupled; = L2 5e-4 under momentum 0.9
    assert config.output_dir == os.path.join("saved_models", "resnet18_fashion_mnist")
    assert TrainConfig(optimizer="adamw").resolve().weight_decay == pytest.approx(0.05)
    assert TrainConfig(dataset="mnist").resolve().flip is False  # digits are not mirror-symmetric


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("model", "resnet19", "model must be one of"),
        ("optimizer", "rmsprop", "optimizer must be one of"),
        ("precision", "float16", "precision must be one of"),
        ("epochs", 0, "epochs must be an integer >= 1, received epochs=0"),
        ("batch_size", -4, "batch_size must be an integer >= 1"),
        ("label_smoothing", 1.0, "label_smoothing must be in"),
        ("val_size", -1, "val_size must be an integer >= 0"),
    ],
)
def test_config_errors_name_the_option(field, value, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{field: value}).validate()


def test_optimizer_schedule_and_weight_decay_exclusions(stripes):
    config = TrainConfig(width=0.125, epochs=10, warmup_epochs=2, learning_rate=0.4)
    model = training.build_model(config, stripes)
    optimizer = training.build_optimizer(config, steps_per_epoch=100, model=model)
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
    adamw = training.build_optimizer(TrainConfig(optimizer="adamw"), steps_per_epoch=10)
    assert isinstance(adamw, keras.optimizers.AdamW)


def test_model_takes_raw_pixels_and_augments_only_in_training(stripes):
    config = TrainConfig(width=0.125, seed=0)
    model = training.build_model(config, stripes)
    names = [layer.name for layer in model.layers]
    assert names[:3] == ["image", "augment", "normalize"]
    normalize = model.get_layer("normalize")
    mean, std = data_lib.channel_stats(stripes.x_train)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(normalize.mean).ravel(), mean, rtol=1e-6)
    np.testing.assert_allclose(
        np.sqrt(keras.ops.convert_to_numpy(normalize.variance)).ravel(), std, rtol=1e-5
    )
    x = stripes.x_test[:4].astype("float32")
    inference = training.build_model(config, stripes, augment=False)
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
    assert saved_config == json.loads(json.dumps(vars(config.resolve())))
    for name in ("model.keras", "curves.png", "checkpoints/best.keras"):
        assert (run / name).stat().st_size > 0
    assert not (run / "backup").exists()  # removed once the run is complete
    # model.keras: plain Keras layers, raw pixels in, the test accuracy out.
    model = keras.saving.load_model(run / "model.keras")
    assert "augment" not in [layer.name for layer in model.layers]
    predictions = model.predict(stripes.x_test.astype("float32"), verbose=0)
    accuracy = float(np.mean(predictions.argmax(-1) == stripes.y_test))
    assert accuracy == pytest.approx(metrics["test_accuracy"], abs=1e-6)


@pytest.mark.parametrize(
    "precision",
    # bfloat16 is slow on CPU (emulated); the GPU accuracy run uses it on JAX.
    [pytest.param("mixed_bfloat16", marks=pytest.mark.slow), "mixed_float16"],
)
def test_mixed_precision_fit(tmp_path, stripes, precision):
    small = data_lib.subset(stripes, 96, 32)
    config = tiny(tmp_path, precision=precision, epochs=1, val_size=32, xla="off")
    seen = keras.callbacks.LambdaCallback()
    seen.on_train_begin = lambda logs=None: setattr(seen, "optimizer", seen.model.optimizer)
    metrics = training.train(config, dataset=small, callbacks=[seen])
    assert metrics["precision"] == precision and np.isfinite(metrics["test_loss"])
    assert keras.config.dtype_policy().name == "float32"  # restored after the run
    model = keras.saving.load_model(Path(config.output_dir) / "model.keras")
    assert model.get_layer("conv1_conv").compute_dtype == precision.split("_")[1]
    assert model.get_layer("predictions").compute_dtype == "float32"
    # float16 needs loss scaling: Keras wraps the optimizer (bfloat16 has float32's range).
    wrapped = isinstance(seen.optimizer, keras.optimizers.LossScaleOptimizer)
    assert wrapped == (precision == "mixed_float16")


def test_quick_preset():
    options = training.preset("quick")
    assert options["width"] == 0.25 and options["epochs"] == 3 and options["augment"] is False
    assert training.preset("default") == {}
    with pytest.raises(ValueError, match="preset must be one of"):
        training.preset("fast")


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
    assert poison.before is not None and checkpoint.read_bytes() == poison.before
    assert not (Path(config.output_dir) / "model.keras").exists()
    # The best checkpoint still loads and predicts finite probabilities.
    model = keras.saving.load_model(checkpoint)
    assert np.isfinite(model.predict(stripes.x_test[:8].astype("float32"), verbose=0)).all()


# --- the command line ---


def run_script(*args: str, timeout: int = 300, **popen) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "KERAS_BACKEND": BACKEND,
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / "train.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        **popen,
    )


def error_line(result: subprocess.CompletedProcess) -> str:
    """The script's own error line (TensorFlow's import-time log lines aside)."""
    lines = [line for line in result.stderr.splitlines() if line.startswith("train.py: error")]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.mark.skipif(BACKEND == "torch", reason="the flag checks do not depend on the backend")
@pytest.mark.parametrize(
    "args, flag",
    [
        (["--model", "resnet19"], "--model"),
        (["--optimizer", "lamb"], "--optimizer"),
        (["--epochs", "0"], "--epochs"),
        (["--dataset", "no_such_dataset"], "--dataset"),
        (["--batch-size", "1000", "--train-size", "300", "--val-size", "0"], "--batch-size"),
        (["--output-dir", "/proc/no/such/dir"], "--output-dir"),
    ],
)
def test_bad_flags_give_one_line_errors(tmp_path, args, flag, stripes_folder):
    common = ["--source-dir", str(stripes_folder), "--loader", "idx", "--width", "0.125"]
    if "--dataset" in args:
        common.remove("idx"), common.remove("--loader")
    if "--output-dir" not in args:
        common += ["--output-dir", str(tmp_path / "run")]
    result = run_script(*args, *common)
    assert result.returncode == 2
    line = error_line(result)
    assert line.startswith(f"train.py: error: argument {flag}: "), line


@pytest.fixture(scope="module")
def stripes_folder(tmp_path_factory) -> Path:
    return make_idx_folder(tmp_path_factory.mktemp("idx") / "fashion-mnist", 600, 100)


# --- resume after SIGKILL ---


def test_sigkill_then_same_command_resumes(tmp_path, stripes_folder):
    """Kill the process in the middle of epoch 2 (epoch 1's backup written), rerun the same
    command: it continues from the last completed epoch and ends after the same 4 epochs."""
    out = tmp_path / "run"
    command = [
        "--source-dir",
        str(stripes_folder),
        "--loader",
        "idx",
        "--width",
        "0.125",
        "--epochs",
        "4",
        "--batch-size",
        "16",
        "--val-size",
        "100",
        "--no-augment",
        "--learning-rate",
        "0.05",
        "--warmup-epochs",
        "0",
        "--no-tensorboard",
        "--verbose",
        "2",
        "--output-dir",
        str(out),
    ]
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "KERAS_BACKEND": BACKEND,
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    metadata = out / "backup" / "training_metadata.json"
    process = subprocess.Popen(
        [sys.executable, str(REPO / "scripts" / "train.py"), *command],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if json.loads(metadata.read_text())["epoch"] >= 1:
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.02)
        assert process.poll() is None, "the run ended before it could be killed"
        time.sleep(0.3)  # well inside epoch 2 (an epoch of 32 steps takes seconds)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        first_output = process.communicate()[0]
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


def test_elapsed_counts_the_time_between_epochs(tmp_path, stripes):
    """elapsed_s is wall time since the start: time spent after an epoch's clock reading
    (checkpoint saves, a slow callback) shows in the next epoch's reading."""
    training.train(tiny(tmp_path, epochs=2), dataset=stripes, callbacks=[SlowEpochEnd(1.5)])
    rows = list(csv.DictReader((tmp_path / "run" / "history.csv").open()))
    gap = float(rows[1]["elapsed_s"]) - float(rows[0]["elapsed_s"])
    assert gap >= 1.5 + float(rows[1]["train_time_s"])


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
