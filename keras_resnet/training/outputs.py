"""The run folder: its check, history.csv read back, the curves, and metrics.json's figures."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any

from keras_resnet.utils import OptionError, write_text_atomic


def check_output_dir(path: str | os.PathLike) -> Path:
    """Creates the run folder and checks that it can be written; OptionError naming
    output_dir."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write_test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        raise OptionError(
            "output_dir",
            f"output_dir must be a writable folder, received output_dir="
            f"{os.fspath(path)!r} ({error.strerror or error})",
        ) from None
    return path


def write_json(path: str | os.PathLike, values: Any) -> None:
    """`values` as indented JSON, written whole or not at all."""
    write_text_atomic(path, json.dumps(values, indent=2) + "\n")


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


def plot_curves(history: dict[str, list[float]], path: str | os.PathLike, title: str = "") -> None:
    """Loss and accuracy per epoch (train, validation, test) into one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [e + 1 for e in history["epoch"]]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for prefix, label in (("", "train"), ("val_", "validation"), ("test_", "test")):
        if f"{prefix}loss" in history:
            ax_loss.plot(epochs, history[f"{prefix}loss"], label=label)
        if f"{prefix}accuracy" in history:
            ax_acc.plot(epochs, [100 * a for a in history[f"{prefix}accuracy"]], label=label)
    ax_loss.set(xlabel="epoch", ylabel="loss (with label smoothing)", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    if "test_accuracy" in history or "val_accuracy" in history:
        best = max(history.get("test_accuracy", history.get("val_accuracy")))
        ax_acc.set_ylim(max(0, 100 * best - 10), 100)
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def time_to(history: dict[str, list[float]], key: str, target: float) -> dict | None:
    """The first epoch (1-based) whose `key` reaches `target`, with its `elapsed_s`; None if
    none does."""
    for i, value in enumerate(history.get(key, [])):
        if value >= target:
            return {"epoch": int(history["epoch"][i]) + 1, "elapsed_s": history["elapsed_s"][i]}
    return None


# Options that change how a run is watched or where its data is read, not what it trains.
RESUME_HARMLESS = (
    "verbose",
    "tensorboard",
    "source_dir",
    "data_dir",
    "loader",
    "output_dir",
    "run_name",
    "restart",
)


def finished_metrics(metrics_file: Path, backup_dir: Path) -> dict | None:
    """metrics.json of a run that finished (its last file written, its backup retired), or
    None: no metrics.json, an unreadable one, or a backup still there (a run killed before
    it retired its backup, or a `--restart` of a finished run under way)."""
    if backup_dir.exists():
        return None
    try:
        metrics = json.loads(metrics_file.read_text())
    except (OSError, ValueError):
        return None
    return metrics if isinstance(metrics, dict) else None


def _flat(values: dict) -> dict:
    """config.json's values with the model's fields beside the training options (a model
    option's name is its flag's)."""
    flat = {k: v for k, v in values.items() if k != "model"}
    model = values.get("model")
    flat.update(model if isinstance(model, dict) else {"model": model})
    return flat


def check_same_run(config_file: Path, new: dict, *, normalize) -> None:
    """Refuses to resume (or to report as finished) a run whose config.json differs from `new`
    in an option that changes the run (`RESUME_HARMLESS` may differ).

    Args:
        config_file: the run's config.json.
        new: the new run's `TrainConfig.to_dict()`.
        normalize: maps config.json's values to `to_dict()` form (older layouts).

    Raises:
        OptionError: naming the first changed option, its old and new values.
    """
    try:
        old = normalize(json.loads(config_file.read_text()))
    except (OSError, ValueError, TypeError) as error:
        raise OptionError(
            "output_dir",
            f"cannot resume: {config_file} cannot be read ({error}); rerun with --restart to "
            f"start the run over",
        ) from None
    old, new = _flat(old), _flat(new)
    for key in sorted(set(old) | set(new)):
        if key in RESUME_HARMLESS or old.get(key) == new.get(key):
            continue
        raise OptionError(
            key,
            f"cannot resume the run in {config_file.parent} with a changed option: {key} was "
            f"{old.get(key)!r} there, received {key}={new.get(key)!r}; rerun with its options "
            f"(--config {config_file}), choose another --output-dir, or pass --restart to "
            f"start it over",
        )
