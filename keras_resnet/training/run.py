"""`train(config)`: one run, step by step. Each step is a function, so that the order in which
the run folder's files are written is visible in `_run` and easy to change."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
from pathlib import Path
from typing import Any

import keras
import numpy as np

from keras_resnet import data as data_lib
from keras_resnet.data import gpu_crop
from keras_resnet.data.streamed import StreamedSource
from keras_resnet.layers import plain_keras_model
from keras_resnet.training.callbacks import (
    METADATA_FILE,
    EpochClock,
    RunState,
    async_safe,
    backup_epoch,
    history_rows,
    history_text,
    previous_elapsed,
    remove_leftovers,
    restore_backup,
    retire_backup,
    settle_best,
)
from keras_resnet.training.config import TrainConfig, TrainingDiverged
from keras_resnet.training.devices import device_description, distribution_scope, process_count
from keras_resnet.training.evaluation import flip_tta_accuracy
from keras_resnet.training.inputs import (
    FitData,
    data_report,
    fit_data,
    load_data,
    write_class_names,
)
from keras_resnet.training.outputs import (
    check_output_dir,
    check_same_run,
    finished_metrics,
    plot_curves,
    read_history,
    time_to,
    write_json,
)
from keras_resnet.training.recipe import (
    build_model,
    compile_model,
    model_config,
    prepare_finetuning,
    training_callbacks,
)
from keras_resnet.utils import (
    OptionError,
    atomic_path,
    installed,
    keras_globals,
    one_line,
    write_text_atomic,
)

CONFIG_FILE = "config.json"
MODEL_FILE = "model.keras"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.csv"
BEST_FILE = os.path.join("checkpoints", "best.keras")
BACKUP_DIR = "backup"


def train(
    config: TrainConfig, *, dataset: data_lib.Dataset | None = None, callbacks: list | None = None
) -> dict[str, Any]:
    """Trains, evaluates on the test split and writes the run folder. Resumes an unfinished run;
    a finished one (metrics.json written, backup retired) is left as it is: one line says so
    and its metrics are returned. `config.restart` trains either from epoch 0 again.

    Keras' dtype policy, distribution and image data format are set for the run and restored
    on return and on error.

    Args:
        config: the options; `None` fields take their defaults (see `TrainConfig.resolve`).
        dataset: use these arrays instead of loading `config.dataset` (tests, custom data).
        callbacks: extra Keras callbacks, appended after the run's own.

    Returns:
        The metrics also written to metrics.json (a finished run's: read from it).

    Raises:
        OptionError: a bad option (a ValueError; `field` names it).
        DataNotFoundError: no local data for the dataset.
        TrainingDiverged: the loss became NaN/Inf; the best checkpoint and the backup of the last
            completed epoch are kept.
    """
    config.validate()
    config = config.resolve()
    finished = None if config.restart else _finished_run(config)
    if finished is not None:
        return finished
    out = check_output_dir(config.output_dir)
    with keras_globals():
        keras.utils.set_random_seed(config.seed)
        keras.config.set_dtype_policy(config.precision)
        # The arrays are NHWC; the augmentation layers read the global format.
        keras.config.set_image_data_format("channels_last")
        return _run(config, out, dataset, callbacks)


def _run(config: TrainConfig, out: Path, dataset, callbacks) -> dict[str, Any]:
    dataset = load_data(config, dataset, log_dir=out)  # a folder logs skipped files there
    data = fit_data(config, dataset)
    # The architecture as built (classes, shape, normalization from the data): config.json
    # rebuilds it with build_model(ResNetConfig.from_dict(config["model"])).
    config = dataclasses.replace(config, model=model_config(config, dataset))
    model, num_devices = _build(config, dataset, data)
    # Read-only: a refused or unreadable resume leaves the folder as it was.
    initial_epoch, rows, backup_best = _restore(model, config, out)
    try:
        # The folder changes only now that the data, the model and its state are there.
        if config.restart:
            retire_backup(out / BACKUP_DIR)  # else its .bkp would outlive the new run's start
        if initial_epoch == 0:
            # A new run: an older run's metrics.json would mark the folder finished.
            (out / METRICS_FILE).unlink(missing_ok=True)
        # restart=False: `--config RUN/config.json` or the same options continue this run.
        write_json(out / CONFIG_FILE, dataclasses.replace(config, restart=False).to_dict())
        write_class_names(out, dataset)
        return _train_and_write(
            model,
            config,
            out,
            dataset,
            data,
            (initial_epoch, rows, backup_best),
            callbacks,
            num_devices,
        )
    except OSError as error:  # a full disk, a folder gone read-only: no traceback
        if not _write_error(error, out):
            raise
        raise OptionError(
            "output_dir",
            f"cannot write the run folder {out}: {one_line(error.strerror or error)} "
            f"({error.filename or 'a file in it'}); the files of the last completed epoch "
            f"are kept: make room and run the same command again to resume",
        ) from None


def _write_error(error: OSError, out: Path) -> bool:
    """Whether `error` is the run folder failing to take a file (h5py's messages carry the
    reason but no errno)."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG):
        return True
    if error.filename and Path(os.fsdecode(error.filename)).resolve().is_relative_to(out.resolve()):
        return True
    return "No space left on device" in str(error)


def _restore(model, config: TrainConfig, out: Path) -> tuple[int, list[dict], Path | None]:
    """The completed epochs and their history rows of an unfinished run, its state loaded into
    `model`, and the best epoch's model in its backup; (0, [], None) for a new run (or
    `restart`). Refuses a resume with changed options. Changes no file."""
    backup_dir = out / BACKUP_DIR
    if not config.backup or config.restart:
        return 0, [], None
    started = any((backup_dir / name).exists() for name in (METADATA_FILE, METADATA_FILE + ".bkp"))
    if started and (out / CONFIG_FILE).exists():
        check_same_run(
            out / CONFIG_FILE,
            config.to_dict(),
            normalize=lambda values: TrainConfig.from_dict(values).to_dict(),
        )
    epoch, rows, best = restore_backup(model, backup_dir)
    if rows is None:  # a backup written by Keras' BackupAndRestore: rows from history.csv
        rows = history_rows(out / HISTORY_FILE, epoch)
    return epoch, rows, best


# The model's fields that `model_config` takes from the data.
DATA_FIELDS = ("num_classes", "input_shape", "normalization", "data_format")


def _finished_run(config: TrainConfig) -> dict | None:
    """A finished run's metrics.json, once the options are checked against its config.json
    (OptionError naming a changed option), after one line saying so; None when the run is not
    finished. Reads only: the data is not loaded, so the model's fields it decides are the
    run's own (the options they follow from are compared)."""
    out = Path(config.output_dir)
    metrics = finished_metrics(out / METRICS_FILE, out / BACKUP_DIR)
    if metrics is None:
        return None
    config_file = out / CONFIG_FILE
    try:
        old = TrainConfig.from_dict(json.loads(config_file.read_text())).model
        derived = {name: getattr(old, name) for name in DATA_FIELDS}
        if config.is_folder and config.auto_stem:
            derived["stem"] = old.stem
        config = dataclasses.replace(config, model=config.model.replace(**derived))
    except (OSError, ValueError, TypeError):
        pass  # check_same_run says that config.json cannot be read
    check_same_run(
        config_file,
        config.to_dict(),
        normalize=lambda values: TrainConfig.from_dict(values).to_dict(),
    )
    accuracy = metrics.get("test_accuracy")
    accuracy = f"{100 * accuracy:.2f}%" if isinstance(accuracy, (int, float)) else "unknown"
    print(
        f"run in {out} already finished: test accuracy {accuracy}, "
        f"{metrics.get('epochs')} epochs; pass --restart to train it again"
    )
    return metrics


def _train_and_write(model, config, out, dataset, data, state, callbacks, num_devices) -> dict:
    """Trains the epochs left, then writes model.keras, curves.png, metrics.json; the backup
    is removed last, so that a kill before lets the rerun finish without training again.

    `state` is `_restore`'s (completed epochs, their history rows, the best epoch's model in
    the backup); (0, [], None) for a new run."""
    initial_epoch, rows, backup_best = state
    history_csv = out / HISTORY_FILE
    # history.csv agrees with the backup: rows of epochs it does not hold are trained again.
    if initial_epoch:
        write_text_atomic(history_csv, history_text(rows))
    elif history_csv.exists():
        history_csv.unlink()  # a fresh run: old rows would mix with the new ones
    if config.checkpoint:
        # The one place best.keras is settled, on every path: a new run drops an older run's
        # pending best; a resume (also one fallen back to the .bkp) installs the best model
        # the restored backup names, after history.csv holds that backup's rows.
        settle_best(out / BEST_FILE, initial_epoch, backup_best)
    remove_leftovers(out, out / BEST_FILE.split(os.sep)[0], out / BACKUP_DIR)
    clock = EpochClock(
        train_images=data.train_images,
        elapsed_before=previous_elapsed(history_csv, initial_epoch),
        test_data=data.test if config.track_test else None,
        batch_size=config.batch_size,
    )
    run_callbacks = _make_callbacks(config, out, data, clock, rows)
    if initial_epoch < config.epochs:
        _fit(model, config, data, run_callbacks + list(callbacks or []), initial_epoch)
    else:  # killed after the last epoch: only the final files are missing
        clock.first_epoch = initial_epoch
    test = model.evaluate(*data.test, batch_size=config.batch_size, verbose=0, return_dict=True)
    if config.flip and not data.streamed:  # flip TTA: reported beside the plain figure
        test["flip_tta_accuracy"] = flip_tta_accuracy(model, *data.test, config.batch_size)
    _save_model(model, config, dataset, out)
    history = read_history(history_csv)
    title = f"{config.model.name} on {dataset.name}: test accuracy {100 * test['accuracy']:.2f}%"
    plot_curves(history, out / "curves.png", title=title)
    metrics = _metrics(config, dataset, data, model, test, history, clock, num_devices)
    write_json(out / METRICS_FILE, metrics)
    if config.backup:
        retire_backup(out / BACKUP_DIR)
    return metrics


def _build(config: TrainConfig, dataset, data: FitData):
    """The compiled training model, in the distribution's scope; and the device count."""
    scope, num_devices = distribution_scope(config.distribute)
    if data.streamed and process_count() > 1:
        # Each process would read every batch of the stream: the global batch would repeat
        # its images process after process. Refused rather than trained wrongly.
        raise OptionError(
            "dataset",
            f"a folder is not trained over several processes yet (the streams are not sharded "
            f"per process; KERAS_DISTRIBUTION_NUM_PROCESSES={process_count()}): train it on "
            f"one host, which uses all of its GPUs; received dataset={config.dataset!r}",
        )
    if config.batch_size % num_devices:
        raise OptionError(
            "batch_size",
            f"batch_size must be a multiple of the {num_devices} devices, "
            f"received batch_size={config.batch_size}",
        )
    steps_per_epoch = -(-data.train_images // config.batch_size)
    with scope:
        model = build_model(config, dataset)
        # A resumed run takes its weights from the backup: no head-only warm-up again.
        resumed = (
            config.backup
            and not config.restart
            and backup_epoch(Path(config.output_dir) / BACKUP_DIR) > 0
        )
        prepare_finetuning(model, config, data, warm_up=not resumed)
        if isinstance(dataset, StreamedSource) and dataset.cache is not None:
            # Cache batches are squashed uint8 images and their original sizes: the
            # random-resized crop (training) or the stored center crop (evaluation) runs first.
            model = gpu_crop.training_model(model, seed=config.seed)
        model = compile_model(model, config, steps_per_epoch)
    return model, num_devices


def _monitor(data: FitData) -> str:
    return "val_accuracy" if data.validation is not None else "accuracy"


def _make_callbacks(
    config: TrainConfig, out: Path, data: FitData, clock: EpochClock, rows: list[dict]
) -> list:
    """The run's callbacks, in the order their epoch ends must run."""
    callbacks = [
        # First: with EMA, the averaged weights are in the model before anything evaluates
        # or saves it.
        *training_callbacks(config),
        # raise_error: stop at once, before epoch-end callbacks can save a NaN model or backup.
        async_safe(keras.callbacks.TerminateOnNaN(raise_error=True)),
        async_safe(clock),
    ]
    # Keras' TensorBoard callback writes with tf.summary: it needs tensorflow and tensorboard.
    if config.tensorboard and installed("tensorflow") and installed("tensorboard"):
        callbacks.append(
            keras.callbacks.TensorBoard(os.fspath(out / "logs"), write_graph=False, profile_batch=0)
        )
    if config.checkpoint:
        (out / BEST_FILE).parent.mkdir(exist_ok=True)
    # Last: the checkpoint, the backup and history.csv, in the order that makes a kill at any
    # moment harmless (see RunState). Keras' ModelCheckpoint, BackupAndRestore and CSVLogger
    # write in place, and the backup would be deleted before the run's last files exist.
    state = RunState(
        out / HISTORY_FILE,
        monitor=_monitor(data),
        best_file=out / BEST_FILE if config.checkpoint else None,
        backup_dir=out / BACKUP_DIR if config.backup else None,
        rows=rows,
    )
    callbacks.append(async_safe(state))
    return callbacks


def _fit(model, config: TrainConfig, data: FitData, callbacks: list, initial_epoch: int) -> None:
    """`model.fit`; a NaN/Inf loss becomes TrainingDiverged, saying what was kept."""
    try:
        model.fit(
            **data.fit_arguments(config.batch_size),
            epochs=config.epochs,
            initial_epoch=initial_epoch,
            callbacks=callbacks,
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
    network = gpu_crop.backbone_of(model)
    for layer in inference.layers:
        layer.set_weights(network.get_layer(layer.name).get_weights())
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
        # The mean of the softmax of each test image and its mirror image (in-memory data
        # trained with flips); the headline figure is test_accuracy, without it.
        "test_accuracy_flip_tta": test.get("flip_tta_accuracy"),
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
        "test_images": data.test_images,
        "input_shape": list(dataset.image_shape),
        "class_names": list(dataset.class_names),
        "model": config.model.name,
        "params": int(model.count_params()),
        "run_dir": os.fspath(config.output_dir),
        **data_report(dataset, data),
    }
