"""Epoch-end saves written in the background (`callbacks.RunState`): the training thread only
copies the variables to host memory, a writer thread writes the best model, the backup and
history.csv from that copy in the crash-safe order. A kill while a save is written loses that
epoch only; best.keras holds the best epoch's weights exactly; `save_wait_s` records what the
training thread waited; an error of the writer is the run's one-line error, never lost."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import keras
import numpy as np
import pytest
from idx_files import make_idx_folder
from test_resume import (
    EpochLog,
    disarm,
    history_epochs,
    trigger,  # noqa: F401  (a fixture: arms an audit-hook condition)
)
from test_train import read_csv, tiny

from keras_resnet import data as data_lib
from keras_resnet import training
from keras_resnet.training import callbacks

TRAIN = "import sys; from keras_resnet.cli import run; sys.exit(run('train'))"
EPOCH_LINE = re.compile(r"^Epoch (\d+)/\d+", re.MULTILINE)


@pytest.fixture(scope="module")
def stripes_folder(tmp_path_factory) -> Path:
    return make_idx_folder(tmp_path_factory.mktemp("idx") / "fashion-mnist", 500, 200)


@pytest.fixture(scope="module")
def stripes(stripes_folder) -> data_lib.Dataset:
    return data_lib.load_dataset("fashion_mnist", source_dir=stripes_folder, loader="idx")


def train_command(data: Path, out: Path) -> list[str]:
    return [
        *(sys.executable, "-c", TRAIN, "--source-dir", str(data), "--loader", "idx"),
        *("--width", "0.125", "--epochs", "3", "--batch-size", "32", "--val-size", "100"),
        *("--no-augment", "--learning-rate", "0.05", "--warmup-epochs", "0"),
        *("--no-tensorboard", "--verbose", "2", "--output-dir", str(out)),
    ]


def committed(backup: Path) -> int:
    """The epochs the backup's metadata commits (0 without one)."""
    try:
        return json.loads((backup / callbacks.METADATA_FILE).read_text())["epoch"]
    except (OSError, ValueError):
        return 0


@pytest.mark.one_backend("torch")  # the files' order and the resume: the same on every backend
def test_kill_during_a_background_save_loses_only_that_epoch(tmp_path, stripes_folder):
    """SIGKILL while epoch 2's save is half written (its weights file is there, its metadata
    not: the writer sleeps after each file, `KERAS_RESNET_SAVE_PAUSE`). The backup commits
    epoch 1 and history.csv agrees; the rerun trains epochs 2 and 3 (the one in flight and the
    one it was training), never epoch 1 again."""
    out = tmp_path / "run"
    backup = out / "backup"
    env = {
        **os.environ,
        "KERAS_BACKEND": keras.backend.backend(),
        "TF_CPP_MIN_LOG_LEVEL": "3",
        callbacks.SAVE_PAUSE_ENV: "2",
    }
    process = subprocess.Popen(
        train_command(stripes_folder, out),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 400
        while not ((backup / "epoch-2.weights.h5").exists() and committed(backup) == 1):
            assert process.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "epoch 2's save did not start in time"
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert committed(backup) == 1 and history_epochs(out) == [0]
    assert not (out / "metrics.json").exists()
    assert keras.saving.load_model(out / "checkpoints" / "best.keras") is not None

    result = subprocess.run(
        train_command(stripes_folder, out),
        env={**env, callbacks.SAVE_PAUSE_ENV: "0"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert EPOCH_LINE.findall(result.stdout) == ["2", "3"]
    assert json.loads((out / "metrics.json").read_text())["resumed_from_epoch"] == 1
    rows = read_csv(out / "history.csv")
    assert [int(row["epoch"]) for row in rows] == [0, 1, 2]
    assert all(float(row["save_wait_s"]) >= 0 for row in rows)
    assert not backup.exists()


class RecordWeights(keras.callbacks.Callback):
    """The model's weights at each epoch's end, after the run's own callbacks (RunState's copy
    is taken at the same moment)."""

    def __init__(self):
        super().__init__()
        self.weights: dict[int, list[np.ndarray]] = {}

    def on_epoch_end(self, epoch, logs=None):
        self.weights[epoch] = [np.array(w) for w in self.model.get_weights()]


class SpoilEpoch(keras.callbacks.Callback):
    """Zeroes the classifier after every batch of `epoch`: its validation accuracy falls to
    chance, the worst epoch of the run."""

    def __init__(self, epoch: int):
        super().__init__()
        self.epoch, self.current = epoch, None

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.current == self.epoch:
            for variable in self.model.get_layer("fc").weights:
                variable.assign(np.zeros(variable.shape, dtype="float32"))


def test_best_keras_holds_the_best_epochs_weights(tmp_path, stripes):
    """The best epoch's model is written while later epochs train (the last one spoiled, so
    that the best is an earlier epoch): best.keras must hold exactly that epoch's weights
    (JAX donates the buffers and torch updates them in place: a late or shared copy differs),
    and every row of history.csv records the training thread's wait."""
    config = tiny(tmp_path, epochs=3)
    run = Path(config.output_dir)
    record = RecordWeights()
    spoil = SpoilEpoch(2)
    metrics = training.train(config, dataset=stripes, callbacks=[spoil, record])
    rows = read_csv(run / "history.csv")
    accuracies = [float(row["val_accuracy"]) for row in rows]
    best = int(np.argmax(accuracies))
    assert best < 2 and metrics["best_checkpoint"]["epoch"] == best + 1, accuracies
    saved = keras.saving.load_model(run / "checkpoints" / "best.keras").get_weights()
    expected = record.weights[best]
    assert len(saved) == len(expected)
    assert all(np.array_equal(s, e) for s, e in zip(saved, expected, strict=True))
    assert not np.array_equal(saved[-2], record.weights[2][-2])  # the spoiled classifier
    assert [int(row["epoch"]) for row in rows] == [0, 1, 2]
    assert all(float(row["save_wait_s"]) >= 0 for row in rows)


class EpochEnds(keras.callbacks.Callback):
    """The epochs whose end-of-epoch callbacks ran to this one (it runs after the run's)."""

    def __init__(self):
        super().__init__()
        self.ended: list[int] = []

    def on_epoch_end(self, epoch, logs=None):
        self.ended.append(epoch)


@pytest.mark.one_backend("torch")
@pytest.mark.parametrize("epochs", [3, 2], ids=["at_the_next_epoch_end", "at_the_end_of_fit"])
def test_an_error_of_the_writer_is_the_runs_one_line_error(
    tmp_path,
    stripes,
    trigger,  # noqa: F811  (the fixture)
    epochs,
):
    """The backup folder fills up from epoch 2's save on (the writer meets ENOSPC): the error
    is raised in the training thread at the next epoch's end (3 epochs: epoch 3 never ends),
    or when `fit` ends (2 epochs: before model.keras and metrics.json), as the one-line
    OptionError of a full disk; the committed epoch is kept and the rerun resumes from it."""
    config = tiny(tmp_path, epochs=epochs)
    run = Path(config.output_dir)
    backup = run / "backup"

    def backup_full(event, args):
        if event != "open" or not args or committed(backup) < 1:
            return
        if os.fspath(args[0]).startswith(os.fspath(backup)):
            mode = args[1] if len(args) > 1 and isinstance(args[1], str) else ""
            flags = args[2] if len(args) > 2 and isinstance(args[2], int) else 0
            if "w" in mode or "a" in mode or flags & (os.O_WRONLY | os.O_RDWR):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(args[0]))

    ends = EpochEnds()
    trigger(backup_full)
    with pytest.raises(ValueError, match="No space left on device") as info:
        training.train(config, dataset=stripes, callbacks=[ends])
    disarm()
    message = str(info.value)
    assert "\n" not in message and info.value.field == "output_dir"
    assert f"cannot write the run folder {run}" in message
    assert ends.ended == [0, 1]  # raised before epoch 3's end callbacks (3 epochs)
    assert committed(backup) == 1 and history_epochs(run) == [0]
    assert not (run / "metrics.json").exists() and not (run / "model.keras").exists()
    log = EpochLog()
    metrics = training.train(config, dataset=stripes, callbacks=[log])
    assert log.begun == list(range(1, epochs)) and metrics["resumed_from_epoch"] == 1
    assert history_epochs(run) == list(range(epochs))


@pytest.mark.one_backend("torch")
def test_the_writer_waits_for_the_pending_save_and_raises_its_error():
    """At most one save pending: `submit` waits for the one before; `wait` raises a save's
    error once, in the calling thread."""
    writer = callbacks.SaveWriter()
    done, release = [], threading.Event()

    def first():
        time.sleep(0.3)
        done.append(1)

    def second():
        release.wait(timeout=60)
        done.append(2)

    writer.submit(first)
    writer.submit(second)  # returns once the first is written
    assert done == [1]
    release.set()
    writer.wait()
    assert done == [1, 2]

    def fail():
        raise OSError(errno.ENOSPC, "No space left on device")

    writer.submit(fail)
    with pytest.raises(OSError, match="No space left"):
        writer.wait()
    writer.wait()  # raised once
    writer.submit(fail)
    writer.close(raise_errors=False)  # the caller is raising an error of its own
    writer.close()
