"""`train(config)`: one run, step by step. Each step is a function, so that the order in which
the run folder's files are written is visible in `_run` and easy to change."""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path
from typing import Any

import keras
import numpy as np

from keras_resnet import data as data_lib
from keras_resnet import preprocessing as prep
from keras_resnet.data import gpu_crop, pipelines
from keras_resnet.layers import plain_keras_model
from keras_resnet.training import distributed
from keras_resnet.training.callbacks import EpochClock, RunState, async_safe
from keras_resnet.training.compilation import enable_compilation_cache
from keras_resnet.training.config import TrainConfig, TrainingDiverged
from keras_resnet.training.devices import device_description, process_count
from keras_resnet.training.evaluation import flip_tta_accuracy
from keras_resnet.training.inputs import FitData, data_report, fit_data
from keras_resnet.training.outputs import (
    check_same_run,
    plot_curves,
    remove_unstarted_folder,
    time_to,
    write_json,
)
from keras_resnet.training.plan import FinishedRun, RunPlan, plan_run
from keras_resnet.training.recipe import (
    build_model,
    compile_model,
    prepare_finetuning,
    training_callbacks,
)
from keras_resnet.training.run_folder import (
    RunFolder,
    previous_elapsed,
    restore_backup,
    settle_best,
)
from keras_resnet.utils import OptionError, atomic_path, installed, keras_globals, one_line

log = logging.getLogger("keras_resnet")


def train(
    config: TrainConfig, *, dataset: data_lib.Dataset | None = None, callbacks: list | None = None
) -> dict[str, Any]:
    """Trains, evaluates on the test split and writes the run folder. Resumes an unfinished run;
    a finished one (metrics.json written, backup retired) is left as it is: one line says so
    and its metrics are returned. `config.restart` trains either from epoch 0 again.

    Keras' dtype policy, distribution and image data format are set for the run and restored
    on return and on error.

    Args:
        config: the options; `None` fields take their defaults (`plan_run` resolves them).
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
    with keras_globals():
        plan = plan_run(config, dataset)
        if isinstance(plan, FinishedRun):
            if distributed.is_writer():  # what a kill during the backup's removal left
                RunFolder(plan.config.output_dir).remove_retired_backup()
            print(plan.message())
            return plan.metrics
        try:
            return train_plan(plan, callbacks=callbacks)
        except BaseException:
            if plan.new_folder:  # failed before its first epoch was saved: nothing to resume
                remove_unstarted_folder(plan.output_dir)
            raise


def train_plan(plan: RunPlan, *, callbacks: list | None = None) -> dict[str, Any]:
    """Trains a planned run (`plan_run`) and writes its folder; see `train`."""
    config, out = plan.config, plan.output_dir
    enable_compilation_cache(config.compilation_cache)  # before anything is compiled
    with keras_globals():
        keras.utils.set_random_seed(config.seed)
        keras.config.set_dtype_policy(config.precision)
        # The arrays are NHWC; the augmentation layers read the global format.
        keras.config.set_image_data_format("channels_last")
        return _run(plan, out, callbacks)


def _run(plan: RunPlan, out: Path, callbacks) -> dict[str, Any]:
    config, folder = plan.config, plan.folder
    data = fit_data(plan)
    model = _build(plan, data)
    # Read-only: a refused or unreadable resume leaves the folder as it was.
    initial_epoch, rows, backup_best = _restore(model, plan)
    # Several processes: each has read the folder before process 0, its only writer, changes it.
    distributed.barrier("run folder read")
    writer = distributed.is_writer()
    try:
        # The folder changes only now that the data, the model and its state are there.
        if config.restart and writer:
            folder.retire_backup()  # else its .bkp would outlive the new run's start
        if initial_epoch == 0 and writer:
            # A new run: an older run's metrics.json would mark the folder finished.
            folder.metrics.unlink(missing_ok=True)
        if writer:
            # restart=False: `--config RUN/config.json` or the same options continue this run.
            write_json(folder.config, plan.record())
            folder.write_class_names(plan.data.class_names)
        return _train_and_write(model, plan, data, (initial_epoch, rows, backup_best), callbacks)
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


def _restore(model, plan: RunPlan) -> tuple[int, list[dict], Path | None]:
    """The completed epochs and their history rows of an unfinished run, its state loaded into
    `model`, and the best epoch's model in its backup; (0, [], None) for a new run (or
    `restart`). Refuses a resume with changed options. Changes no file."""
    config, folder = plan.config, plan.folder
    if not config.backup or config.restart:
        return 0, [], None
    if folder.backup_started() and folder.config.exists():
        check_same_run(folder.config, config.to_dict())
    # Several processes load the same backup (each reads it: the folder is shared).
    distributed.agree(
        folder.backup_epoch(),
        f"epochs completed in {folder.backup} (every process must see the run folder: put it "
        f"on a file system that all hosts share)",
    )
    epoch, rows, best = restore_backup(model, folder.backup)
    if rows is None:  # a backup written by Keras' BackupAndRestore: rows from history.csv
        rows = folder.history_rows(epoch)
    return epoch, rows, best


def _train_and_write(model, plan: RunPlan, data: FitData, state, callbacks) -> dict:
    """Trains the epochs left, then writes model.keras, curves.png, metrics.json; the backup
    is removed last, so that a kill before lets the rerun finish without training again.

    `state` is `_restore`'s (completed epochs, their history rows, the best epoch's model in
    the backup); (0, [], None) for a new run."""
    config, folder = plan.config, plan.folder
    initial_epoch, rows, backup_best = state
    writer = distributed.is_writer()  # several processes: process 0 alone writes files
    # history.csv agrees with the backup: rows of epochs it does not hold are trained again.
    if initial_epoch and writer:
        folder.write_history(rows)
    elif folder.history.exists() and writer:
        folder.history.unlink()  # a fresh run: old rows would mix with the new ones
    if config.checkpoint and writer:
        # The one place best.keras is settled, on every path: a new run drops an older run's
        # pending best; a resume (also one fallen back to the .bkp) installs the best model
        # the restored backup names, after history.csv holds that backup's rows.
        settle_best(folder.best, initial_epoch, backup_best)
    if writer:
        folder.remove_leftovers()
    clock = EpochClock(
        train_images=data.train_images,
        elapsed_before=previous_elapsed(folder.history, initial_epoch),
        test_data=data.test if config.track_test else None,
        batch_size=config.batch_size,
    )
    run_callbacks = _make_callbacks(plan, data, clock, rows)
    if initial_epoch < config.epochs:
        _fit(model, plan, data, run_callbacks + list(callbacks or []), initial_epoch)
    else:  # killed after the last epoch: only the final files are missing
        clock.first_epoch = initial_epoch
    # Every process evaluates (a collective step); only process 0 writes.
    with pipelines.quiet_end_of_data():
        test = model.evaluate(*data.test, batch_size=config.batch_size, verbose=0, return_dict=True)
    inference = _save_model(model, plan)
    if config.flip and data.test_arrays and writer:  # flip TTA: beside the plain figure
        # Over several processes, `predict` of the distributed model cannot gather its output
        # on one host: process 0 predicts with its own copy (`inference`), outside it.
        predictor = model if distributed.shard() is None else inference
        with distributed.local_scope():
            test["flip_tta_accuracy"] = flip_tta_accuracy(predictor, *data.test, config.batch_size)
    if not writer:
        metrics = _metrics(plan, data, model, test, _session_history(model), clock)
        distributed.barrier("run folder written")
        return metrics
    history = folder.read_history()
    name = "test accuracy" if plan.evaluated_on == "test" else "validation accuracy (no test split)"
    title = f"{config.model.name} on {plan.data.name}: {name} {100 * test['accuracy']:.2f}%"
    plot_curves(history, folder.curves, title=title)
    metrics = _metrics(plan, data, model, test, history, clock)
    write_json(folder.metrics, metrics)
    if config.backup:
        folder.retire_backup()
    distributed.barrier("run folder written")
    return metrics


def _session_history(model) -> dict[str, list[float]]:
    """The epochs this session trained, as `read_history` gives history.csv's columns: the
    figures of a process that writes no history.csv (several processes, not process 0)."""
    history = getattr(model, "history", None)
    if history is None or not getattr(history, "epoch", None):
        return {}
    return {"epoch": list(history.epoch), **{k: list(v) for k, v in history.history.items()}}


def _build(plan: RunPlan, data: FitData):
    """The compiled training model, in the distribution's scope."""
    config = plan.config
    scope, _ = distributed.distribution_scope(config.distribute)
    with scope:
        model = build_model(plan)
        # A resumed run takes its weights from the backup: no head-only warm-up again.
        resumed = config.backup and not config.restart and plan.folder.backup_epoch() > 0
        prepare_finetuning(model, plan, data, warm_up=not resumed)
        if plan.streamed and plan.data.cache is not None:
            # Cache batches are squashed uint8 images and their original sizes: the
            # random-resized crop (training) or the stored center crop (evaluation) runs first.
            model = gpu_crop.training_model(model, seed=config.seed)
        model = compile_model(model, plan)
    return model


def _monitor(data: FitData) -> str:
    return "val_accuracy" if data.validation is not None else "accuracy"


def _make_callbacks(plan: RunPlan, data: FitData, clock: EpochClock, rows: list[dict]) -> list:
    """The run's callbacks, in the order their epoch ends must run."""
    config, folder = plan.config, plan.folder
    callbacks = [
        # First: with EMA, the averaged weights are in the model before anything evaluates
        # or saves it.
        *training_callbacks(config),
        # raise_error: stop at once, before epoch-end callbacks can save a NaN model or backup.
        async_safe(keras.callbacks.TerminateOnNaN(raise_error=True)),
        async_safe(clock),
    ]
    if not distributed.is_writer():  # several processes: process 0 alone writes files
        return callbacks
    # Keras' TensorBoard callback writes with tf.summary: it needs tensorflow and tensorboard.
    if config.tensorboard and installed("tensorflow") and installed("tensorboard"):
        callbacks.append(
            keras.callbacks.TensorBoard(os.fspath(folder.logs), write_graph=False, profile_batch=0)
        )
    if config.checkpoint:
        folder.checkpoints.mkdir(exist_ok=True)
    # Last: the checkpoint, the backup and history.csv, in the order that makes a kill at any
    # moment harmless (see RunState). Keras' ModelCheckpoint, BackupAndRestore and CSVLogger
    # write in place, and the backup would be deleted before the run's last files exist.
    state = RunState(
        folder.history,
        monitor=_monitor(data),
        best_file=folder.best if config.checkpoint else None,
        backup_dir=folder.backup if config.backup else None,
        rows=rows,
    )
    callbacks.append(async_safe(state))
    return callbacks


def _fit(model, plan: RunPlan, data: FitData, callbacks: list, initial_epoch: int) -> None:
    """`model.fit`; a NaN/Inf loss becomes TrainingDiverged, saying what was kept."""
    config = plan.config
    _build_loss_and_metrics(model, data)
    states = [c for c in callbacks if isinstance(c, RunState)]
    try:
        try:
            with pipelines.quiet_end_of_data():
                model.fit(
                    **data.fit_arguments(),
                    epochs=config.epochs,
                    initial_epoch=initial_epoch,
                    callbacks=callbacks,
                    verbose=config.verbose,
                )
        except BaseException:
            # The epoch being saved in the background is finished before the error goes up
            # (the writer's own error, if any, is dropped: the one raised here says more).
            for state in states:
                state.join(raise_errors=False)
            raise
    except RuntimeError as error:
        if "NaN or Inf loss" not in str(error):
            raise
        clock = next(c for c in callbacks if isinstance(c, EpochClock))
        epoch = (clock.first_epoch or 0) + clock.epochs_run + 1
        folder = plan.folder
        best, backup = folder.best, folder.backup
        kept = f"The best checkpoint is kept: {best if best.exists() else 'none yet'}"
        if config.backup and backup.exists() and folder.backup_epoch() > 0:
            kept += (
                f"; the backup of the last completed epoch ({folder.backup_epoch()}) is in {backup}"
            )
        else:
            kept += "; no epoch completed, so there is no backup to resume from"
        raise TrainingDiverged(
            f"the loss became NaN/Inf in epoch {epoch}, so training stopped ({error}). "
            f"{kept}. Train it again with --restart and a lower --learning-rate, or with "
            f"--precision float32."
        ) from None


def _build_loss_and_metrics(model, data: FitData) -> None:
    """Builds the compiled loss and metrics from the training stream's first batch, read
    directly (`x_train[0]`), when the stream has worker threads (folders, caches), so that
    `fit` does not draw that batch through the stream.

    `fit` otherwise takes one batch through a fresh iterator to build them, then resets the
    stream: the batches that the workers prefetched meanwhile, a number that depends on timing,
    are served first in the first epoch, and every later epoch then starts with the previous
    one's leftovers. Epochs mixed two orders, a run differed from its rerun (2 of 5 identical
    runs on a folder), and over several processes each process's share could come from
    another global batch."""
    stream = data.x_train
    build = getattr(model, "_symbolic_build", None)  # Keras' own step, given the batch
    threaded = isinstance(stream, keras.utils.PyDataset) and (
        stream.workers > 1 or stream.use_multiprocessing
    )
    if build is not None and threaded and len(stream):
        build(data_batch=stream[0])


def _save_model(model, plan: RunPlan):
    """model.keras: the trained network without the augmentation layers (inactive at inference
    anyway) and with Keras' own layers only, so that it loads where keras_resnet is not
    installed; the preprocessing record is stored in the file too (`add_record`). Written
    whole or not at all.

    Over several processes, process 0 alone builds and saves it, outside the distribution
    (`distributed.local_scope`): the others return None.

    Returns:
        The inference model that was saved (None on the other processes).
    """
    if not distributed.is_writer():
        return None
    with distributed.local_scope():
        inference = build_model(plan, augment=False)
        network = gpu_crop.backbone_of(model)
        for layer in inference.layers:
            layer.set_weights(network.get_layer(layer.name).get_weights())
        with atomic_path(plan.folder.model) as tmp:
            plain_keras_model(inference).save(tmp)
            prep.add_record(tmp, plan.preprocessing)
    return inference


def _metrics(plan: RunPlan, data: FitData, model, test, history, clock) -> dict:
    """metrics.json's figures. A folder without test/ is evaluated on its validation split:
    its figure is named so (`evaluated_on`), never test accuracy."""
    config, dataset = plan.config, plan.data
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
            "path": os.fspath(plan.folder.best),
        }
    targets = (0.90, 0.95, 0.955)
    tested = plan.evaluated_on == "test"
    accuracy, loss = float(test["accuracy"]), float(test["loss"])
    figures = (
        {"test_accuracy": accuracy, "test_loss": loss}
        if tested
        else {"validation_accuracy": accuracy, "validation_loss": loss}
    )
    return {
        "accuracy": accuracy,
        "evaluated_on": "test" if tested else "validation",
        "evaluated_on_label": "test accuracy" if tested else "validation accuracy (no test split)",
        **figures,
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
        "num_devices": plan.num_devices,
        "num_processes": process_count(),
        "precision": config.precision,
        "keras_version": keras.__version__,
        "dataset": dataset.name,
        "data_source": dataset.source,
        "train_images": data.train_images,
        "val_images": data.val_images,
        "test_images": data.test_images,
        "steps_per_epoch": plan.steps_per_epoch,
        "input_shape": list(dataset.image_shape),
        "class_names": list(dataset.class_names),
        "preprocessing": plan.preprocessing.to_dict(),
        "model": config.model.name,
        "params": int(model.count_params()),
        "run_dir": os.fspath(plan.output_dir),
        **data_report(dataset, data),
    }
