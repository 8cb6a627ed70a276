"""A real full disk: the run folder on a small tmpfs. The backup's weights are
written by h5py, which, meeting ENOSPC half way through a file, keeps the file open inside
HDF5 and crashes the interpreter at exit (SIGSEGV, exit -11); the run must instead stop with
one error line, keep the last completed epoch and resume once there is room.

Mounting needs root (the CI containers and this machine run as root); elsewhere the tests
are skipped with that reason."""

from __future__ import annotations

import csv
import errno
import os
import subprocess
import sys
from pathlib import Path

import keras
import pytest
from idx_files import make_idx_folder

from keras_resnet.training import callbacks

REPO = Path(__file__).resolve().parents[1]
TRAIN = "import sys; from keras_resnet.cli import run; sys.exit(run('train'))"


@pytest.fixture
def small_disk(tmp_path):
    """Mounts a tmpfs of the size asked for; unmounted after the test."""
    mounted = []

    def mount(size: str) -> Path:
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root")
        folder = tmp_path / f"disk{len(mounted)}"
        folder.mkdir()
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
            capture_output=True,
            text=True,
        )
        if result.returncode:
            pytest.skip(f"mount -t tmpfs not permitted here: {result.stderr.strip()}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def small_model():
    """1.3 MB of weights and optimizer state (SGD with momentum)."""
    model = keras.Sequential(
        [keras.Input((100,)), keras.layers.Dense(1000), keras.layers.Dense(10)]
    )
    model.compile(optimizer=keras.optimizers.SGD(momentum=0.9), loss="mse")
    model.optimizer.build(model.trainable_variables)
    return model


@pytest.mark.one_backend("jax")
def test_a_backup_that_does_not_fit_is_refused_before_h5py_writes(small_disk):
    backup = small_disk("512k") / "backup"
    with pytest.raises(OSError) as info:
        callbacks.save_backup(small_model(), backup, 1, [])
    assert info.value.errno == errno.ENOSPC
    assert "MiB free, an epoch's backup needs" in str(info.value)  # not h5py's message
    assert info.value.filename == os.fspath(backup)
    assert list(backup.iterdir()) == []  # no weights, no temporary file, no metadata


@pytest.mark.one_backend("jax")
def test_h5py_meeting_a_full_disk_does_not_crash_the_process(small_disk):
    """The room check passed but the disk filled all the same (another writer): an OSError,
    and the process exits normally (without the fix: exit -11 and HDF5 errors at exit)."""
    backup = small_disk("512k") / "backup"
    code = f"""
import errno, os, sys
from pathlib import Path
import keras
from keras_resnet.training import run_folder
run_folder.check_room = lambda folder, needed: None
model = keras.Sequential([keras.Input((100,)), keras.layers.Dense(1000), keras.layers.Dense(10)])
model.compile(optimizer=keras.optimizers.SGD(momentum=0.9), loss="mse")
model.optimizer.build(model.trainable_variables)
try:
    run_folder.save_backup(model, Path({os.fspath(backup)!r}), 1, [])
except OSError as error:
    assert error.errno == errno.ENOSPC, error
    print("ENOSPC", os.listdir({os.fspath(backup)!r}))
"""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "ENOSPC []" in result.stdout
    assert "Exception ignored" not in result.stderr


def train_command(data: Path, out: Path) -> list[str]:
    return [
        *(sys.executable, "-c", TRAIN, "--source-dir", str(data), "--loader", "idx"),
        *("--width", "0.125", "--epochs", "2", "--batch-size", "32", "--val-size", "100"),
        *("--no-augment", "--learning-rate", "0.05", "--warmup-epochs", "0"),
        *("--no-tensorboard", "--verbose", "2", "--output-dir", str(out)),
    ]


@pytest.mark.slow
def test_cli_on_a_full_disk_one_line_then_resumes_after_room_is_made(tmp_path, small_disk):
    """2.5 MB: config.json and the first best checkpoint fit, the first backup does not."""
    data = make_idx_folder(tmp_path / "fashion-mnist", 500, 200)
    disk = small_disk("2500k")
    out = disk / "run"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": keras.backend.backend()}
    full = subprocess.run(train_command(data, out), env=env, capture_output=True, text=True)
    errors = [line for line in full.stderr.splitlines() if ": error: " in line]
    assert full.returncode == 2, full.stderr[-3000:]  # the cli's OptionError exit, no SIGSEGV
    assert len(errors) == 1 and "Traceback" not in full.stderr, full.stderr[-3000:]
    assert f"cannot write the run folder {out}: No space left on device" in errors[0]
    assert "the files of the last completed epoch are kept" in errors[0]
    # Room is made: the same command resumes and trains every epoch once.
    subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
    resumed = subprocess.run(train_command(data, out), env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    with open(out / "history.csv") as f:
        assert [int(row["epoch"]) for row in csv.DictReader(f)] == [0, 1]
    assert keras.saving.load_model(out / "checkpoints" / "best.keras") is not None
    assert (out / "metrics.json").exists() and not (out / "backup").exists()
