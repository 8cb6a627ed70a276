"""The run folder: its layout (`RunFolder`; the files are listed in `keras_resnet.training`'s
docstring), and how its files are written and read back: the backup's format (each epoch
committed whole, a `.bkp` copy to fall back to, retired once the run is finished), history.csv,
the best checkpoint, and the temporary files a kill leaves behind. A run is finished once
metrics.json is written and its backup retired (`RunFolder.finished`)."""

from __future__ import annotations

import csv
import dataclasses
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
from pathlib import Path

import numpy as np

from keras_resnet.utils import atomic_path, write_text_atomic

CONFIG_FILE = "config.json"
MODEL_FILE = "model.keras"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.csv"
CURVES_FILE = "curves.png"
# The file `keras_resnet.serving.read_class_names` reads beside a model (export, predict).
CLASS_NAMES_FILE = "class_names.txt"
CHECKPOINTS_DIR = "checkpoints"
BEST_FILE = os.path.join(CHECKPOINTS_DIR, "best.keras")
BACKUP_DIR = "backup"
LOGS_DIR = "logs"
METADATA_FILE = "training_metadata.json"  # the name Keras' BackupAndRestore gives it
PENDING_BEST = re.compile(r"^\.best-epoch(\d+)\.keras$")
# Room asked for beyond the weights' bytes before a backup is written (HDF5's own records).
BACKUP_MARGIN = 1 << 20
# Test hook: seconds the writer sleeps after each file of an epoch's save, so that a test can
# kill the process while a save is half done (as KERAS_RESNET_EXPORT_PAUSE does for exports).
SAVE_PAUSE_ENV = "KERAS_RESNET_SAVE_PAUSE"


@dataclasses.dataclass(frozen=True)
class RunFolder:
    """A run folder's layout: where each of its files is, whether the run is finished, and its
    files read back. Reads and writes nothing when made: `RunFolder(out).best` is
    `out/checkpoints/best.keras`.

    Attributes:
        path: the folder.
    """

    path: Path

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))

    @property
    def config(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def model(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def metrics(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def history(self) -> Path:
        return self.path / HISTORY_FILE

    @property
    def curves(self) -> Path:
        return self.path / CURVES_FILE

    @property
    def class_names(self) -> Path:
        return self.path / CLASS_NAMES_FILE

    @property
    def logs(self) -> Path:
        """TensorBoard's folder."""
        return self.path / LOGS_DIR

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS_DIR

    @property
    def best(self) -> Path:
        """checkpoints/best.keras: the best epoch's model."""
        return self.path / BEST_FILE

    @property
    def backup(self) -> Path:
        """The backup of the last completed epoch (`save_backup`), while the run is unfinished."""
        return self.path / BACKUP_DIR

    def backup_started(self) -> bool:
        """Whether the backup has metadata (or its `.bkp` copy): an epoch was committed."""
        metadata = self.backup / METADATA_FILE
        return metadata.exists() or metadata.with_name(METADATA_FILE + ".bkp").exists()

    def backup_epoch(self) -> int:
        """Completed epochs the backup records (`backup_epoch`)."""
        return backup_epoch(self.backup)

    def finished(self) -> dict | None:
        """metrics.json of a finished run, or None (`finished_metrics`)."""
        return finished_metrics(self.metrics, self.backup)

    def read_config(self) -> dict:
        """config.json's values. Raises OSError or ValueError when it cannot be read."""
        return json.loads(self.config.read_text())

    def read_metrics(self) -> dict:
        """metrics.json's values. Raises OSError or ValueError when it cannot be read."""
        return json.loads(self.metrics.read_text())

    def read_history(self) -> dict[str, list[float]]:
        """history.csv as columns (`read_history`)."""
        return read_history(self.history)

    def history_rows(self, before_epoch: int) -> list[dict]:
        """history.csv's rows of the epochs before `before_epoch` (`history_rows`)."""
        return history_rows(self.history, before_epoch)

    def write_history(self, rows: list[dict]) -> None:
        """history.csv of `rows`, written whole."""
        write_text_atomic(self.history, history_text(rows))

    def write_class_names(self, names) -> Path:
        """class_names.txt: one name a line, in label order."""
        write_text_atomic(self.class_names, "".join(f"{name}\n" for name in names))
        return self.class_names

    def remove_leftovers(self) -> None:
        """Removes the temporary files that a kill left in the folder, its checkpoints and its
        backup (`remove_leftovers`)."""
        remove_leftovers(self.path, self.checkpoints, self.backup)

    def retire_backup(self) -> None:
        """`retire_backup` of the folder's backup."""
        retire_backup(self.backup)

    def remove_retired_backup(self) -> None:
        """`remove_retired_backup` of the folder's backup."""
        remove_retired_backup(self.backup)


def finished_metrics(metrics_file: Path, backup_dir: Path) -> dict | None:
    """metrics.json of a run that finished (its last file written, its backup retired), or
    None: no metrics.json, an unreadable one, or a backup still there (a run killed before
    it retired its backup, or a `--restart` of a finished run under way)."""
    if Path(backup_dir).exists():
        return None
    try:
        metrics = json.loads(Path(metrics_file).read_text())
    except (OSError, ValueError):
        return None
    return metrics if isinstance(metrics, dict) else None


def save_pause() -> None:
    """Sleeps the seconds `SAVE_PAUSE_ENV` asks for (a test's hook; none by default)."""
    seconds = float(os.environ.get(SAVE_PAUSE_ENV) or 0)
    if seconds > 0:
        time.sleep(seconds)


def as_number(value) -> float | None:
    """`value` as a float (a log's scalar, a CSV field), or None when it is not a number."""
    try:
        return float(np.asarray(value))
    except (TypeError, ValueError):
        return None


def _reason(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return (text or type(error).__name__)[:120]


# ---- history.csv ---------------------------------------------------------------------------


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


def previous_elapsed(history_csv: Path, initial_epoch: int) -> float:
    """Wall time already spent by the earlier sessions of a resumed run (from history.csv)."""
    if initial_epoch == 0 or not history_csv.exists():
        return 0.0
    with history_csv.open() as f:
        rows = [r for r in csv.DictReader(f) if int(r["epoch"]) < initial_epoch]
    return float(rows[-1]["elapsed_s"]) if rows and rows[-1].get("elapsed_s") else 0.0


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
                numbers = {k: as_number(v) for k, v in row.items() if v not in ("", "NA", None)}
                numbers = {k: v for k, v in numbers.items() if v is not None}
                rows[epoch] = {**numbers, "epoch": epoch}
    return [rows[e] for e in sorted(rows)]


# ---- the backup and the best checkpoint ----------------------------------------------------


def backup_epoch(backup_dir: Path) -> int:
    """Completed epochs recorded in a backup's metadata (0 when there is none or it is
    unreadable; `restore_backup` says which file is bad)."""
    path = backup_dir / METADATA_FILE
    try:
        return int(json.loads(path.read_text())["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


class BackupError(ValueError):
    """A run's backup cannot be read and has no readable `.bkp` copy; the message names the
    file and says how to start over. Nothing was deleted."""


def best_name(rows: list[dict], monitor: str) -> str | None:
    """The backup's file of the best epoch of `rows` (the first with the highest `monitor`,
    the one RunState saved), e.g. 'best-epoch3.keras'; None when no epoch has a value."""
    values = [(r.get(monitor), r["epoch"]) for r in rows]
    values = [(v, -e) for v, e in values if v is not None and not math.isnan(v)]
    return f"best-epoch{-max(values)[1] + 1}.keras" if values else None


def pending_best(epoch: int, *, best_file: Path, backup_dir: Path | None = None) -> Path:
    """Where the model of a better epoch (1-based `epoch`) is saved before it becomes
    best.keras: in the backup (`best_name`'s file), or without one beside best.keras under a
    hidden name (`PENDING_BEST`, which `settle_best` installs or removes)."""
    if backup_dir is not None:
        return backup_dir / f"best-epoch{epoch}.keras"
    return best_file.with_name(f".best-epoch{epoch}.keras")


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
    save_pause()
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
    save_pause()
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
