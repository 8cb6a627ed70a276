"""What a run writes beside its training: the run folder created and checked, JSON written
whole, the curves, time to accuracy, and the check that a resumed run has the same options.
The folder's layout and how its files are read back: `keras_resnet.training.run_folder`."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Any

from keras_resnet.config import ResNetConfig
from keras_resnet.training.run_folder import (  # noqa: F401 (also imported from here)
    BACKUP_DIR,
    BEST_FILE,
    CLASS_NAMES_FILE,
    CONFIG_FILE,
    CURVES_FILE,
    HISTORY_FILE,
    METRICS_FILE,
    MODEL_FILE,
    RunFolder,
    finished_metrics,
    read_history,
)
from keras_resnet.utils import OptionError, installed, write_text_atomic


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


def remove_unstarted_folder(path: str | os.PathLike) -> bool:
    """Removes a run folder that this run made, after the run failed before it saved an epoch:
    no backup, history.csv, best checkpoint, model or metrics in it, only what its start wrote
    (config.json, class_names.txt, logs). A folder holding a saved epoch is kept. Returns
    whether it was removed."""
    folder = RunFolder(path)
    saved = (folder.history, folder.best, folder.model, folder.metrics)
    if folder.backup_started() or any(file.exists() for file in saved):
        return False
    shutil.rmtree(folder.path, ignore_errors=True)
    return not folder.path.exists()


def write_json(path: str | os.PathLike, values: Any) -> None:
    """`values` as indented JSON, written whole or not at all."""
    write_text_atomic(path, json.dumps(values, indent=2) + "\n")


def plot_curves(history: dict[str, list[float]], path: str | os.PathLike, title: str = "") -> bool:
    """Loss and accuracy per epoch (train, validation, test) into one PNG. Returns False, and
    writes nothing, without matplotlib (the `plots` extra); history.csv holds the figures."""
    if not installed("matplotlib"):
        return False
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
    return True


def time_to(history: dict[str, list[float]], key: str, target: float) -> dict | None:
    """The first epoch (1-based) whose `key` reaches `target`, with its `elapsed_s`; None if
    none does."""
    for i, value in enumerate(history.get(key, [])):
        if value >= target:
            return {"epoch": int(history["epoch"][i]) + 1, "elapsed_s": history["elapsed_s"][i]}
    return None


def from_data_fields() -> tuple[str, ...]:
    """The `ResNetConfig` fields a run fills from its data (classes, input shape,
    normalization, data format): declared `from_data` in their metadata."""
    return tuple(f.name for f in dataclasses.fields(ResNetConfig) if f.metadata.get("from_data"))


def resume_safe_fields() -> tuple[str, ...]:
    """The options that may change when a run resumes (how it is watched, where its data is
    read): `TrainConfig` fields declared `resume="safe"`."""
    from keras_resnet.training.config import field_names

    return field_names("resume", "safe")


def _flat(values: dict) -> dict:
    """config.json's values with the model's fields beside the training options (a model
    option's name is its flag's)."""
    flat = {k: v for k, v in values.items() if k != "model"}
    model = values.get("model")
    flat.update(model if isinstance(model, dict) else {"model": model})
    return flat


def check_same_run(config_file: Path, new: dict) -> None:
    """Refuses to resume (or to report as finished) a run whose config.json differs from `new`
    in an option that changes the run (`resume_safe_fields` may differ).

    Args:
        config_file: the run's config.json.
        new: the new run's `TrainConfig.to_dict()`.

    Raises:
        OptionError: naming the first changed option, its old and new values; for a model
            field the run fills from the data, saying that the data changed.
    """
    from keras_resnet.training.config import TrainConfig

    try:
        old = TrainConfig.from_dict(json.loads(config_file.read_text())).to_dict()
        new = TrainConfig.from_dict(new).to_dict()
    except (OSError, ValueError, TypeError) as error:
        raise OptionError(
            "output_dir",
            f"cannot resume: {config_file} cannot be read ({error}); rerun with --restart to "
            f"start the run over",
        ) from None
    safe, from_data = resume_safe_fields(), from_data_fields()
    fixes = (
        f"rerun with its options (--config {config_file}), choose another --output-dir, or "
        f"pass --restart to start it over"
    )
    for key in sorted(set(old) | set(new)):
        if key == "model":
            continue
        if key not in safe and old.get(key) != new.get(key):
            raise OptionError(
                key,
                f"cannot resume the run in {config_file.parent} with a changed option: {key} "
                f"was {old.get(key)!r} there, received {key}={new.get(key)!r}; {fixes}",
            )
    old_model, new_model = old.get("model") or {}, new.get("model") or {}
    for key in sorted(set(old_model) | set(new_model)):
        if old_model.get(key) == new_model.get(key):
            continue
        if key in from_data:
            raise OptionError(
                "dataset",
                f"cannot resume the run in {config_file.parent}: its data changed (the model's "
                f"{key}, which the run takes from the data, was {old_model.get(key)!r}, now "
                f"{new_model.get(key)!r}); restore the data, choose another --output-dir, or "
                f"pass --restart to start it over",
            )
        raise OptionError(
            key,
            f"cannot resume the run in {config_file.parent} with a changed option: {key} was "
            f"{old_model.get(key)!r} there, received {key}={new_model.get(key)!r}; {fixes}",
        )
