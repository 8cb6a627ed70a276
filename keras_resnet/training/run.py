"""`train(config)`: one run, step by step. Each step is a function, so that the order in which
the run folder's files are written is visible in `_run` and easy to change."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import keras
import numpy as np

from keras_resnet import data as data_lib
from keras_resnet.layers import plain_keras_model
from keras_resnet.training.callbacks import (
    EpochClock,
    async_safe,
    backup_epoch,
    previous_elapsed,
)
from keras_resnet.training.config import TrainConfig, TrainingDiverged
from keras_resnet.training.devices import device_description, distribution_scope
from keras_resnet.training.inputs import FitData, fit_data, load_data
from keras_resnet.training.outputs import (
    check_output_dir,
    plot_curves,
    read_history,
    time_to,
    write_json,
)
from keras_resnet.training.recipe import build_model, compile_model, model_config
from keras_resnet.utils import OptionError, atomic_path, installed, keras_globals

CONFIG_FILE = "config.json"
MODEL_FILE = "model.keras"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.csv"
BEST_FILE = os.path.join("checkpoints", "best.keras")
BACKUP_DIR = "backup"


def train(
    config: TrainConfig, *, dataset: data_lib.Dataset | None = None, callbacks: list | None = None
) -> dict[str, Any]:
    """Trains, evaluates on the test split and writes the run folder. Resumes an unfinished run.

    Keras' dtype policy, distribution and image data format are set for the run and restored
    on return and on error.

    Args:
        config: the options; `None` fields take their defaults (see `TrainConfig.resolve`).
        dataset: use these arrays instead of loading `config.dataset` (tests, custom data).
        callbacks: extra Keras callbacks, appended after the run's own.

    Returns:
        The metrics also written to metrics.json.

    Raises:
        OptionError: a bad option (a ValueError; `field` names it).
        DataNotFoundError: no local data for the dataset.
        TrainingDiverged: the loss became NaN/Inf; the best checkpoint and the backup of the last
            completed epoch are kept.
    """
    config.validate()
    config = config.resolve()
    out = check_output_dir(config.output_dir)
    with keras_globals():
        keras.utils.set_random_seed(config.seed)
        keras.config.set_dtype_policy(config.precision)
        # The arrays are NHWC; the augmentation layers read the global format.
        keras.config.set_image_data_format("channels_last")
        return _run(config, out, dataset, callbacks)


def _run(config: TrainConfig, out: Path, dataset, callbacks) -> dict[str, Any]:
    dataset = load_data(config, dataset)
    data = fit_data(config, dataset)
    # The architecture as built (classes, shape, normalization from the data): config.json
    # rebuilds it with build_model(ResNetConfig.from_dict(config["model"])).
    config = dataclasses.replace(config, model=model_config(config, dataset))
    model, num_devices = _build(config, dataset, data)
    # The folder changes only now that the data and the model are there.
    write_json(out / CONFIG_FILE, config.to_dict())
    initial_epoch = backup_epoch(out / BACKUP_DIR) if config.backup else 0
    history_csv = out / HISTORY_FILE
    if initial_epoch == 0 and history_csv.exists():
        history_csv.unlink()  # a fresh run: old rows would mix with the new ones
    clock = EpochClock(
        train_images=data.train_images,
        elapsed_before=previous_elapsed(history_csv, initial_epoch),
        test_data=data.test if config.track_test else None,
        batch_size=config.batch_size,
    )
    _fit(model, config, data, _make_callbacks(config, out, data, clock) + list(callbacks or []))
    test = model.evaluate(*data.test, batch_size=config.batch_size, verbose=0, return_dict=True)
    _save_model(model, config, dataset, out)
    history = read_history(history_csv)
    title = f"{config.model.name} on {dataset.name}: test accuracy {100 * test['accuracy']:.2f}%"
    plot_curves(history, out / "curves.png", title=title)
    metrics = _metrics(config, dataset, data, model, test, history, clock, num_devices)
    write_json(out / METRICS_FILE, metrics)
    return metrics


def _build(config: TrainConfig, dataset, data: FitData):
    """The compiled training model, in the distribution's scope; and the device count."""
    scope, num_devices = distribution_scope(config.distribute)
    if config.batch_size % num_devices:
        raise OptionError(
            "batch_size",
            f"batch_size must be a multiple of the {num_devices} devices, "
            f"received batch_size={config.batch_size}",
        )
    steps_per_epoch = -(-data.train_images // config.batch_size)
    with scope:
        model = compile_model(build_model(config, dataset), config, steps_per_epoch)
    return model, num_devices


def _monitor(data: FitData) -> str:
    return "val_accuracy" if data.validation is not None else "accuracy"


def _make_callbacks(config: TrainConfig, out: Path, data: FitData, clock: EpochClock) -> list:
    """The run's callbacks, in the order their epoch ends must run."""
    callbacks = [
        # raise_error: stop at once, before epoch-end callbacks can save a NaN model or backup.
        async_safe(keras.callbacks.TerminateOnNaN(raise_error=True)),
        async_safe(clock),
    ]
    if config.checkpoint:
        (out / BEST_FILE).parent.mkdir(exist_ok=True)
        checkpoint = keras.callbacks.ModelCheckpoint(
            os.fspath(out / BEST_FILE), monitor=_monitor(data), mode="max", save_best_only=True
        )
        callbacks.append(async_safe(checkpoint))
    callbacks.append(keras.callbacks.CSVLogger(os.fspath(out / HISTORY_FILE), append=True))
    # Keras' TensorBoard callback writes with tf.summary: it needs tensorflow and tensorboard.
    if config.tensorboard and installed("tensorflow") and installed("tensorboard"):
        callbacks.append(
            keras.callbacks.TensorBoard(os.fspath(out / "logs"), write_graph=False, profile_batch=0)
        )
    # Restores weights, optimizer state and epoch when a backup exists; deleted once fit ends
    # normally. Last of the run's callbacks: when it records "epoch N done", the checkpoint and
    # history.csv already hold epoch N, so a crash in between loses no row (a repeated epoch's
    # row is overwritten by its rerun in read_history).
    if config.backup:
        backup = keras.callbacks.BackupAndRestore(
            os.fspath(out / BACKUP_DIR), double_checkpoint=True
        )
        callbacks.append(async_safe(backup))
    return callbacks


def _fit(model, config: TrainConfig, data: FitData, callbacks: list) -> None:
    """`model.fit`; a NaN/Inf loss becomes TrainingDiverged, saying what was kept."""
    try:
        model.fit(
            data.x_train,
            data.y_train,
            batch_size=config.batch_size,
            epochs=config.epochs,
            validation_data=data.validation,
            callbacks=callbacks,
            shuffle=True,
            verbose=config.verbose,
        )
    except RuntimeError as error:
        if "NaN or Inf loss" not in str(error):
            raise
        clock = next(c for c in callbacks if isinstance(c, EpochClock))
        epoch = (clock.first_epoch or 0) + clock.epochs_run + 1
        out = Path(config.output_dir)
        best = out / BEST_FILE
        kept = f"The best checkpoint is kept: {best if best.exists() else 'none yet'}"
        if config.backup:
            kept += (
                f"; the backup of the last completed epoch "
                f"({backup_epoch(out / BACKUP_DIR)}) is in {out / BACKUP_DIR}"
            )
        raise TrainingDiverged(
            f"the loss became NaN/Inf in epoch {epoch}, so training stopped ({error}). "
            f"{kept}. Lower --learning-rate or use --precision float32."
        ) from None


def _save_model(model, config: TrainConfig, dataset, out: Path) -> None:
    """model.keras: the trained network without the augmentation layers (inactive at inference
    anyway) and with Keras' own layers only, so that it loads where keras_resnet is not
    installed. Written whole or not at all."""
    inference = build_model(config, dataset, augment=False)
    for layer in inference.layers:
        layer.set_weights(model.get_layer(layer.name).get_weights())
    with atomic_path(out / MODEL_FILE) as tmp:
        plain_keras_model(inference).save(tmp)


def _metrics(config, dataset, data: FitData, model, test, history, clock, num_devices) -> dict:
    """metrics.json's figures."""
    monitor = _monitor(data)
    # images/s: the median epoch, so that compilation (epoch 1) does not count.
    images_per_s = float(np.median(history["images_per_s"])) if "images_per_s" in history else None
    best_epoch = int(np.nanargmax(history[monitor])) if monitor in history else None
    best = None
    if best_epoch is not None and config.checkpoint:
        best = {
            "monitor": monitor,
            "epoch": best_epoch + 1,
            "value": history[monitor][best_epoch],
            "path": os.fspath(Path(config.output_dir) / BEST_FILE),
        }
    targets = (0.90, 0.95, 0.955)
    return {
        "test_accuracy": float(test["accuracy"]),
        "test_loss": float(test["loss"]),
        "epochs": config.epochs,
        "resumed_from_epoch": clock.first_epoch or 0,
        "epochs_this_session": clock.epochs_run,
        "wall_time_s": history["elapsed_s"][-1] if history.get("elapsed_s") else None,
        "time_to_test_accuracy": {f"{t:.3f}": time_to(history, "test_accuracy", t) for t in targets}
        if config.track_test
        else None,
        "images_per_s": images_per_s,
        "best_checkpoint": best,
        "backend": keras.backend.backend(),
        "device": device_description(),
        "num_devices": num_devices,
        "precision": config.precision,
        "keras_version": keras.__version__,
        "dataset": dataset.name,
        "data_source": dataset.source,
        "train_images": data.train_images,
        "val_images": data.val_images,
        "test_images": len(dataset.x_test),
        "input_shape": list(dataset.image_shape),
        "class_names": list(dataset.class_names),
        "model": config.model.name,
        "params": int(model.count_params()),
        "run_dir": os.fspath(config.output_dir),
    }
