"""Training with `model.fit`: the recipe, the callbacks and the run folder.

    >>> from keras_resnet.training import TrainConfig, train
    >>> metrics = train(TrainConfig(epochs=1, width=0.25, train_size=2000))

The recipe (defaults of `TrainConfig`): ResNet-18 with the CIFAR stem, SGD with Nesterov momentum,
linear warmup then cosine decay of the learning rate (`keras.optimizers.schedules.CosineDecay`),
decoupled weight decay kept off batch-norm parameters and biases, label smoothing 0.1, and
augmentation (random crop with padding, horizontal flip, random erasing) as layers inside the model.
The saved model takes raw 0-255 pixels: augmentation (inactive at inference) and the
normalization by the training set's mean and standard deviation are part of it.

A run writes into `saved_models/<run>/` (or `output_dir`):

    config.json        the exact configuration (every default resolved)
    model.keras        the final model (the export helper reads this and metrics.json)
    metrics.json       test accuracy and loss, epochs, wall time, images/s, backend, device, ...
    history.csv        one row per epoch (CSVLogger), with test accuracy and elapsed time
    curves.png         loss and accuracy per epoch
    checkpoints/best.keras   the model of the best validation accuracy (ModelCheckpoint)
    backup/            BackupAndRestore's state; present only while a run is unfinished
    logs/              TensorBoard (when TensorFlow is installed)

Running the same command again after a crash resumes from the last completed epoch.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import platform
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np

from keras_resnet import data as data_lib

OPTIMIZERS = ("sgd", "adamw")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
XLA_MODES = ("auto", "on", "off")
DISTRIBUTE_MODES = ("auto", "off")
PRESETS = ("default", "quick")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; training stopped and the best checkpoint was kept."""


@dataclasses.dataclass
class TrainConfig:
    """Every option of `scripts/train.py` (its flags are these names with dashes).

    `None` means "the default for this setting", resolved by `resolve()` and written resolved to
    the run's config.json.
    """

    # model
    model: str = "resnet18"
    block: str | None = None
    width: float | None = None
    expansion: int | None = None
    stem: str = "cifar"
    stride_in: str | None = None
    groups: int | None = None
    width_per_group: int | None = None
    zero_init_residual: bool = False
    dropout_rate: float = 0.0
    # data
    dataset: str = "fashion_mnist"
    source_dir: str | None = None
    data_dir: str | None = None
    loader: str = "auto"  # 'auto' (TFDS when TensorFlow is installed), 'tfds' or 'idx'
    train_size: int | None = None  # a random subset of the training split (None: all of it)
    test_size: int | None = None
    val_size: int = 5000  # held out of the training split for ModelCheckpoint; 0: none
    augment: bool = True
    crop_padding: int = 4
    flip: bool | None = None  # None: on, except for digits (mnist)
    erasing: float = 0.5
    # optimization
    epochs: int = 100
    batch_size: int = 256
    optimizer: str = "sgd"
    learning_rate: float | None = None  # peak; None: 0.1 per 128 images (SGD), 2e-3 (AdamW)
    momentum: float = 0.9
    weight_decay: float | None = None  # decoupled; None: 5e-3 (SGD), 0.05 (AdamW)
    warmup_epochs: float = 2.0
    label_smoothing: float = 0.1
    # execution
    precision: str = "float32"
    xla: str = "auto"
    steps_per_execution: int = 1
    distribute: str = "auto"
    seed: int = 0
    # output
    output_dir: str | None = None  # None: saved_models/<run_name>
    run_name: str | None = None  # None: <model>_<dataset>
    tensorboard: bool = True
    checkpoint: bool = True  # checkpoints/best.keras (ModelCheckpoint on the monitored accuracy)
    backup: bool = True  # BackupAndRestore after every epoch, which makes a rerun resume
    track_test: bool = True  # evaluate the test split after every epoch (for curves/time-to-X)
    verbose: int = 1  # 1: progress bar, 2: one line per epoch, 0: silent

    def resolve(self) -> TrainConfig:
        """A copy with every `None` default filled in."""
        c = dataclasses.replace(self)
        if c.learning_rate is None:
            c.learning_rate = 0.1 * c.batch_size / 128 if c.optimizer == "sgd" else 2e-3
        if c.weight_decay is None:
            # Keras applies weight decay decoupled: w -= lr * wd * w each step. Under SGD with
            # momentum m, PyTorch-style L2 of 5e-4 acts as 5e-4 / (1 - m) = 5e-3 of this.
            c.weight_decay = 5e-3 if c.optimizer == "sgd" else 0.05
        if c.flip is None:
            c.flip = c.dataset not in ("mnist", "emnist", "kmnist")
        if c.run_name is None:
            c.run_name = f"{c.model}_{c.dataset}"
        if c.output_dir is None:
            c.output_dir = os.path.join("saved_models", c.run_name)
        return c

    def validate(self) -> None:
        """Raises ValueError naming the first bad option and the value received."""
        from keras_resnet.models import MODELS

        def bad(name, expected):
            raise ValueError(f"{name} must be {expected}, received {name}={getattr(self, name)!r}")

        if self.model not in MODELS:
            bad("model", f"one of {sorted(MODELS)}")
        if self.optimizer not in OPTIMIZERS:
            bad("optimizer", f"one of {OPTIMIZERS}")
        if self.precision not in PRECISIONS:
            bad("precision", f"one of {PRECISIONS}")
        if self.xla not in XLA_MODES:
            bad("xla", f"one of {XLA_MODES}")
        if self.distribute not in DISTRIBUTE_MODES:
            bad("distribute", f"one of {DISTRIBUTE_MODES}")
        for name in ("epochs", "batch_size", "steps_per_execution"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                bad(name, "an integer >= 1")
        for name in ("train_size", "test_size"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                bad(name, "an integer >= 1 (or None for the whole split)")
        if not isinstance(self.val_size, int) or self.val_size < 0:
            bad("val_size", "an integer >= 0")
        if self.learning_rate is not None and not self.learning_rate > 0:
            bad("learning_rate", "a number > 0")
        if self.weight_decay is not None and not self.weight_decay >= 0:
            bad("weight_decay", "a number >= 0")
        if not 0 <= self.momentum < 1:
            bad("momentum", "in [0, 1)")
        if not self.warmup_epochs >= 0:
            bad("warmup_epochs", "a number >= 0")
        if not 0 <= self.label_smoothing < 1:
            bad("label_smoothing", "in [0, 1)")
        if not 0 <= self.erasing <= 1:
            bad("erasing", "in [0, 1]")
        if not isinstance(self.crop_padding, int) or self.crop_padding < 0:
            bad("crop_padding", "an integer >= 0")


def preset(name: str) -> dict[str, Any]:
    """Option sets by name: 'default' (the accuracy recipe) and 'quick' (a CPU quick start)."""
    if name == "default":
        return {}
    if name == "quick":
        # Measured on a shared 2-core CPU: see docs/TRAINING.md.
        return dict(
            width=0.25,
            epochs=3,
            batch_size=128,
            augment=False,
            label_smoothing=0.0,
            warmup_epochs=0.5,
            val_size=2000,
            track_test=False,
        )
    raise ValueError(f"preset must be one of {PRESETS}, received preset={name!r}")


# ---------------------------------------------------------------------------------------------
# model, optimizer
# ---------------------------------------------------------------------------------------------


def build_model(config: TrainConfig, dataset: data_lib.Dataset, *, augment: bool | None = None):
    """The training model: raw 0-255 pixels -> augmentation (training only) -> normalization ->
    ResNet -> softmax. Mean and std come from `dataset.x_train`.

    `augment=False` builds the same network without the augmentation layers: the model saved as
    model.keras (same layer names and weights as the trained one; no augmentation layer).
    """
    from keras_resnet.models import get_model

    config = config.resolve()
    inputs = keras.Input(shape=dataset.image_shape, name="image")
    x = inputs
    if config.augment if augment is None else augment:
        layers = data_lib.augmentation(
            dataset.image_shape,
            pad=config.crop_padding,
            flip=config.flip,
            erasing=config.erasing,
            seed=config.seed,
        )
        if layers.layers:
            x = layers(x)
    overrides = {
        k: getattr(config, k)
        for k in ("block", "width", "expansion", "stride_in", "groups", "width_per_group")
        if getattr(config, k) is not None
    }
    return get_model(
        config.model,
        num_classes=dataset.num_classes,
        input_tensor=x,
        stem=config.stem,
        zero_init_residual=config.zero_init_residual,
        dropout_rate=config.dropout_rate,
        normalization=data_lib.channel_stats(dataset.x_train),
        name=f"{config.model}_{dataset.name}",
        **overrides,
    )


def build_optimizer(config: TrainConfig, steps_per_epoch: int, model=None):
    """SGD (Nesterov) or AdamW with linear warmup and cosine decay to 0.

    Weight decay is decoupled (Keras' `weight_decay`), and kept off every variable of rank <= 1
    (batch-norm gamma and beta, biases) with `optimizer.exclude_from_weight_decay`: decaying them
    only fights the normalization (Goyal et al. 2017, sec. 5.1 note; TF Model Garden does the
    same). Pass `model` to set that exclusion.
    """
    config = config.resolve()
    total = config.epochs * steps_per_epoch
    warmup = min(int(round(config.warmup_epochs * steps_per_epoch)), total - 1)
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else config.learning_rate,
        decay_steps=max(total - warmup, 1),
        alpha=0.0,
        warmup_target=config.learning_rate if warmup else None,
        warmup_steps=warmup,
    )
    if config.optimizer == "sgd":
        optimizer = keras.optimizers.SGD(
            schedule,
            momentum=config.momentum,
            nesterov=True,
            weight_decay=config.weight_decay or None,
        )
    else:
        optimizer = keras.optimizers.AdamW(schedule, weight_decay=config.weight_decay)
    if model is not None and config.weight_decay:
        optimizer.exclude_from_weight_decay(
            var_list=[v for v in model.trainable_variables if len(v.shape) <= 1]
        )
    return optimizer


def compile_model(model, config: TrainConfig, steps_per_epoch: int):
    """`model.compile` with the recipe: `build_optimizer`'s optimizer, cross-entropy on one-hot
    targets with label smoothing, accuracy, XLA and steps per execution from `config`."""
    config = config.resolve()
    model.compile(
        optimizer=build_optimizer(config, steps_per_epoch, model),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
        metrics=["accuracy"],
        jit_compile={"auto": "auto", "on": True, "off": False}[config.xla],
        steps_per_execution=config.steps_per_execution,
    )
    return model


def one_hot(labels, num_classes: int) -> np.ndarray:
    """Integer labels as the float32 one-hot targets of the recipe's loss (label smoothing
    needs dense targets)."""
    return np.eye(num_classes, dtype=np.float32)[labels]


# ---------------------------------------------------------------------------------------------
# callbacks
# ---------------------------------------------------------------------------------------------


def _async_safe(callback):
    """Marks a callback as safe for Keras' asynchronous batch-end dispatch, and returns it.

    On JAX (and torch), `fit` hands each batch end to a worker thread, and copies the step's
    logs to the host there, only when every callback defining a batch-end hook says
    `async_safe`. Keras' own ModelCheckpoint, BackupAndRestore and TerminateOnNaN do not say
    it, so one of them makes `fit` wait for every execution's logs before dispatching the
    next: 0.5 ms of a 3.5 ms ResNet-18 step on an H200 (docs/PERFORMANCE.md). The callbacks
    marked here touch nothing but the logs they are given (epoch-frequency checkpoints do
    nothing per batch); an error raised in the worker (a NaN loss) reaches `fit` at the next
    batch end or, at the latest, before any epoch-end callback runs.
    """
    callback.async_safe = True
    return callback


class EpochClock(keras.callbacks.Callback):
    """Adds to each epoch's logs: `train_time_s` (first to last training step, validation
    excluded), `images_per_s`, `elapsed_s` (wall time since the run's start, over every session
    of a resumed run: compilation, evaluation and the earlier epochs' checkpoint saves
    included), `learning_rate`, and with `test_data` the test split's `test_loss` and
    `test_accuracy` (for curves and time-to-accuracy; nothing is selected on them). Placed
    before CSVLogger so that history.csv has them."""

    def __init__(
        self,
        *,
        train_images: int,
        elapsed_before: float = 0.0,
        test_data=None,
        batch_size: int = 256,
    ):
        super().__init__()
        self.train_images = train_images
        self.elapsed_before = elapsed_before
        self.elapsed = elapsed_before
        self.session_start = None
        self.test_data = test_data
        self.batch_size = batch_size
        self.first_epoch: int | None = None
        self.epochs_run = 0

    def on_train_begin(self, logs=None):
        self.session_start = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        if self.session_start is None:
            self.session_start = time.perf_counter()
        if self.first_epoch is None:
            self.first_epoch = epoch
        self.start = self.last_step = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.last_step = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        train_seconds = self.last_step - self.start
        if self.test_data is not None:
            result = self.model.evaluate(
                *self.test_data, batch_size=self.batch_size, verbose=0, return_dict=True
            )
            logs["test_loss"] = float(result["loss"])
            logs["test_accuracy"] = float(result["accuracy"])
        self.elapsed = self.elapsed_before + time.perf_counter() - self.session_start
        self.epochs_run += 1
        logs["train_time_s"] = train_seconds
        logs["images_per_s"] = self.train_images / max(train_seconds, 1e-9)
        logs["elapsed_s"] = self.elapsed
        logs["learning_rate"] = float(np.asarray(self.model.optimizer.learning_rate))


def _previous_elapsed(history_csv: Path, initial_epoch: int) -> float:
    """Wall time already spent by the earlier sessions of a resumed run (from history.csv)."""
    if initial_epoch == 0 or not history_csv.exists():
        return 0.0
    rows = [r for r in csv.DictReader(history_csv.open()) if int(r["epoch"]) < initial_epoch]
    return float(rows[-1]["elapsed_s"]) if rows and rows[-1].get("elapsed_s") else 0.0


def _backup_epoch(backup_dir: Path) -> int:
    """Completed epochs recorded by BackupAndRestore (0 when there is no backup)."""
    path = backup_dir / "training_metadata.json"
    try:
        return int(json.loads(path.read_text())["epoch"])
    except (OSError, ValueError, KeyError):
        return 0


# ---------------------------------------------------------------------------------------------
# environment
# ---------------------------------------------------------------------------------------------


def _tensorboard_available() -> bool:
    """Keras' TensorBoard callback writes with tf.summary: it needs tensorflow and tensorboard."""
    return data_lib.installed("tensorflow") and data_lib.installed("tensorboard")


def accelerators() -> list[Any]:
    """The backend's visible GPUs (or TPUs): JAX devices, TF logical GPUs or torch CUDA indices."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return [d for d in jax.devices() if d.platform != "cpu"]
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.config.list_logical_devices("GPU")
    if backend == "torch":
        import torch

        return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    return []


def device_description() -> str:
    """e.g. '1 x NVIDIA H100 80GB HBM3' or 'cpu (x86_64, 2 cores)'."""
    devices = accelerators()
    if not devices:
        return f"cpu ({platform.machine()}, {os.cpu_count()} cores)"
    backend = keras.backend.backend()
    if backend == "jax":
        name = devices[0].device_kind
    elif backend == "torch":
        import torch

        name = torch.cuda.get_device_name(0)
    else:
        name = devices[0].name
    return f"{len(devices)} x {name}"


def _distribution_scope(config: TrainConfig):
    """Data parallelism over every visible GPU: JAX DataParallel or TF MirroredStrategy.

    Multi-host (JAX): set KERAS_DISTRIBUTION_JOB_ADDRESSES, _NUM_PROCESSES and _PROCESS_ID in
    every process; `keras.distribution.initialize()` is then called here (docs/TRAINING.md).
    """
    import contextlib

    backend = keras.backend.backend()
    if (
        backend == "jax"
        and config.distribute == "auto"
        and os.environ.get("KERAS_DISTRIBUTION_NUM_PROCESSES", "1") not in ("", "1")
    ):
        # Multi-host: joins the other processes (addresses, count and rank from the
        # KERAS_DISTRIBUTION_* variables); list_devices() then spans every host.
        keras.distribution.initialize()
    devices = accelerators() if config.distribute == "auto" else []
    if len(devices) > 1 and backend == "jax":
        keras.distribution.set_distribution(
            keras.distribution.DataParallel(devices=keras.distribution.list_devices())
        )
    elif len(devices) > 1 and backend == "tensorflow":
        import tensorflow as tf

        return tf.distribute.MirroredStrategy().scope(), len(devices)
    return contextlib.nullcontext(), max(len(devices), 1)


# ---------------------------------------------------------------------------------------------
# outputs
# ---------------------------------------------------------------------------------------------


def check_output_dir(path: str | os.PathLike) -> Path:
    """Creates the run folder and checks that it can be written; ValueError naming output_dir."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write_test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        raise ValueError(
            f"output_dir must be a writable folder, received output_dir="
            f"{os.fspath(path)!r} ({error.strerror or error})"
        ) from None
    return path


def read_history(history_csv: str | os.PathLike) -> dict[str, list[float]]:
    """history.csv as columns; for a resumed run, the last row of each epoch wins."""
    rows: dict[int, dict] = {}
    with open(history_csv) as f:
        for row in csv.DictReader(f):
            rows[int(row["epoch"])] = row
    columns: dict[str, list[float]] = {}
    for epoch in sorted(rows):
        for key, value in rows[epoch].items():
            number = float(value) if value not in ("", "NA", None) else math.nan
            columns.setdefault(key, []).append(number)
    return columns


def plot_curves(history: dict[str, list[float]], path: str | os.PathLike, title: str = "") -> None:
    """Loss and accuracy per epoch (train, validation, test) into one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [e + 1 for e in history["epoch"]]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for prefix, label in (("", "train"), ("val_", "validation"), ("test_", "test")):
        if f"{prefix}loss" in history:
            ax_loss.plot(epochs, history[f"{prefix}loss"], label=label)
        if f"{prefix}accuracy" in history:
            ax_acc.plot(epochs, [100 * a for a in history[f"{prefix}accuracy"]], label=label)
    ax_loss.set(xlabel="epoch", ylabel="loss (with label smoothing)", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    if "test_accuracy" in history or "val_accuracy" in history:
        best = max(history.get("test_accuracy", history.get("val_accuracy")))
        ax_acc.set_ylim(max(0, 100 * best - 10), 100)
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _time_to(history: dict[str, list[float]], key: str, target: float) -> dict | None:
    for i, value in enumerate(history.get(key, [])):
        if value >= target:
            return {"epoch": int(history["epoch"][i]) + 1, "elapsed_s": history["elapsed_s"][i]}
    return None


# ---------------------------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------------------------


def _split_validation(dataset: data_lib.Dataset, val_size: int, seed: int):
    x, y = dataset.x_train, dataset.y_train
    if val_size == 0:
        return (x, y), None
    if val_size >= len(x):
        raise ValueError(
            f"val_size must be smaller than the {len(x)} training images, "
            f"received val_size={val_size}"
        )
    order = np.random.default_rng(seed + 1).permutation(len(x))
    val, train = np.sort(order[:val_size]), np.sort(order[val_size:])
    return (x[train], y[train]), (x[val], y[val])


def train(
    config: TrainConfig, *, dataset: data_lib.Dataset | None = None, callbacks: list | None = None
) -> dict[str, Any]:
    """Trains, evaluates on the test split and writes the run folder. Resumes an unfinished run.

    Args:
        config: the options; `None` fields take their defaults (see `TrainConfig.resolve`).
        dataset: use these arrays instead of loading `config.dataset` (tests, custom data).
        callbacks: extra Keras callbacks, appended after the run's own.

    Returns:
        The metrics also written to metrics.json.

    Raises:
        ValueError: a bad option (the message names it).
        DataNotFoundError: no local data for the dataset.
        TrainingDiverged: the loss became NaN/Inf; the best checkpoint and the backup of the last
            completed epoch are kept.
    """
    config.validate()
    config = config.resolve()
    out = check_output_dir(config.output_dir)

    keras.utils.set_random_seed(config.seed)
    # The dtype policy is global in Keras: set for this run, restored afterwards.
    previous_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(config.precision)
    try:
        return _train(config, out, dataset, callbacks)
    finally:
        keras.config.set_dtype_policy(previous_policy)


def _train(config: TrainConfig, out: Path, dataset, callbacks) -> dict[str, Any]:
    if dataset is None:
        dataset = data_lib.load_dataset(
            config.dataset,
            source_dir=config.source_dir,
            data_dir=config.data_dir,
            loader=config.loader,
        )
    dataset = data_lib.subset(dataset, config.train_size, config.test_size, seed=config.seed)
    (x_train, y_train), validation = _split_validation(dataset, config.val_size, config.seed)
    if config.batch_size > len(x_train):
        raise ValueError(
            f"batch_size must be at most the {len(x_train)} training images, "
            f"received batch_size={config.batch_size}"
        )
    steps_per_epoch = math.ceil(len(x_train) / config.batch_size)

    (out / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2) + "\n")
    scope, num_devices = _distribution_scope(config)
    if config.batch_size % num_devices:
        raise ValueError(
            f"batch_size must be a multiple of the {num_devices} devices, "
            f"received batch_size={config.batch_size}"
        )
    with scope:
        model = compile_model(build_model(config, dataset), config, steps_per_epoch)

    backup_dir = out / "backup"
    # Without a backup callback nothing resumes, and an earlier run's backup is left as it is.
    initial_epoch = _backup_epoch(backup_dir) if config.backup else 0
    history_csv = out / "history.csv"
    if initial_epoch == 0 and history_csv.exists():
        history_csv.unlink()  # a fresh run: old rows would mix with the new ones
    test_xy = (dataset.x_test, one_hot(dataset.y_test, dataset.num_classes))
    clock = EpochClock(
        train_images=len(x_train),
        elapsed_before=_previous_elapsed(history_csv, initial_epoch),
        test_data=test_xy if config.track_test else None,
        batch_size=config.batch_size,
    )
    checkpoint = out / "checkpoints" / "best.keras"
    monitor = "val_accuracy" if validation is not None else "accuracy"
    run_callbacks = [
        # raise_error: stop at once, before epoch-end callbacks can save a NaN model or backup.
        _async_safe(keras.callbacks.TerminateOnNaN(raise_error=True)),
        _async_safe(clock),
    ]
    if config.checkpoint:
        checkpoint.parent.mkdir(exist_ok=True)
        run_callbacks.append(
            _async_safe(
                keras.callbacks.ModelCheckpoint(
                    os.fspath(checkpoint), monitor=monitor, mode="max", save_best_only=True
                )
            )
        )
    run_callbacks.append(keras.callbacks.CSVLogger(os.fspath(history_csv), append=True))
    if config.tensorboard and _tensorboard_available():
        run_callbacks.append(
            keras.callbacks.TensorBoard(os.fspath(out / "logs"), write_graph=False, profile_batch=0)
        )
    # Restores weights, optimizer state and epoch when a backup exists; deleted once fit ends
    # normally. Last of the run's callbacks: when it records "epoch N done", the checkpoint and
    # history.csv already hold epoch N, so a crash in between loses no row (a repeated epoch's
    # row is overwritten by its rerun in read_history).
    if config.backup:
        run_callbacks.append(
            _async_safe(
                keras.callbacks.BackupAndRestore(os.fspath(backup_dir), double_checkpoint=True)
            )
        )
    run_callbacks += list(callbacks or [])

    try:
        model.fit(
            x_train,
            one_hot(y_train, dataset.num_classes),
            batch_size=config.batch_size,
            epochs=config.epochs,
            validation_data=(validation[0], one_hot(validation[1], dataset.num_classes))
            if validation
            else None,
            callbacks=run_callbacks,
            shuffle=True,
            verbose=config.verbose,
        )
    except RuntimeError as error:
        if "NaN or Inf loss" not in str(error):
            raise
        epoch = (clock.first_epoch or 0) + clock.epochs_run + 1
        kept = f"The best checkpoint is kept: {checkpoint if checkpoint.exists() else 'none yet'}"
        if config.backup:
            kept += (
                f"; the backup of the last completed epoch ({_backup_epoch(backup_dir)}) is in "
                f"{backup_dir}"
            )
        raise TrainingDiverged(
            f"the loss became NaN/Inf in epoch {epoch}, so training stopped ({error}). "
            f"{kept}. Lower --learning-rate or use --precision float32."
        ) from None

    test = model.evaluate(*test_xy, batch_size=config.batch_size, verbose=0, return_dict=True)
    # model.keras: the network without the augmentation layers, which are inactive at inference
    # anyway; its one custom layer is keras_resnet.layers.BatchNormalization (registered when
    # keras_resnet is imported).
    inference_model = build_model(config, dataset, augment=False)
    for layer in inference_model.layers:
        layer.set_weights(model.get_layer(layer.name).get_weights())
    inference_model.save(out / "model.keras")
    history = read_history(history_csv)
    plot_curves(
        history,
        out / "curves.png",
        title=f"{config.model} on {dataset.name}: test accuracy {100 * test['accuracy']:.2f}%",
    )
    # images/s: the median epoch, so that compilation (epoch 1) does not count.
    images_per_s = float(np.median(history["images_per_s"])) if "images_per_s" in history else None
    best_epoch = int(np.nanargmax(history[monitor])) if monitor in history else None
    metrics = {
        "test_accuracy": float(test["accuracy"]),
        "test_loss": float(test["loss"]),
        "epochs": config.epochs,
        "resumed_from_epoch": clock.first_epoch or 0,
        "epochs_this_session": clock.epochs_run,
        "wall_time_s": history["elapsed_s"][-1] if history.get("elapsed_s") else None,
        "time_to_test_accuracy": {
            f"{t:.3f}": _time_to(history, "test_accuracy", t) for t in (0.90, 0.95, 0.955)
        }
        if config.track_test
        else None,
        "images_per_s": images_per_s,
        "best_checkpoint": None
        if best_epoch is None or not config.checkpoint
        else {
            "monitor": monitor,
            "epoch": best_epoch + 1,
            "value": history[monitor][best_epoch],
            "path": os.fspath(checkpoint),
        },
        "backend": keras.backend.backend(),
        "device": device_description(),
        "num_devices": num_devices,
        "precision": config.precision,
        "keras_version": keras.__version__,
        "dataset": dataset.name,
        "data_source": dataset.source,
        "train_images": len(x_train),
        "val_images": 0 if validation is None else len(validation[0]),
        "test_images": len(dataset.x_test),
        "input_shape": list(dataset.image_shape),
        "class_names": list(dataset.class_names),
        "model": config.model,
        "params": int(model.count_params()),
        "run_dir": os.fspath(out),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics
