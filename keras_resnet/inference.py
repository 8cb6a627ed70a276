"""Inference on trained and exported models: load one, read images, classify, top-k.

One `Predictor` serves every artifact `scripts/export.py` writes, and the trained `.keras` file:

- a SavedModel directory (TF Serving's `<name>/<version>/`, or `<name>/` for its latest version),
  called through its `serve` signature (needs TensorFlow, whatever the Keras backend);
- a `.keras` file or a training run directory holding `model.keras`, loaded with Keras'
  `safe_mode` on: a model file is data, and no Python code from it runs (a `Lambda` layer is
  refused);
- an `.onnx` file (or a version directory holding `model.onnx`), run by onnxruntime.

Every model takes raw pixels: float32 values in 0-255, NHWC. Images are read with Pillow,
converted to the model's channel count (grayscale <-> RGB, alpha dropped) and resized to the
model's input size with bilinear interpolation (`keras.ops.image.resize`, no antialiasing), the
same resize as the exported `serve` signature's `Resizing` layer. Training does not resize: the
model's input size is the dataset's image size.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

# Registers keras_resnet's layers for safe-mode loading: BatchNormalization (every model) and
# RandomPadCrop (held by a run's checkpoints/best.keras).
import keras_resnet.layers  # noqa: F401
from keras_resnet.data import installed

# Files written next to every exported model (see keras_resnet.export).
CLASS_NAMES_FILE = "class_names.txt"
METADATA_FILE = "export.json"
KERAS_FILE = "model.keras"
ONNX_FILE = "model.onnx"
RUN_METRICS_FILE = "metrics.json"


def _one_line(error: BaseException) -> str:
    """The first non-empty line of an exception's message, with its type when it says little."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[0] if lines else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def require_tensorflow(what: str, hint: str = "") -> None:
    """Raises a one-line `ValueError` when TensorFlow is not installed."""
    if not installed("tensorflow"):
        raise ValueError(
            f"{what} needs TensorFlow, which is not installed (pip install tensorflow){hint}"
        )


def load_keras_model(path: str | os.PathLike):
    """Loads a `.keras` file with `safe_mode=True`; every failure is a one-line `ValueError`.

    Args:
        path: a `.keras` file.

    Returns:
        The `keras.Model`.

    Raises:
        ValueError: the file is missing, is not a Keras archive, or holds code (a `Lambda`
            layer or another deserialized Python function) that safe mode refuses to run.
    """
    import keras

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"model file not found, received model={os.fspath(path)!r}")
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
            f"cannot load model file {os.fspath(path)!r} (missing, corrupt or not a Keras "
            f"archive): {_one_line(error)}"
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
            return candidate.read_text(encoding="utf-8").splitlines()
    metrics = folder / RUN_METRICS_FILE
    if metrics.is_file():
        try:
            names = json.loads(metrics.read_text(encoding="utf-8")).get("class_names")
        except (ValueError, AttributeError):
            return None
        if isinstance(names, list):
            return [str(name) for name in names]
    return None


def read_metadata(folder: str | os.PathLike) -> dict:
    """`assets/export.json` of an exported version directory ({} when there is none)."""
    path = Path(folder) / "assets" / METADATA_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise ValueError(
            f"corrupt export metadata {os.fspath(path)!r}: {_one_line(error)}"
        ) from None


def latest_version(base: str | os.PathLike) -> Path | None:
    """The highest numeric subdirectory of a TF Serving model base directory, or None."""
    base = Path(base)
    versions = [int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit()]
    return base / str(max(versions)) if versions else None


@dataclasses.dataclass
class Predictor:
    """A loaded model: `predictor(images)` maps float32 NHWC 0-255 pixels to probabilities.

    Attributes:
        kind: 'saved_model', 'keras' or 'onnx'.
        path: what was loaded.
        image_shape: (height, width, channels) the model takes; height and width may be None.
        class_names: one name per class (indices as strings when none were stored).
        fn: the batch function, float32 (N, H, W, C) -> float32 (N, num_classes).
    """

    kind: str
    path: Path
    image_shape: tuple[int | None, int | None, int]
    class_names: list[str]
    fn: Callable[[np.ndarray], np.ndarray]

    def __call__(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != self.image_shape[-1]:
            raise ValueError(
                f"images must be a batch (N, height, width, {self.image_shape[-1]}) with the "
                f"model's {self.image_shape[-1]} channel(s), received shape {images.shape}"
            )
        return np.asarray(self.fn(images.astype(np.float32)), dtype=np.float32)


def check_channels_last(model) -> None:
    """Raises a one-line `ValueError` for a channels_first model: images here are NHWC."""
    for layer in model._flatten_layers():
        if getattr(layer, "data_format", None) == "channels_first":
            raise ValueError(
                "only channels_last models are supported, received a model with "
                f"data_format='channels_first' (layer {layer.name!r})"
            )


def class_names_or_indices(names: list[str] | None, num_classes: int) -> list[str]:
    """`names` when there is one per class, else the class indices as strings."""
    if names is not None and len(names) == num_classes:
        return names
    return [str(i) for i in range(num_classes)]


def _keras_predictor(model_path: Path, folder: Path) -> Predictor:
    import keras

    model = load_keras_model(model_path)
    check_channels_last(model)
    shape = tuple(model.input_shape[1:])
    num_classes = int(model.output_shape[-1])

    def fn(images: np.ndarray) -> np.ndarray:
        return keras.ops.convert_to_numpy(model(images, training=False)).astype(np.float32)

    return Predictor(
        "keras",
        model_path,
        shape,
        class_names_or_indices(read_class_names(folder), num_classes),
        fn,
    )


def _saved_model_predictor(folder: Path) -> Predictor:
    require_tensorflow("loading a SavedModel")
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(os.fspath(folder))
    except Exception as error:  # noqa: BLE001
        raise ValueError(
            f"cannot load SavedModel {os.fspath(folder)!r}: {_one_line(error)}"
        ) from None
    if not hasattr(loaded, "serve"):
        raise ValueError(f"SavedModel {os.fspath(folder)!r} has no 'serve' endpoint")
    metadata = read_metadata(folder)
    channels = loaded.serve.input_signature[0].shape[-1]
    shape = tuple(metadata.get("image_shape") or (None, None, channels))

    def fn(images: np.ndarray) -> np.ndarray:
        return loaded.serve(tf.constant(images)).numpy()

    num_classes = int(
        metadata.get("num_classes")
        or fn(np.zeros((1, *(d or 32 for d in shape[:2]), shape[2]), np.float32)).shape[-1]
    )
    return Predictor(
        "saved_model",
        folder,
        shape,
        class_names_or_indices(read_class_names(folder), num_classes),
        fn,
    )


def _onnx_predictor(model_path: Path, folder: Path) -> Predictor:
    if not installed("onnxruntime"):
        raise ValueError(
            "running an ONNX model needs onnxruntime, which is not installed "
            "(pip install onnxruntime)"
        )
    import onnxruntime

    try:
        session = onnxruntime.InferenceSession(
            os.fspath(model_path), providers=["CPUExecutionProvider"]
        )
    except Exception as error:  # noqa: BLE001
        raise ValueError(
            f"cannot load ONNX model {os.fspath(model_path)!r}: {_one_line(error)}"
        ) from None
    metadata = read_metadata(folder)
    input_name = session.get_inputs()[0].name
    channels = session.get_inputs()[0].shape[-1]
    shape = tuple(metadata.get("image_shape") or (None, None, channels))
    num_classes = session.get_outputs()[0].shape[-1]

    def fn(images: np.ndarray) -> np.ndarray:
        return session.run(None, {input_name: images})[0]

    return Predictor(
        "onnx",
        model_path,
        shape,
        class_names_or_indices(read_class_names(folder), int(num_classes)),
        fn,
    )


def load_predictor(path: str | os.PathLike) -> Predictor:
    """Loads a SavedModel directory, a `.keras` or `.onnx` file, a training run directory, or a
    TF Serving base directory (its latest version).

    Raises:
        ValueError: one line, when the path is missing, of no known kind, or fails to load.
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"model not found, received model={os.fspath(path)!r}")
    if path.is_dir() and not any(
        (path / f).exists() for f in ("saved_model.pb", KERAS_FILE, ONNX_FILE)
    ):
        latest = latest_version(path)
        if latest is not None:
            path = latest
    if path.is_dir():
        if (path / "saved_model.pb").is_file():
            return _saved_model_predictor(path)
        if (path / KERAS_FILE).is_file():
            return _keras_predictor(path / KERAS_FILE, path)
        if (path / ONNX_FILE).is_file():
            return _onnx_predictor(path / ONNX_FILE, path)
    elif path.suffix == ".keras":
        return _keras_predictor(path, path.parent)
    elif path.suffix == ".onnx":
        return _onnx_predictor(path, path.parent)
    raise ValueError(
        "model must be a SavedModel directory, a .keras or .onnx file, or a directory holding "
        f"one (a run directory, or a TF Serving base with version folders), received "
        f"model={os.fspath(path)!r}"
    )


def to_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """Converts an (H, W, C) image to `channels`: grayscale <-> RGB, alpha dropped.

    Grayscale from RGB uses ITU-R 601 luma (Pillow's 'L' conversion).

    Raises:
        ValueError: a channel count that has no conversion (e.g. 2 channels to a 4-channel model).
    """
    have = original = image.shape[-1]
    if have == channels:
        return image
    if have in (2, 4) and have - 1 == channels:  # LA -> L, RGBA -> RGB
        return image[..., :channels]
    if have in (2, 4):
        image, have = image[..., : have - 1], have - 1
    if have == 1 and channels == 3:
        return np.repeat(image, 3, axis=-1)
    if have == 3 and channels == 1:
        weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
        return (image.astype(np.float32) @ weights)[..., None]
    raise ValueError(
        f"image has {original} channels and the model takes {channels}: no conversion "
        f"between them, received image shape {image.shape[:-1] + (original,)}"
    )


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Decodes a PNG, JPEG (or any Pillow format) to a float32 (H, W, C) array of 0-255 pixels,
    or reads a `.npy` array of shape (H, W) or (H, W, C).

    Raises:
        ValueError: the file is missing or cannot be decoded.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"image not found, received image={os.fspath(path)!r}")
    if path.suffix.lower() == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except Exception as error:  # noqa: BLE001
            raise ValueError(f"cannot read array {os.fspath(path)!r}: {_one_line(error)}") from None
        if array.ndim == 2:
            array = array[..., None]
        if array.ndim != 3:
            raise ValueError(
                f"an .npy image must be (H, W) or (H, W, C), received shape "
                f"{array.shape} in {os.fspath(path)!r}"
            )
        return array.astype(np.float32)
    try:
        with Image.open(path) as image:
            image.load()  # decode now: a truncated file fails here, not later
            # Palette, 16-bit and CMYK images become L, LA, RGB or RGBA.
            if image.mode not in ("L", "LA", "RGB", "RGBA"):
                has_alpha = "A" in image.getbands() or "transparency" in image.info
                image = image.convert("RGBA" if has_alpha else "RGB")
            array = np.asarray(image, dtype=np.float32)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ValueError(f"cannot decode image {os.fspath(path)!r}: {_one_line(error)}") from None
    return array[..., None] if array.ndim == 2 else array


def prepare_image(image: np.ndarray, image_shape: Sequence[int | None]) -> np.ndarray:
    """Converts channels and resizes one (H, W, C) 0-255 image to the model's `image_shape`."""
    import keras

    image = to_channels(np.asarray(image, dtype=np.float32), int(image_shape[-1]))
    height, width = image_shape[0], image_shape[1]
    if height is not None and width is not None and image.shape[:2] != (height, width):
        # Bilinear without antialiasing: what the SavedModel's Resizing layer does, so a
        # client that sends the original image gets the same answer.
        image = keras.ops.convert_to_numpy(
            keras.ops.image.resize(
                image, (height, width), interpolation="bilinear", data_format="channels_last"
            )
        )
    return image.astype(np.float32)


def top_k(probabilities: np.ndarray, class_names: Sequence[str], k: int = 5) -> list[list[dict]]:
    """The `k` most probable classes of each row: `[{'index', 'class', 'probability'}, ...]`."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"top_k must be an integer >= 1, received top_k={k!r}")
    k = min(k, probabilities.shape[-1])
    order = np.argsort(-probabilities, axis=-1, kind="stable")[:, :k]
    return [
        [{"index": int(i), "class": class_names[i], "probability": float(row[i])} for i in idx]
        for row, idx in zip(probabilities, order, strict=True)
    ]


def predict_images(
    predictor: Predictor, images: Sequence[np.ndarray], *, batch_size: int = 64
) -> np.ndarray:
    """Probabilities for (H, W, C) 0-255 images of any size and channel count."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, received batch_size={batch_size!r}")
    prepared = [prepare_image(image, predictor.image_shape) for image in images]
    outputs = []
    sized = all(d is not None for d in predictor.image_shape[:2])
    step = batch_size if sized else 1  # images of different sizes cannot share a batch
    for start in range(0, len(prepared), step):
        outputs.append(predictor(np.stack(prepared[start : start + step])))
    if not outputs:
        return np.zeros((0, len(predictor.class_names)), np.float32)
    return np.concatenate(outputs)
