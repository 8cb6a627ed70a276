"""The run's own callbacks and what they read back from a run folder: the epoch clock, the
async-safe marking, and the epochs and wall time of earlier sessions of a resumed run."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import keras
import numpy as np


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


def previous_elapsed(history_csv: Path, initial_epoch: int) -> float:
    """Wall time already spent by the earlier sessions of a resumed run (from history.csv)."""
    if initial_epoch == 0 or not history_csv.exists():
        return 0.0
    with history_csv.open() as f:
        rows = [r for r in csv.DictReader(f) if int(r["epoch"]) < initial_epoch]
    return float(rows[-1]["elapsed_s"]) if rows and rows[-1].get("elapsed_s") else 0.0


def backup_epoch(backup_dir: Path) -> int:
    """Completed epochs recorded by BackupAndRestore (0 when there is no backup)."""
    path = backup_dir / "training_metadata.json"
    try:
        return int(json.loads(path.read_text())["epoch"])
    except (OSError, ValueError, KeyError):
        return 0
