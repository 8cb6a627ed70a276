"""The run's own Keras callbacks: the epoch clock, the async-safe marking and the epoch-end
saves (`RunState`, written by a background thread). What they write, and how a run folder's
files are read back, is `keras_resnet.training.run_folder`'s."""

from __future__ import annotations

import contextlib
import math
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import keras
import numpy as np

from keras_resnet.data.gpu_crop import backbone_of
from keras_resnet.layers import plain_keras_model
from keras_resnet.training import run_folder
from keras_resnet.training.run_folder import (  # noqa: F401 (also imported from here)
    BACKUP_MARGIN,
    LEFT_BY_KILL,
    METADATA_FILE,
    PENDING_BEST,
    SAVE_PAUSE_ENV,
    BackupError,
    as_number,
    backup_epoch,
    best_name,
    check_room,
    history_rows,
    history_text,
    install_best,
    previous_elapsed,
    remove_leftovers,
    remove_retired_backup,
    restore_backup,
    retire_backup,
    retired_path,
    save_backup,
    save_pause,
    settle_best,
    weights_bytes,
    whole_zip,
)
from keras_resnet.utils import atomic_path, write_text_atomic


def async_safe(callback):
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


def best_so_far(rows: list[dict], monitor: str) -> float:
    """The highest `monitor` in `rows` (-inf when none): where a resumed checkpoint starts."""
    values = [r.get(monitor) for r in rows]
    values = [v for v in values if v is not None and not math.isnan(v)]
    return max(values, default=-math.inf)


def host_copy(variables) -> list[np.ndarray]:
    """The values of `variables`, copied to host memory now.

    Each is an array of its own: JAX donates the variables' buffers to the next training step
    and torch updates them in place, so a view would change (or die) under a writer that reads
    it later.
    """
    for variable in variables:
        # JAX: every transfer starts at once instead of one after another.
        getattr(variable.value, "copy_to_host_async", lambda: None)()
    values = [keras.ops.convert_to_numpy(v) for v in variables]
    return [value if value.flags.owndata else value.copy() for value in values]


def state_variables(model) -> list:
    """What `model.save_weights` writes, in a fixed order: the model's weights, then its
    optimizer's variables."""
    optimizer = getattr(model, "optimizer", None)
    return list(model.weights) + (list(optimizer.variables) if optimizer is not None else [])


class SaveWriter:
    """One writer thread and at most one save pending in it.

    `submit` queues a save; `wait` blocks until the pending save is written and raises the
    error it met (an `OSError` of a full disk, anything else) in the calling thread, so that no
    error of a save is lost. The thread is not a daemon: a process that ends while a save is
    pending finishes it first.
    """

    def __init__(self):
        self._executor: ThreadPoolExecutor | None = None
        self._pending: Future | None = None

    def submit(self, save, *args) -> None:
        """Runs `save(*args)` in the writer thread, after the pending save (if any) is written."""
        self.wait()
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="keras-resnet-save")
        self._pending = self._executor.submit(save, *args)

    def wait(self, raise_errors: bool = True) -> None:
        """Waits for the pending save; raises its error unless `raise_errors` is False."""
        pending = self._pending
        if pending is None:
            return
        error = pending.exception()  # waits; an interrupt of this wait is raised as it comes
        self._pending = None
        if error is not None and raise_errors:
            raise error

    def close(self, raise_errors: bool = True) -> None:
        """`wait`, then ends the writer thread."""
        try:
            self.wait(raise_errors)
        finally:
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None


class RunState(keras.callbacks.Callback):
    """Saves each epoch's files in the order that makes a kill at any moment harmless (the
    run's last epoch-end callback; EpochClock's figures are in the logs by then), written in
    a background thread while the next epoch trains:

    1. a better `monitor`: the model, with Keras' own layers, to `backup/best-epochN.keras`
       (without a backup: `checkpoints/.best-epochN.keras`);
    2. the backup (`save_backup`), which commits the epoch with history.csv's rows and the
       name of their best epoch's model;
    3. history.csv, whole;
    4. the best epoch's model onto best.keras (a hard link into the backup, or a move).

    A kill before 2: the epoch is trained again and its files are overwritten. After 2: the
    rerun rewrites history.csv from the backup and puts the best checkpoint the backup names
    into place (`settle_best`), so an epoch in history.csv is never trained again and
    best.keras is the best epoch of history.csv, over every restart, and also after a damaged
    backup fell back to its `.bkp` (whose best model the backup keeps until a newer epoch is
    committed).

    At an epoch's end the training thread only waits for the previous epoch's save, if it is
    still being written (one save pending at most), and copies the weights and the optimizer's
    variables to host memory; `save_wait_s` in the epoch's row (and logs) is the seconds this
    took. A writer thread then writes the files above, in that order, from the copy, through a
    mirror of the model on the CPU: saved by Keras (`save_weights`, `save`), so the files are
    those a synchronous save writes. A kill while a save is written loses that epoch only (it
    is not committed: the rerun trains it again). An error of the writer (a full disk) is
    raised in the training thread at the next epoch's end, or by `join` at the end of `fit`,
    before the run writes its final files.

    Args:
        history_file: history.csv.
        monitor: the value whose maximum best.keras holds.
        best_file: best.keras, or None for no checkpoint.
        backup_dir: the backup folder, or None for no backup.
        rows: history.csv's rows of the completed epochs (a resumed run).
    """

    def __init__(self, history_file, *, monitor, best_file=None, backup_dir=None, rows=()):
        super().__init__()
        self.history_file = Path(history_file)
        self.monitor = monitor
        self.best_file = None if best_file is None else Path(best_file)
        self.backup_dir = None if backup_dir is None else Path(backup_dir)
        self.rows = list(rows)
        self.best = best_so_far(self.rows, monitor)
        self.writer = SaveWriter()
        # The model's and its optimizer's configurations, read when training begins; the
        # writer builds its mirrors from them (its own thread and Keras state, the CPU).
        self._blueprint = None
        self._mirror = None
        self._plain = None
        self._layout_checked = False

    def on_train_begin(self, logs=None):
        if self.backup_dir is None and self.best_file is None:
            return
        if self._blueprint is None:
            self._blueprint = _blueprint(self.model)
        # The mirrors are built while the first epoch trains: building them costs seconds
        # (JAX compiles their initializers again for the CPU), which no epoch's end waits for.
        self.writer.submit(self._prepare)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        start = time.perf_counter()
        self.writer.wait()  # the previous epoch's save; its error is raised here
        value = as_number(logs.get(self.monitor))
        value = math.nan if value is None else value
        pending = None
        if self.best_file is not None and value > self.best:  # NaN never saves
            pending = run_folder.pending_best(
                epoch + 1, best_file=self.best_file, backup_dir=self.backup_dir
            )
            self.best = value
        values = None
        if self.backup_dir is not None or pending is not None:
            if self._blueprint is None:
                # Read here, where the variables hold their values (JAX empties them while
                # an epoch trains): a learning rate that is a variable is in the optimizer's.
                self._blueprint = _blueprint(self.model)
            values = host_copy(state_variables(self.model))
        logs["save_wait_s"] = time.perf_counter() - start
        numbers = {k: as_number(v) for k, v in logs.items()}
        row = {"epoch": epoch, **{k: v for k, v in numbers.items() if v is not None}}
        self.rows = [r for r in self.rows if r["epoch"] < epoch] + [row]
        self.writer.submit(self._write, epoch + 1, list(self.rows), values, pending)

    def on_train_end(self, logs=None):
        self.join()

    def join(self, raise_errors: bool = True) -> None:
        """Waits until the last epoch's files are written and ends the writer thread; raises
        the writer's error unless `raise_errors` is False (the training thread is already
        raising one of its own)."""
        self.writer.close(raise_errors)

    def _prepare(self) -> None:
        """The writer thread: the mirrors, before the first save needs them."""
        with _host_scope():
            self._mirrors()

    def _write(self, completed: int, rows: list[dict], values, pending: Path | None) -> None:
        """The writer thread: an epoch's files, from its copy of the variables."""
        with _host_scope():
            mirror = None
            if values is not None:
                mirror = self._mirrors()
                self._assign(state_variables(mirror), values)
            if pending is not None:
                self._plain.set_weights(backbone_of(mirror).get_weights())
                with atomic_path(pending) as tmp:
                    self._plain.save(tmp)
                save_pause()
            if self.backup_dir is not None:
                best = None
                if self.best_file is not None:
                    best = best_name(rows, self.monitor)
                    # A run resumed from an older backup kept its best model in checkpoints/.
                    best = best if best and (self.backup_dir / best).exists() else None
                save_backup(mirror, self.backup_dir, completed, rows, best)
        write_text_atomic(self.history_file, history_text(rows))
        if pending is None:
            return
        save_pause()
        if self.backup_dir is not None:
            install_best(pending, self.best_file)
        else:
            os.replace(pending, self.best_file)

    def _mirrors(self):
        """The model rebuilt from its configuration, with its optimizer (the backup's
        weights), and `plain_keras_model` of it (best.keras' network, with a checkpoint):
        built once, then only given values."""
        if self._mirror is None:
            self._mirror = _build_mirror(*self._blueprint)
        if self._plain is None and self.best_file is not None:
            self._plain = plain_keras_model(backbone_of(self._mirror))
        return self._mirror

    def _assign(self, variables: list, values: list[np.ndarray]) -> None:
        if not self._layout_checked:
            layout = [(tuple(v.shape), np.dtype(v.dtype)) for v in variables]
            if layout != [(a.shape, a.dtype) for a in values]:
                raise RuntimeError(
                    f"the model rebuilt from its configuration for the background save has "
                    f"{len(variables)} variables that do not match the model's {len(values)}"
                )
            self._layout_checked = True
        for variable, value in zip(variables, values, strict=True):
            variable.assign(value)


def _host_scope():
    """Keras' CPU device scope where the backend has an accelerator, so that the writer's
    mirrors stay in host memory (the scope is per thread). None is needed on a CPU-only
    machine, where it would only make JAX compile the initializers again for it."""
    from keras_resnet.training.devices import accelerators

    return keras.device("cpu:0") if accelerators() else contextlib.nullcontext()


def _blueprint(model) -> tuple:
    """What `_build_mirror` needs, read in the training thread: the model's class and
    configuration, and its optimizer's serialized configuration (None without one)."""
    optimizer = getattr(model, "optimizer", None)
    optimizer = None if optimizer is None else keras.optimizers.serialize(optimizer)
    return type(model), model.get_config(), optimizer


def _build_mirror(cls, config: dict, optimizer: dict | None):
    """A model of `config`, with a built optimizer of `optimizer`, whose `state_variables` line
    up with the original's. Built in the writer thread, whose Keras settings are its own (they
    are per thread): no distribution, and the CPU (`_host_scope`)."""
    mirror = cls.from_config(config)
    if optimizer is not None:
        optimizer = keras.optimizers.deserialize(optimizer)
        mirror.compile(optimizer=optimizer)
        optimizer.build(mirror.trainable_variables)
    return mirror
