"""The run's own callbacks and what they read back from a run folder: the epoch clock, the
async-safe marking, the epoch-end saves (written by a background thread) and the epochs and wall
time of earlier sessions of a resumed run."""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import math
import os
import re
import secrets
import shutil
import time
import zipfile
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import keras
import numpy as np

from keras_resnet.layers import plain_keras_model
from keras_resnet.utils import atomic_path, write_text_atomic

METADATA_FILE = "training_metadata.json"  # the name Keras' BackupAndRestore gives it
PENDING_BEST = re.compile(r"^\.best-epoch(\d+)\.keras$")
# Room asked for beyond the weights' bytes before a backup is written (HDF5's own records).
BACKUP_MARGIN = 1 << 20
# Test hook: seconds the writer sleeps after each file of an epoch's save (the best model, the
# backup's weights, its metadata, history.csv), so that a test can kill the process while a
# save is half done, as serving/export.py's KERAS_RESNET_EXPORT_PAUSE does for exports.
SAVE_PAUSE_ENV = "KERAS_RESNET_SAVE_PAUSE"


def _pause() -> None:
    seconds = float(os.environ.get(SAVE_PAUSE_ENV) or 0)
    if seconds > 0:
        time.sleep(seconds)


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
    """Completed epochs recorded in a backup's metadata (0 when there is none or it is
    unreadable; `RunState.restore` says which file is bad)."""
    path = backup_dir / METADATA_FILE
    try:
        return int(json.loads(path.read_text())["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


class BackupError(ValueError):
    """A run's backup cannot be read and has no readable `.bkp` copy; the message names the
    file and says how to start over. Nothing was deleted."""


def _reason(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return (text or type(error).__name__)[:120]


def _number(value) -> float | None:
    try:
        return float(np.asarray(value))
    except (TypeError, ValueError):
        return None


def history_text(rows: list[dict]) -> str:
    """history.csv's text: `epoch`, then the other columns sorted (CSVLogger's layout)."""
    keys = ["epoch", *sorted({k for row in rows for k in row} - {"epoch"})]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=keys, lineterminator="\n", restval="")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def history_rows(history_csv: Path, before_epoch: int) -> list[dict]:
    """history.csv's rows of the epochs before `before_epoch` (the last row of an epoch wins),
    as numbers; a torn last line is dropped."""
    rows: dict[int, dict] = {}
    if not history_csv.exists():
        return []
    with history_csv.open() as f:
        for row in csv.DictReader(f):
            try:
                epoch = int(row["epoch"])
            except (TypeError, ValueError, KeyError):
                continue
            if epoch < before_epoch:
                numbers = {k: _number(v) for k, v in row.items() if v not in ("", "NA", None)}
                numbers = {k: v for k, v in numbers.items() if v is not None}
                rows[epoch] = {**numbers, "epoch": epoch}
    return [rows[e] for e in sorted(rows)]


def best_so_far(rows: list[dict], monitor: str) -> float:
    """The highest `monitor` in `rows` (-inf when none): where a resumed checkpoint starts."""
    values = [r.get(monitor) for r in rows]
    values = [v for v in values if v is not None and not math.isnan(v)]
    return max(values, default=-math.inf)


def best_name(rows: list[dict], monitor: str) -> str | None:
    """The backup's file of the best epoch of `rows` (the first with the highest `monitor`,
    the one RunState saved), e.g. 'best-epoch3.keras'; None when no epoch has a value."""
    values = [(r.get(monitor), r["epoch"]) for r in rows]
    values = [(v, -e) for v, e in values if v is not None and not math.isnan(v)]
    return f"best-epoch{-max(values)[1] + 1}.keras" if values else None


def weights_bytes(model) -> int:
    """The bytes of the model's and its optimizer's variables: a backup's size, near enough."""
    variables = list(model.weights)
    if getattr(model, "optimizer", None) is not None:
        variables += list(model.optimizer.variables)
    return sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in variables)


def check_room(folder: Path, needed: int) -> None:
    """Raises ENOSPC when `folder`'s disk has less than `needed` bytes free.

    h5py meeting a full disk half way through a file leaves the file open inside HDF5, which
    prints an error per object it frees and then crashes the interpreter at exit (SIGSEGV,
    seen with h5py 3 on tmpfs): the weights are written only when they fit.
    """
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise OSError(
            errno.ENOSPC,
            f"No space left on device ({free / 2**20:.1f} MiB free, an epoch's backup needs "
            f"{needed / 2**20:.1f} MiB)",
            os.fspath(folder),
        )


def _write_weights(model, path: Path) -> None:
    """`model.save_weights(path)` (with the optimizer's), written whole only when it fits."""
    previous = [p.stat().st_size for p in path.parent.glob("epoch-*.weights.h5")]
    check_room(path.parent, max(previous, default=weights_bytes(model)) + BACKUP_MARGIN)
    with atomic_path(path) as tmp:
        try:
            model.save_weights(tmp)
        except OSError:
            # The disk filled all the same (another writer). HDF5 keeps the failed file open
            # and writes to it again at interpreter exit, which then crashes (SIGSEGV):
            # freeing what it wrote lets that last write succeed.
            os.truncate(tmp, 0)
            raise


def save_backup(
    model, backup_dir: Path, epoch: int, rows: list[dict], best: str | None = None
) -> None:
    """The state after `epoch` completed epochs, each file written whole: the weights (with the
    optimizer's) under a name of their own, the old metadata kept as `.bkp`, then the new
    metadata, which names the weights, the best epoch's model file in the backup (`best`) and
    holds history.csv's rows: writing it commits the epoch. Weights and best models that no
    metadata names are removed last."""
    backup_dir.mkdir(parents=True, exist_ok=True)
    weights = f"epoch-{epoch}.weights.h5"
    _write_weights(model, backup_dir / weights)
    _pause()
    metadata = backup_dir / METADATA_FILE
    previous = metadata.with_name(METADATA_FILE + ".bkp")
    # The metadata becomes the `.bkp` only when it is the epoch before. Not when it is damaged
    # or of this epoch (the run fell back to the `.bkp` and trains that epoch again): the
    # `.bkp` is then the state the run resumed from, and its weights are not overwritten.
    if 0 < backup_epoch(backup_dir) < epoch:
        with atomic_path(previous) as tmp:
            shutil.copyfile(metadata, tmp)
    values = {"epoch": epoch, "batch": 0, "weights": weights, "best": best, "history": rows}
    write_text_atomic(metadata, json.dumps(values))
    _pause()
    keep = {weights, best}
    try:
        old = json.loads(previous.read_text())
        keep.update((old["weights"], old.get("best")))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    for pattern in ("epoch-*.weights.h5", "best-epoch*.keras"):
        for path in backup_dir.glob(pattern):
            if path.name not in keep:
                path.unlink()


def whole_zip(path: Path) -> None:
    """Raises ValueError unless `path` is a zip file (a `.keras` model) whose every member
    passes its CRC check."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (OSError, zipfile.BadZipFile) as error:
        raise ValueError(f"not a whole .keras file: {_reason(error)}") from None
    if bad is not None:
        raise ValueError(f"not a whole .keras file: {bad} is damaged")


def restore_backup(model, backup_dir: Path) -> tuple[int, list[dict] | None, Path | None]:
    """Loads the newest readable backup into `model` (weights and optimizer state).

    Tries the metadata, then its `.bkp` copy (the epoch before); a candidate is readable when
    its metadata, its weights and the best epoch's model it names are whole. Also reads the
    backups Keras' BackupAndRestore wrote (`latest.weights.h5`, no rows).

    Returns:
        (completed epochs, history rows or None, the best epoch's model in the backup or
        None); (0, None, None) when there is no backup.

    Raises:
        BackupError: there is a backup but no readable one; nothing is changed.
    """
    metadata = backup_dir / METADATA_FILE
    candidates = (
        (metadata, "latest.weights.h5"),
        (Path(f"{metadata}.bkp"), "latest.weights.h5.bkp"),
    )
    problems = []
    for path, keras_weights in candidates:
        if not path.exists():
            continue
        try:
            values = json.loads(path.read_text())
            epoch = int(values["epoch"])
            weights = backup_dir / values.get("weights", keras_weights)
            best = backup_dir / values["best"] if values.get("best") else None
        except (OSError, ValueError, KeyError, TypeError) as error:
            problems.append(f"{path} ({_reason(error)})")
            continue
        try:
            if best is not None:
                whole_zip(best)
        except ValueError as error:
            problems.append(f"{best} ({_reason(error)})")
            continue
        try:
            if model.optimizer is not None and not model.optimizer.built:
                model.optimizer.build(model.trainable_variables)
            model.load_weights(weights)
        except Exception as error:  # h5py and Keras raise several types for a damaged file
            problems.append(f"{weights} ({_reason(error)})")
            continue
        return epoch, values.get("history"), best
    if not problems:
        return 0, None, None
    raise BackupError(
        f"the run's backup cannot be read: {'; '.join(problems)}; no readable .bkp copy. "
        f"Rerun with --restart to start the run over (its completed epochs are lost), or "
        f"delete {backup_dir.parent}"
    )


def install_best(source: Path, best_file: Path) -> None:
    """`source` (a best model in the backup) becomes best.keras in one `os.replace`: through a
    hard link, which needs no room on a full disk, or a copy where the folder takes no links."""
    link = best_file.with_name(f".{best_file.name}.{secrets.token_hex(4)}.keras")
    try:
        os.link(source, link)
    except OSError:
        with atomic_path(best_file) as tmp:
            shutil.copyfile(source, tmp)
        return
    try:
        os.replace(link, best_file)
    finally:
        if link.exists():
            link.unlink()


def settle_best(best_file: Path, completed: int, backup_best: Path | None = None) -> None:
    """Makes best.keras the best epoch of the restored history.

    A best checkpoint pending in the checkpoints folder (runs without a backup) becomes
    best.keras if its epoch completed, and is removed if that epoch will be trained again.
    With a backup, `backup_best` (from `restore_backup`) is the best epoch of the restored
    history: best.keras becomes it unless it is that file already. This also undoes a
    best.keras of an epoch that a damaged backup lost (the run fell back to the `.bkp`).
    """
    pending = sorted(
        (int(m.group(1)), p)
        for p in best_file.parent.glob(".best-epoch*.keras")
        if (m := PENDING_BEST.match(p.name))
    )
    for epoch, path in pending:
        if epoch <= completed:
            os.replace(path, best_file)
        else:
            path.unlink()
    if backup_best is None or not backup_best.is_file():
        return
    if not (best_file.exists() and os.path.samefile(best_file, backup_best)):
        install_best(backup_best, best_file)


# Temporary files of `atomic_path` (".NAME.RANDOM.SUFFIX") that a kill left behind.
LEFT_BY_KILL = re.compile(
    r"^\.(\.?best-epoch\d+\.keras|epoch-\d+\.weights\.h5|training_metadata\.json(\.bkp)?"
    r"|best\.keras|history\.csv|config\.json|metrics\.json|model\.keras)\.[A-Za-z0-9_]{8}"
)


def remove_leftovers(*folders: Path) -> None:
    """Removes the temporary files of saves that a kill interrupted."""
    for folder in folders:
        for path in folder.glob(".*") if folder.is_dir() else ():
            if path.is_file() and LEFT_BY_KILL.match(path.name):
                path.unlink()


def retired_path(backup_dir: Path) -> Path:
    """The name a finished run's backup is renamed to before it is removed
    (`.backup-finished` beside `backup`)."""
    return backup_dir.with_name(f".{backup_dir.name}-finished")


def remove_retired_backup(backup_dir: Path) -> None:
    """Removes what a kill during `retire_backup`'s removal left (a part of the renamed
    backup). Nothing reads it: without this it would stay in a finished run's folder for good."""
    retired = retired_path(backup_dir)
    if retired.is_dir() and not retired.is_symlink():
        shutil.rmtree(retired)


def retire_backup(backup_dir: Path) -> None:
    """Removes the backup once the run's last file is written: renamed first (one step), so
    that a kill during the removal never leaves half a backup to resume from; what such a kill
    leaves is removed by `remove_retired_backup` (here, and when the finished run is run
    again)."""
    remove_retired_backup(backup_dir)
    if backup_dir.exists():
        os.replace(backup_dir, retired_path(backup_dir))
        remove_retired_backup(backup_dir)


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

    def _pending(self, epoch: int) -> Path:
        if self.backup_dir is not None:
            return self.backup_dir / f"best-epoch{epoch}.keras"
        return self.best_file.with_name(f".best-epoch{epoch}.keras")

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
        value = _number(logs.get(self.monitor))
        value = math.nan if value is None else value
        pending = None
        if self.best_file is not None and value > self.best:  # NaN never saves
            pending = self._pending(epoch + 1)
            self.best = value
        values = None
        if self.backup_dir is not None or pending is not None:
            if self._blueprint is None:
                # Read here, where the variables hold their values (JAX empties them while
                # an epoch trains): a learning rate that is a variable is in the optimizer's.
                self._blueprint = _blueprint(self.model)
            values = host_copy(state_variables(self.model))
        logs["save_wait_s"] = time.perf_counter() - start
        numbers = {k: _number(v) for k, v in logs.items()}
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
        from keras_resnet.data.gpu_crop import backbone_of  # data imports layers

        with _host_scope():
            mirror = None
            if values is not None:
                mirror = self._mirrors()
                self._assign(state_variables(mirror), values)
            if pending is not None:
                self._plain.set_weights(backbone_of(mirror).get_weights())
                with atomic_path(pending) as tmp:
                    self._plain.save(tmp)
                _pause()
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
        _pause()
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
            self._plain = plain_keras_model(self._mirror)
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
