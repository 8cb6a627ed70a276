"""Where a model's preprocessing record is found: a run's config.json, an export's
assets/export.json, a member of a `.keras` file (`add_record`, `read_keras_record`), a Keras
model built by this package (`record_of_model`), or registered pretrained weights
(`data_config` tries them all)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from keras_resnet.preprocessing.record import Preprocessing
from keras_resnet.training.run_folder import CONFIG_FILE

PREPROCESSING_KEY = "preprocessing"


def data_config(model_or_run) -> Preprocessing:
    """The preprocessing record of a model or of the files beside one.

    Args:
        model_or_run: a run folder (its config.json), an exported version folder (its
            assets/export.json), a `.keras`/`.onnx` file inside either, a `keras.Model` built
            by this package (its record, or the package's recipe for its input size and its
            'normalize' layer), or the name of registered pretrained weights.

    Raises:
        ValueError: one line, when nothing names a record.
    """
    if isinstance(model_or_run, Preprocessing):
        return model_or_run
    if isinstance(model_or_run, (str, os.PathLike)) and os.path.exists(model_or_run):
        return _record_of_path(Path(model_or_run))
    if isinstance(model_or_run, str):
        from keras_resnet import pretrained

        entry = pretrained.get_weights(model_or_run)
        return Preprocessing.from_data_config(entry.data_config)
    return record_of_model(model_or_run)


# The record's member inside a `.keras` archive (a zip that Keras reads by its own members'
# names, leaving others alone).
KERAS_MEMBER = "keras_resnet_preprocessing.json"


def add_record(keras_file: str | os.PathLike, record: Preprocessing) -> None:
    """Stores `record` inside a `.keras` file (a member of its zip), where `data_config`
    finds it: the model file then says how its inputs were made, wherever it is copied."""
    import zipfile

    with zipfile.ZipFile(keras_file, "a") as archive:
        if KERAS_MEMBER not in archive.namelist():
            archive.writestr(KERAS_MEMBER, json.dumps(record.to_dict(), indent=2) + "\n")


def read_keras_record(keras_file: str | os.PathLike) -> Preprocessing | None:
    """The record stored in a `.keras` file by `add_record`, or None."""
    import zipfile

    try:
        with zipfile.ZipFile(keras_file) as archive:
            if KERAS_MEMBER not in archive.namelist():
                return None
            return Preprocessing.from_dict(json.loads(archive.read(KERAS_MEMBER)))
    except (OSError, ValueError, zipfile.BadZipFile):
        return None


def _record_of_path(path: Path) -> Preprocessing:
    if path.is_file() and path.suffix == ".keras":
        record = read_keras_record(path)
        if record is not None:
            return record
    folders = [path] if path.is_dir() else [path.parent]
    if folders[0].name == "checkpoints":
        folders.append(folders[0].parent)
    for folder in folders:
        for candidate in (folder / "assets" / "export.json", folder / CONFIG_FILE):
            if not candidate.is_file():
                continue
            try:
                values = json.loads(candidate.read_text(encoding="utf-8"))
            except (OSError, ValueError) as error:
                raise ValueError(f"cannot read {os.fspath(candidate)!r}: {error}") from None
            if isinstance(values, dict) and isinstance(values.get(PREPROCESSING_KEY), dict):
                return Preprocessing.from_dict(values[PREPROCESSING_KEY])
    raise ValueError(
        f"no preprocessing record beside {os.fspath(path)!r} (a run's config.json or an "
        "export's assets/export.json holds one)"
    )


def record_of_model(model) -> Preprocessing:
    """A Keras model's record: the one it carries (`model.preprocessing`, set by the builders
    for named weights), else the package's recipe for its input size, with the statistics of
    its 'normalize' layer."""
    import keras

    record = getattr(model, "preprocessing", None)
    if isinstance(record, Preprocessing):
        return record
    height, width, channels = model.input_shape[1:]
    if height is None or width is None:
        raise ValueError(
            f"model {model.name!r} takes images of any size: give its record (Preprocessing) "
            "explicitly"
        )
    mean = std = None
    try:
        normalize = model.get_layer("normalize")
    except ValueError:
        normalize = None
    if normalize is not None and getattr(normalize, "input_mean", None) is not None:
        mean = keras.ops.convert_to_numpy(normalize.input_mean).ravel().tolist()
        variance = keras.ops.convert_to_numpy(normalize.input_variance).ravel()
        std = np.sqrt(variance).tolist()
    return Preprocessing.for_images((int(height), int(width)), int(channels), mean=mean, std=std)
