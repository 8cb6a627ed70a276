"""Crash-safe runs: a kill at any moment of a run, a corrupt backup, a changed option
on resume and a full disk never lose an epoch, train one twice, or leave a wrong or half-written
file. Kills are simulated in the process: `Killed` (a BaseException, which no `except Exception`
catches) raised from an audit hook at a chosen file event, or from a callback. The real-SIGKILL
soak test is tests/soak_kills.py (its short form runs at the end of this module)."""

from __future__ import annotations

import argparse
import errno
import importlib.util
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import plan_of
from idx_files import make_idx_folder
from test_train import read_csv, tiny

from keras_resnet import data as data_lib
from keras_resnet import training
from keras_resnet.training import run as run_module

REPO = Path(__file__).resolve().parents[1]
# Tests of the run folder's file logic (fallbacks, refusals, atomic saves, restarts): the same
# code on every backend, so CI runs them on one, PyTorch, where the tiny fits they need are
# 3-4 times faster than on TensorFlow or JAX; the tests that restore weights and optimizer state
# (backend-specific) run on all three.
file_logic = pytest.mark.one_backend("torch")


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs, no `except Exception` handles it."""


_TRIGGER: dict = {}


def _audit(event, args):
    """Calls the armed condition on every audit event (open, os.rename, ...); it raises."""
    condition = _TRIGGER.get("condition")
    if condition is None or _TRIGGER.get("inside"):
        return
    _TRIGGER["inside"] = True  # the condition may open files itself
    try:
        condition(event, args)
    finally:
        _TRIGGER["inside"] = False


sys.addaudithook(_audit)  # cannot be removed: it does nothing unless armed


@pytest.fixture
def trigger():
    """Arms a condition `f(event, args)` for the audit hook; disarmed after the test."""

    def arm(condition):
        _TRIGGER["condition"] = condition

    yield arm
    _TRIGGER.clear()


def disarm():
    _TRIGGER.pop("condition", None)


@pytest.fixture(scope="module")
def stripes_folder(tmp_path_factory) -> Path:
    return make_idx_folder(tmp_path_factory.mktemp("idx") / "fashion-mnist", 500, 200)


@pytest.fixture(scope="module")
def stripes(stripes_folder) -> data_lib.Dataset:
    return data_lib.load_dataset("fashion_mnist", source_dir=stripes_folder, loader="idx")


class EpochLog(keras.callbacks.Callback):
    """Records the epochs begun in this process; raises Killed when `kill_at` begins."""

    def __init__(self, kill_at: int | None = None):
        super().__init__()
        self.begun, self.kill_at = [], kill_at

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.kill_at:
            raise Killed(f"epoch {epoch}")
        self.begun.append(epoch)


def killed_run(config, stripes, kill_at: int) -> None:
    with pytest.raises(Killed):
        training.train(config, dataset=stripes, callbacks=[EpochLog(kill_at)])


def history_epochs(run: Path) -> list[int]:
    return [int(row["epoch"]) for row in read_csv(run / "history.csv")]


def folder_state(run: Path) -> dict[str, bytes]:
    return {
        os.fspath(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()
    }


def folder_stat(run: Path) -> dict[str, tuple]:
    """Every file and folder with its size and modification time: what "untouched" means."""
    return {
        os.fspath(p.relative_to(run)): (p.is_file() and p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(run.rglob("*"))
    }


def val_accuracy(model_file: Path, config, stripes) -> float:
    """A saved model's accuracy on the run's validation images (what best.keras is chosen by)."""
    (batches,) = training.fit_data(plan_of(config, stripes)).validation
    x_val, y_val = batches.images, batches.targets
    model = keras.saving.load_model(model_file)
    predicted = model.predict(x_val.astype("float32"), verbose=0).argmax(-1)
    return float(np.mean(predicted == y_val.argmax(-1)))


@file_logic
def test_kill_after_the_last_epoch_finishes_without_training(tmp_path, stripes, monkeypatch):
    config = tiny(tmp_path, epochs=2)
    run = Path(config.output_dir)

    def killed(*args, **kwargs):
        raise Killed("while saving model.keras")

    with monkeypatch.context() as patch:
        patch.setattr(run_module, "_save_model", killed)
        with pytest.raises(Killed):
            training.train(config, dataset=stripes)
    assert (run / "backup").exists()  # kept until the run's last file is written
    log = EpochLog()
    metrics = training.train(config, dataset=stripes, callbacks=[log])
    assert log.begun == []  # nothing trained again
    assert metrics["resumed_from_epoch"] == 2 and metrics["epochs_this_session"] == 0
    assert history_epochs(run) == [0, 1]
    assert json.loads((run / "metrics.json").read_text()) == metrics
    assert (run / "model.keras").exists() and not (run / "backup").exists()


def cli_flags(config) -> list[str]:
    """`keras-resnet train` flags for `tiny(...)`'s options."""
    return [
        *("--width", "0.125", "--epochs", str(config.epochs), "--batch-size", "32"),
        *("--val-size", "100", "--no-augment", "--learning-rate", "0.05"),
        *("--warmup-epochs", "0", "--label-smoothing", "0", "--verbose", "0"),
        *("--loader", "idx", "--no-tensorboard", "--output-dir", config.output_dir),
    ]


@file_logic
def test_rerun_of_a_finished_run_changes_nothing_and_restart_trains_again(
    tmp_path, stripes, stripes_folder, capsys
):
    from keras_resnet.cli.train import main

    config = tiny(tmp_path, epochs=2)
    run = Path(config.output_dir)
    metrics = training.train(config, dataset=stripes)
    before = folder_stat(run)
    capsys.readouterr()
    log = EpochLog()
    assert training.train(config, dataset=stripes, callbacks=[log]) == metrics
    line = (
        f"run in {run} already finished: test accuracy {100 * metrics['test_accuracy']:.2f}%, "
        f"2 epochs; pass --restart to train it again"
    )
    assert capsys.readouterr().out.splitlines() == [line] and log.begun == []
    # The command line: that one line, exit 0.
    assert main([*cli_flags(config), "--source-dir", str(stripes_folder)]) == 0
    assert capsys.readouterr().out.splitlines() == [line]
    # Another option: refused as for an unfinished run, naming it.
    with pytest.raises(ValueError, match="epochs was 2 there, received epochs=3") as info:
        training.train(tiny(tmp_path, epochs=3), dataset=stripes)
    assert "--restart" in str(info.value) and "\n" not in str(info.value)
    assert folder_stat(run) == before
    # --restart trains from epoch 0; config.json keeps restart false, so the same command
    # without the flag then reports the new run as finished.
    log = EpochLog()
    restarted = training.train(
        tiny(tmp_path, epochs=2, restart=True), dataset=stripes, callbacks=[log]
    )
    assert log.begun == [0, 1] and restarted["resumed_from_epoch"] == 0
    assert history_epochs(run) == [0, 1] and not (run / "backup").exists()
    assert json.loads((run / "config.json").read_text())["restart"] is False
    capsys.readouterr()
    assert training.train(config, dataset=stripes) == restarted
    assert "already finished" in capsys.readouterr().out


@file_logic
def test_restart_of_an_unfinished_run_starts_at_epoch_0(tmp_path, stripes):
    config = tiny(tmp_path, epochs=2)
    run = Path(config.output_dir)
    killed_run(config, stripes, kill_at=1)  # epoch 0 committed
    # A changed option is no reason to refuse a restart: the old run is given up.
    log = EpochLog()
    metrics = training.train(
        tiny(tmp_path, epochs=2, restart=True, seed=1), dataset=stripes, callbacks=[log]
    )
    assert log.begun == [0, 1] and metrics["resumed_from_epoch"] == 0
    assert history_epochs(run) == [0, 1] and not (run / "backup").exists()
    assert json.loads((run / "config.json").read_text())["seed"] == 1


@file_logic
def test_fallback_to_bkp_puts_the_best_kept_epoch_in_best_keras(tmp_path, stripes):
    """The newest metadata damaged: the run resumes from the `.bkp` (one epoch older), and
    best.keras, which held the lost epoch's model, becomes the best of the epochs kept."""
    config = tiny(tmp_path, epochs=4)
    run = Path(config.output_dir)
    # Epochs 0 and 1 end with a zeroed classifier: epoch 2 is the best so far, and best.keras
    # holds the epoch about to be lost.
    spoil = SpoilEpoch({0, 1}, last_batch=400 // 32 - 1)  # the last of 12 whole batches
    with pytest.raises(Killed):
        training.train(config, dataset=stripes, callbacks=[spoil, EpochLog(kill_at=3)])
    accuracies = [float(row["val_accuracy"]) for row in read_csv(run / "history.csv")]
    assert accuracies[2] > max(accuracies[:2])
    (run / "backup" / "training_metadata.json").write_text("")
    with pytest.raises(Killed):  # stopped once restored, before epoch 2 is trained again
        training.train(config, dataset=stripes, callbacks=[EpochLog(kill_at=2)])
    assert history_epochs(run) == [0, 1]
    best = run / "checkpoints" / "best.keras"
    assert val_accuracy(best, config, stripes) == pytest.approx(max(accuracies[:2]), abs=1e-6)


@file_logic
def test_corrupt_metadata_falls_back_to_bkp(tmp_path, stripes):
    config = tiny(tmp_path, epochs=3)
    run = Path(config.output_dir)
    killed_run(config, stripes, kill_at=2)  # epochs 0 and 1 done
    metadata = run / "backup" / "training_metadata.json"
    assert json.loads(metadata.read_text())["epoch"] == 2
    metadata.write_text("")  # a kill while Keras wrote it, in place
    log = EpochLog()
    metrics = training.train(config, dataset=stripes, callbacks=[log])
    assert log.begun == [1, 2]  # from the .bkp: epoch 1 is redone, once
    assert metrics["resumed_from_epoch"] == 1
    assert history_epochs(run) == [0, 1, 2]


@file_logic
@pytest.mark.parametrize("damage", ["metadata", "weights"])
def test_unreadable_backup_without_bkp_is_one_line_and_deletes_nothing(tmp_path, stripes, damage):
    config = tiny(tmp_path, epochs=3)
    run = Path(config.output_dir)
    killed_run(config, stripes, kill_at=1)  # one epoch: no .bkp yet
    backup = run / "backup"
    if damage == "metadata":
        target = backup / "training_metadata.json"
    else:
        target = max(backup.glob("*.weights.h5"), key=lambda p: p.stat().st_mtime)
    target.write_bytes(b"\0" * target.stat().st_size)
    assert not list(backup.glob("*.bkp"))
    before = folder_state(run)
    with pytest.raises(ValueError) as info:
        training.train(config, dataset=stripes)
    message = str(info.value)
    assert "\n" not in message and target.name in message and "--restart" in message
    assert folder_state(run) == before  # history.csv and the backup kept


def history_has(run: Path, rows: int):
    """A condition true once history.csv holds `rows` epochs."""
    path = run / "history.csv"

    def check():
        try:
            return len(path.read_text().strip().splitlines()) - 1 >= rows
        except OSError:
            return False

    return check


@file_logic  # which files a restart finds: the same code on every backend
def test_an_epoch_in_history_is_never_trained_again(tmp_path, stripes, trigger):
    """Kill at the first file event after history.csv records epoch 1 (index 0): the backup
    must already hold that epoch."""
    config = tiny(tmp_path, epochs=2)
    run = Path(config.output_dir)
    recorded = history_has(run, 1)

    def kill_after_record(event, args):
        if recorded():
            disarm()
            raise Killed(event)

    trigger(kill_after_record)
    with pytest.raises(Killed):
        training.train(config, dataset=stripes)
    disarm()
    log = EpochLog()
    training.train(config, dataset=stripes, callbacks=[log])
    assert log.begun == [1]  # epoch 0 is in history.csv: not trained again
    assert history_epochs(run) == [0, 1]


class SpoilEpoch(keras.callbacks.Callback):
    """Zeroes the classifier after the last batch of `epoch` (an int or a set): its validation
    accuracy falls to chance, the worst epoch of the run."""

    def __init__(self, epoch, last_batch: int):
        super().__init__()
        self.epochs = {epoch} if isinstance(epoch, int) else set(epoch)
        self.last_batch, self.current = last_batch, None

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.current in self.epochs and batch == self.last_batch:
            for variable in self.model.get_layer("fc").weights:
                variable.assign(np.zeros(variable.shape, dtype="float32"))


@file_logic  # which files a restart finds: the same code on every backend
def test_best_checkpoint_is_the_best_epoch_across_restarts(tmp_path, stripes):
    config = tiny(tmp_path, epochs=3)
    run = Path(config.output_dir)
    killed_run(config, stripes, kill_at=2)
    spoil = SpoilEpoch(2, last_batch=400 // 32 - 1)  # 12 whole batches of 32
    metrics = training.train(config, dataset=stripes, callbacks=[spoil])
    history = read_csv(run / "history.csv")
    accuracies = [float(row["val_accuracy"]) for row in history]
    assert accuracies[2] < max(accuracies[:2])  # the resumed epoch is the worst
    best = metrics["best_checkpoint"]
    assert best["epoch"] == int(np.argmax(accuracies)) + 1 and best["value"] == max(accuracies)
    best_file = run / "checkpoints" / "best.keras"
    assert val_accuracy(best_file, config, stripes) == pytest.approx(best["value"], abs=1e-6)


@file_logic
def test_kill_while_best_keras_is_written_leaves_it_whole(tmp_path, stripes, trigger):
    config = tiny(tmp_path, epochs=2)
    best = Path(config.output_dir) / "checkpoints" / "best.keras"
    state = {}

    def kill_inside_the_save(event, args):
        if state.get("opened"):
            disarm()
            raise Killed(event)
        # the best model (saved in the backup, then linked as best.keras) or a temporary
        # file of its save, opened for writing
        if event == "open" and args and isinstance(args[0], str) and len(args) > 1:
            path, mode = Path(args[0]), args[1] if isinstance(args[1], str) else ""
            folders = (best.parent, best.parent.parent / "backup")
            if path.parent in folders and "best" in path.name and "w" in mode:
                state["opened"] = True  # kill at the next event, mid-save

    trigger(kill_inside_the_save)
    with pytest.raises(Killed):
        training.train(config, dataset=stripes)
    assert not best.exists() or keras.saving.load_model(best) is not None


@file_logic
def test_resume_with_a_changed_option_is_refused(tmp_path, stripes):
    config = tiny(tmp_path, epochs=3)
    run = Path(config.output_dir)
    killed_run(config, stripes, kill_at=1)
    before = folder_state(run)
    with pytest.raises(ValueError, match="width") as info:
        training.train(tiny(tmp_path, epochs=3, width=0.25), dataset=stripes)
    assert "\n" not in str(info.value)
    assert folder_state(run) == before
    # A harmless difference (verbose) resumes.
    log = EpochLog()
    training.train(tiny(tmp_path, epochs=3, verbose=2), dataset=stripes, callbacks=[log])
    assert log.begun == [1, 2]


@file_logic
def test_full_disk_is_one_line_and_keeps_the_last_epoch(tmp_path, stripes, trigger):
    config = tiny(tmp_path, epochs=3)
    run = Path(config.output_dir)
    recorded = history_has(run, 1)

    def disk_full(event, args):
        # From epoch 2 on, every new file in the run folder fails as on a full disk.
        if event == "open" and recorded() and args and os.fspath(args[0]).startswith(str(run)):
            mode = args[1] if len(args) > 1 and isinstance(args[1], str) else ""
            flags = args[2] if len(args) > 2 and isinstance(args[2], int) else 0
            if "w" in mode or "a" in mode or flags & (os.O_WRONLY | os.O_RDWR):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(args[0]))

    trigger(disk_full)
    with pytest.raises(ValueError, match="No space left on device") as info:
        training.train(config, dataset=stripes)
    disarm()
    assert "\n" not in str(info.value)
    assert history_epochs(run) == [0]
    assert keras.saving.load_model(run / "checkpoints" / "best.keras") is not None
    log = EpochLog()
    metrics = training.train(config, dataset=stripes, callbacks=[log])
    assert log.begun == [1, 2] and history_epochs(run) == [0, 1, 2]
    assert metrics["resumed_from_epoch"] == 1


@file_logic
def test_a_kill_while_the_finished_backup_is_removed_leaves_nothing_for_good(
    tmp_path, stripes, trigger
):
    """The finished run's backup is renamed to `.backup-finished`, then removed: a kill half
    way through the removal leaves part of it, which nothing reads. The same command then
    reports the finished run and removes that part (it stayed for good before)."""
    config = tiny(tmp_path, epochs=1)
    run = Path(config.output_dir)
    removing = {}

    def kill_inside_the_removal(event, args):
        if event == "shutil.rmtree" and os.fspath(args[0]).endswith(".backup-finished"):
            removing["started"] = True
        elif removing.get("started") and event == "os.remove":
            disarm()
            raise Killed(event)

    trigger(kill_inside_the_removal)
    with pytest.raises(Killed):
        training.train(config, dataset=stripes)
    disarm()
    assert (run / "metrics.json").exists() and not (run / "backup").exists()
    assert (run / ".backup-finished").is_dir()
    log = EpochLog()
    metrics = training.train(config, dataset=stripes, callbacks=[log])
    assert log.begun == [] and metrics["epochs"] == 1
    assert not (run / ".backup-finished").exists()


def soak_harness():
    spec = importlib.util.spec_from_file_location("soak_kills", REPO / "tests" / "soak_kills.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.one_backend("torch")
def test_soak_counts_only_recorded_epochs_trained_again():
    """The soak's "epochs redone" (the promise's definition): an epoch begun and killed before its
    commit is trained again legitimately; one committed or in history.csv is a redo."""
    redone = soak_harness().redone
    # Killed in epoch 1 before its commit: the next session begins epoch 1 again, rightly.
    assert redone(committed=1, recorded=[0], begun=[1, 2]) == []
    # Killed between the metadata commit and history.csv: epoch 1 is committed, not in
    # history.csv yet; training it again is a redo.
    assert redone(committed=2, recorded=[0], begun=[1, 2]) == [1]
    assert redone(committed=0, recorded=[0, 1, 2], begun=[0, 1]) == [0, 1]


@pytest.mark.one_backend("torch")
def test_soak_tells_a_finished_run_from_an_interrupted_one(tmp_path):
    """A kill after metrics.json and the backup's removal (process teardown) interrupts
    nothing: the same command then only reports the finished run (the soak's first long form
    counted a new run started there as 2 epochs redone)."""
    finished = soak_harness().run_finished
    assert not finished(tmp_path, 3)
    (tmp_path / "metrics.json").write_text(json.dumps({"epochs": 3}))
    (tmp_path / "backup").mkdir()
    assert not finished(tmp_path, 3)  # metrics.json written, backup not removed yet
    (tmp_path / "backup").rmdir()
    assert finished(tmp_path, 3) and not finished(tmp_path, 4)


@pytest.mark.one_backend("torch")
def test_soak_kill_moments_come_from_the_seed(tmp_path):
    """A seed replays the same kills: each is drawn before its session from the seeded
    generator and the run's committed epochs only, and lands on an event the training process
    counts itself (no timing)."""
    harness = soak_harness()
    args = argparse.Namespace(epochs=3, train_size=600)

    def plans(seed):
        rng = random.Random(seed)
        return [harness.draw_plan(rng, args, tmp_path, committed) for committed in (0, 1, 2, 3)]

    assert plans(7) == plans(7) and plans(7) != plans(8)
    for plan in plans(7):
        assert plan["rule"] in ("event", "batch")
        assert plan.get("n", 1) >= 1 and 0 <= plan.get("batch", 0) < 16  # 500 images of 32


@pytest.mark.one_backend("torch")
def test_soak_corrupt_mode_knows_which_backup_the_resume_can_read(tmp_path):
    """The corrupt mode's expectation (the epoch the rerun must resume from, None for the
    one-line stop) follows `restore_backup`: a candidate needs its metadata, weights and best
    model undamaged."""
    harness = soak_harness()
    backup = tmp_path / "backup"
    backup.mkdir()
    for epoch in (2, 3):
        (backup / f"epoch-{epoch}.weights.h5").write_bytes(b"w")
        (backup / f"best-epoch{epoch}.keras").write_bytes(b"b")
    metadata = {"epoch": 3, "weights": "epoch-3.weights.h5", "best": "best-epoch3.keras"}
    (backup / "training_metadata.json").write_text(json.dumps(metadata))
    metadata = {"epoch": 2, "weights": "epoch-2.weights.h5", "best": "best-epoch2.keras"}
    (backup / "training_metadata.json.bkp").write_text(json.dumps(metadata))

    def damaged(*names):
        return {name: harness.file_stat(tmp_path / name) for name in names}

    assert harness.committed_epoch(tmp_path, {}) == 3
    assert harness.committed_epoch(tmp_path, damaged("backup/best-epoch3.keras")) == 2
    both = damaged("backup/epoch-3.weights.h5", "backup/training_metadata.json.bkp")
    assert harness.committed_epoch(tmp_path, both) is None
    (backup / "training_metadata.json.bkp").write_text("{}")  # rewritten since: not damaged
    assert harness.committed_epoch(tmp_path, both) is None  # unreadable all the same
    assert harness.committed_epoch(tmp_path / "elsewhere", {}) == 0


# The harness kills train.py processes the same way on every backend: CI's default run soaks
# once, on PyTorch, where a session's start-up and epochs cost least on a CPU.
@pytest.mark.one_backend("torch")
def test_soak_short_form(tmp_path):
    """Two real SIGKILLs through the harness (108 s on TensorFlow, 87 s on PyTorch, on a
    2-core CPU: each session pays Keras' start-up); the long form's and the other modes' figures
    are in docs/RELIABILITY.md. Not marked slow: CI runs it."""
    env = {**os.environ, "KERAS_BACKEND": keras.backend.backend(), "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, str(REPO / "tests" / "soak_kills.py"), "--kills", "2"]
        + ["--workdir", str(tmp_path), "--epochs", "2", "--seed", "3"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["kills"] == 2 and report["epochs_redone"] == 0 and report["files_invalid"] == 0
    assert report["history_rows_changed"] == 0 and len(report["sequence"]) == 2
