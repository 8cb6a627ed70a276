"""The files beside a model: class names, an export's metadata, a run's configuration, and
loading a `.keras` file safely."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import keras

# Registers keras_resnet's layers for safe-mode loading of files written before exports became
# plain Keras: BatchNormalization (every model) and RandomPadCrop (a run's checkpoints/best.keras).
import keras_resnet.layers  # noqa: F401
from keras_resnet.config import ResNetConfig
from keras_resnet.training.run_folder import CLASS_NAMES_FILE
from keras_resnet.training.run_folder import CONFIG_FILE as RUN_CONFIG_FILE
from keras_resnet.training.run_folder import METRICS_FILE as RUN_METRICS_FILE
from keras_resnet.utils import OptionError, installed, one_line

METADATA_FILE = "export.json"
KERAS_FILE = "model.keras"
ONNX_FILE = "model.onnx"
LITERT_FILE = "model.tflite"


def require_tensorflow(what: str, hint: str = "") -> None:
    """Raises a one-line `ValueError` when TensorFlow is not installed."""
    if not installed("tensorflow"):
        raise ValueError(
            f"{what} needs TensorFlow, which is not installed (pip install tensorflow){hint}"
        )


def load_keras_model(path: str | os.PathLike) -> keras.Model:
    """Loads a `.keras` file with `safe_mode=True`; every failure is a one-line `ValueError`.

    Args:
        path: a `.keras` file.

    Returns:
        The `keras.Model`.

    Raises:
        ValueError: the file is missing, is not a Keras archive, or holds code (a `Lambda`
            layer or another deserialized Python function) that safe mode refuses to run.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"model file not found, received model={os.fspath(path)!r}")
    if path.suffix.lower() == ".keras":
        # A .keras file is a zip archive; Keras calls one that is cut short "File not found".
        damaged = not zipfile.is_zipfile(path)
        if not damaged:
            try:
                with zipfile.ZipFile(path) as archive:
                    damaged = archive.testzip() is not None
            except (OSError, zipfile.BadZipFile, EOFError, ValueError):
                damaged = True
        if damaged:
            raise ValueError(
                f"model file {os.fspath(path)!r} is not a whole .keras archive (cut short or "
                "damaged: a .keras file is a zip archive); copy or save it again"
            )
    try:
        # safe_mode=True is Keras' default; it is spelled out because it is the security
        # boundary: a model file must never run code from the file on load.
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as error:  # noqa: BLE001 - every loader failure becomes one line
        if "safe_mode" in str(error):
            raise ValueError(
                f"model file {os.fspath(path)!r} holds Python code (e.g. a Lambda layer); "
                "refusing to load it with safe_mode on"
            ) from None
        raise ValueError(
            f"cannot load model file {os.fspath(path)!r} (not a Keras model file): "
            f"{one_line(error)}"
        ) from None


def read_class_names(folder: str | os.PathLike) -> list[str] | None:
    """Class names stored beside a model: `assets/class_names.txt`, `class_names.txt`, or
    `class_names` in a training run's `metrics.json` (the run's, for `checkpoints/`). None when
    there are none."""
    folder = Path(folder)
    if folder.name == "checkpoints":  # a run's checkpoints/best.keras: the run's metrics.json
        return read_class_names(folder.parent)
    for candidate in (folder / "assets" / CLASS_NAMES_FILE, folder / CLASS_NAMES_FILE):
        if candidate.is_file():
            # One name a line, split on newlines only: `splitlines` would also split a name
            # at a form feed or another Unicode line break. A byte-order mark is not a name.
            text = candidate.read_text(encoding="utf-8-sig")
            return text.removesuffix("\n").split("\n") if text else []
    names = _read_json(folder / RUN_METRICS_FILE).get("class_names")
    return [str(name) for name in names] if isinstance(names, list) else None


def _read_json(path: Path) -> dict:
    """A JSON object from `path`, {} when it is missing or not a JSON object."""
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError):
        return {}
    return value if isinstance(value, dict) else {}


def read_metadata(folder: str | os.PathLike) -> dict:
    """`assets/export.json` of an exported version directory ({} when there is none)."""
    path = Path(folder) / "assets" / METADATA_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise ValueError(
            f"corrupt export metadata {os.fspath(path)!r}: {one_line(error)}"
        ) from None


def latest_version(base: str | os.PathLike) -> Path | None:
    """The highest numeric subdirectory of a TF Serving model base directory, or None."""
    base = Path(base)
    versions = [int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit()]
    return base / str(max(versions)) if versions else None


def class_names_or_indices(names: list[str] | None, num_classes: int) -> list[str]:
    """`names` when there is one per class; else ImageNet's for a 1000-class model (one
    trained on ImageNet, as every registered pretrained model is); else the class indices as
    strings."""
    if names is not None and len(names) == num_classes:
        return names
    if num_classes == 1000:
        from keras_resnet.pretrained import imagenet_classes

        return list(imagenet_classes())
    return [str(i) for i in range(num_classes)]


def run_model_options(run_config: dict) -> dict | None:
    """The model part of a run's config.json, in either of its forms, as ResNetConfig fields.

    - `{"model": {...ResNetConfig.to_dict()...}, ...}` (runs that embed ResNetConfig);
    - the older flat form: `{"model": "resnet18", "block": ..., "width": ..., ...}`.

    Both are read by `TrainConfig.from_dict`, the one reader of run configurations. Returns None
    when the config names no model or cannot be read. The flat form holds no input shape, class
    count or normalization: `model_config` takes them from the model itself.
    """
    from keras_resnet.training.config import TrainConfig

    if not isinstance(run_config.get("model"), dict | str):
        return None
    try:
        return TrainConfig.from_dict(run_config).model.to_dict()
    except (OptionError, ValueError, TypeError):
        return None


def model_config(model: keras.Model, run_folder: str | os.PathLike | None) -> dict | None:
    """`ResNetConfig.to_dict()` of `model`, from its run's config.json, or None.

    The run's options are completed from the model (input shape, classes, normalization, name)
    and kept only when `build_model` of them gives the model's architecture: the same
    parameter count and the same names of the layers that hold weights. A model without a run
    folder (a bare `.keras` file, a `keras.Model`) or with no config.json gives None: nothing
    is recorded rather than a guess.
    """
    from keras_resnet.models import build_model

    if run_folder is None:
        return None
    folder = Path(run_folder)
    if folder.name == "checkpoints":
        folder = folder.parent
    options = run_model_options(_read_json(folder / RUN_CONFIG_FILE))
    if options is None:
        return None
    options["input_shape"] = list(model.input_shape[1:])
    options["num_classes"] = int(model.output_shape[-1])
    options["name"] = model.name
    normalize = _layer_or_none(model, "normalize")
    if normalize is not None and getattr(normalize, "input_mean", None) is not None:
        variance = keras.ops.convert_to_numpy(normalize.input_variance).ravel()
        mean = keras.ops.convert_to_numpy(normalize.input_mean).ravel()
        options["normalization"] = [mean.tolist(), (variance**0.5).tolist()]
    try:
        config = ResNetConfig.from_dict(options)
        rebuilt = build_model(config)
    except (OptionError, ValueError, TypeError):
        return None
    if rebuilt.count_params() != model.count_params() or weighted_names(rebuilt) != (
        weighted_names(model)
    ):
        return None
    return config.to_dict()


def _layer_or_none(model: keras.Model, name: str):
    try:
        return model.get_layer(name)
    except ValueError:
        return None


def weighted_names(model: keras.Model) -> list[str]:
    """Names of the layers of `model` that hold weights, in order."""
    return [layer.name for layer in model.layers if layer.weights]
