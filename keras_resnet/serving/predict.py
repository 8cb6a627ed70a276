"""Inference on trained and exported models: load one, read images, classify, top-k.

One `Predictor` serves every artifact the export writes, and the trained `.keras` file:

- a SavedModel directory (TF Serving's `<name>/<version>/`, or `<name>/` for its latest version),
  called through its `serve` signature (needs TensorFlow, whatever the Keras backend). A
  SavedModel is a program: it is scanned for ops that reach the file system or run Python
  (`keras_resnet.serving.safety`) and refused when it holds any, unless `trust=True`;
- a `.keras` file or a training run directory holding `model.keras`, loaded with Keras'
  `safe_mode` on: a model file is data, and no Python code from it runs (a `Lambda` layer is
  refused);
- an `.onnx` file (or a version directory holding `model.onnx`), run by onnxruntime.

Every model takes raw pixels: float32 values in 0-255, NHWC. Images are read with Pillow and
mapped to 0-255 whatever their bit depth (16-bit, 32-bit integer and float images are scaled,
not clipped), converted to the model's channel count (grayscale <-> RGB, alpha dropped) and
resized to the model's input size with bilinear interpolation (`keras.ops.image.resize`, no
antialiasing), the same resize as the exported `serve` signature's `Resizing` layer.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import keras
import numpy as np

from keras_resnet.serving.convert import check_channels_last
from keras_resnet.serving.files import (
    KERAS_FILE,
    ONNX_FILE,
    class_names_or_indices,
    latest_version,
    load_keras_model,
    read_class_names,
    read_metadata,
    require_tensorflow,
)
from keras_resnet.serving.safety import check_saved_model
from keras_resnet.utils import installed, one_line


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


def _keras_predictor(model_path: Path, folder: Path) -> Predictor:
    model = load_keras_model(model_path)
    check_channels_last(model)
    shape = tuple(model.input_shape[1:])
    num_classes = int(model.output_shape[-1])

    def fn(images: np.ndarray) -> np.ndarray:
        return keras.ops.convert_to_numpy(model(images, training=False)).astype(np.float32)

    names = class_names_or_indices(read_class_names(folder), num_classes)
    return Predictor("keras", model_path, shape, names, fn)


def _saved_model_predictor(folder: Path, trust: bool) -> Predictor:
    require_tensorflow("loading a SavedModel")
    check_saved_model(folder, trust=trust)
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(os.fspath(folder))
    except Exception as error:  # noqa: BLE001
        raise ValueError(
            f"cannot load SavedModel {os.fspath(folder)!r}: {one_line(error)}"
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
    names = class_names_or_indices(read_class_names(folder), num_classes)
    return Predictor("saved_model", folder, shape, names, fn)


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
            f"cannot load ONNX model {os.fspath(model_path)!r}: {one_line(error)}"
        ) from None
    metadata = read_metadata(folder)
    input_name = session.get_inputs()[0].name
    channels = session.get_inputs()[0].shape[-1]
    shape = tuple(metadata.get("image_shape") or (None, None, channels))
    num_classes = int(session.get_outputs()[0].shape[-1])

    def fn(images: np.ndarray) -> np.ndarray:
        return session.run(None, {input_name: images})[0]

    names = class_names_or_indices(read_class_names(folder), num_classes)
    return Predictor("onnx", model_path, shape, names, fn)


def load_predictor(path: str | os.PathLike, *, trust: bool = False) -> Predictor:
    """Loads a SavedModel directory, a `.keras` or `.onnx` file, a training run directory, or a
    TF Serving base directory (its latest version).

    Args:
        path: the model.
        trust: load a SavedModel without scanning it for file-system and Python ops (only for
            SavedModels from a source you trust: loading one runs its program).

    Returns:
        The `Predictor`.

    Raises:
        ValueError: one line, when the path is missing, of no known kind, fails to load, or is
            a SavedModel holding unsafe ops (without `trust`).
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"model not found, received model={os.fspath(path)!r}")
    if path.is_dir() and not any(
        (path / f).exists() for f in ("saved_model.pb", KERAS_FILE, ONNX_FILE)
    ):
        path = latest_version(path) or path
    if path.is_dir():
        if (path / "saved_model.pb").is_file():
            return _saved_model_predictor(path, trust)
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


class ImageRangeError(ValueError):
    """A float image whose values are neither 0-1 nor 0-255."""


# Pillow modes of one channel holding more than 8 bits, and the factor to 0-255. 'I' (32-bit
# signed) holds 16-bit PNGs in most Pillow versions, so its range is taken from the values.
_WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def _wide_to_255(image, path: Path) -> np.ndarray:
    """A 16-bit, 32-bit integer or float image as float32 0-255.

    16-bit ('I;16*'): divided by 257 (65535 -> 255), the inverse of Pillow's 8 -> 16 bit
    expansion. 'I' (32-bit integer; what Pillow makes of a 16-bit PNG): values within 0-65535
    are 16-bit and scaled as such; wider ones by the type's maximum. 'F' (float): 0-1 images
    are scaled by 255, 0-255 ones kept; other ranges are refused.
    """
    array = np.asarray(image, dtype=np.float64)
    if image.mode.startswith("I;16"):
        return (array / 257.0).astype(np.float32)
    if image.mode == "I":
        if array.min() >= 0 and array.max() <= 65535:
            return (array / 257.0).astype(np.float32)
        return ((array - array.min()) / max(array.max() - array.min(), 1) * 255).astype(np.float32)
    finite = array[np.isfinite(array)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    if finite.size != array.size or low < 0 or high > 255:
        raise ImageRangeError(
            f"a float image must hold values in 0-1 or 0-255, received {low:g}..{high:g} "
            f"in {os.fspath(path)!r}"
        )
    return (array * (255.0 if high <= 1.0 else 1.0)).astype(np.float32)


def _to_array(image, path: Path) -> np.ndarray:
    """A decoded Pillow image as float32 (H, W) or (H, W, C), 0-255."""
    if image.mode in _WIDE_MODES:
        return _wide_to_255(image, path)
    # Palette and CMYK images become RGB or RGBA (8 bits per channel already).
    if image.mode not in ("L", "LA", "RGB", "RGBA"):
        has_alpha = "A" in image.getbands() or "transparency" in image.info
        image = image.convert("RGBA" if has_alpha else "RGB")
    return np.asarray(image, dtype=np.float32)


def _read_npy(path: Path) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except Exception as error:  # noqa: BLE001
        raise ValueError(f"cannot read array {os.fspath(path)!r}: {one_line(error)}") from None
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3:
        raise ValueError(
            f"an .npy image must be (H, W) or (H, W, C), received shape "
            f"{array.shape} in {os.fspath(path)!r}"
        )
    return array.astype(np.float32)


def read_image(
    path: str | os.PathLike,
    *,
    size: tuple[int, int] | None = None,
    allow_large: bool = False,
) -> np.ndarray:
    """Decodes a PNG, JPEG (or any Pillow format) to a float32 (H, W, C) array of 0-255 pixels,
    or reads a `.npy` array of shape (H, W) or (H, W, C).

    Args:
        path: the file.
        size: (height, width) the image will be resized to: a JPEG is decoded at the smallest
            of Pillow's reduced scales (1/2, 1/4, 1/8) that stays at least this large
            (`Image.draft`), which is faster and needs less memory. None: full size.
        allow_large: decode images over Pillow's decompression-bomb limit
            (`PIL.Image.MAX_IMAGE_PIXELS`) instead of refusing them.

    Raises:
        ValueError: one line, when the file is missing, cannot be decoded, or is over the limit.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"image not found, received image={os.fspath(path)!r}")
    if path.suffix.lower() == ".npy":
        return _read_npy(path)
    try:
        with _pixel_limit(allow_large), Image.open(path) as image:
            if size is not None and image.format == "JPEG":
                image.draft(image.mode, (size[1], size[0]))
            image.load()  # decode now: a truncated file fails here, not later
            array = _to_array(image, path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ValueError(
            f"image {os.fspath(path)!r} is over Pillow's decompression-bomb limit "
            f"({one_line(error)}); pass --allow-large-images if you trust it"
        ) from None
    except ImageRangeError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ValueError(f"cannot decode image {os.fspath(path)!r}: {one_line(error)}") from None
    return array[..., None] if array.ndim == 2 else array


@contextlib.contextmanager
def _pixel_limit(allow_large: bool) -> Iterator[None]:
    """Pillow's decompression-bomb guard for one decode: over `Image.MAX_IMAGE_PIXELS` Pillow
    only warns (and raises over twice the limit); here both raise, unless `allow_large` lifts
    the limit. The limit is restored afterwards."""
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        if allow_large:
            Image.MAX_IMAGE_PIXELS = None
        else:
            warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = limit


def prepare_image(image: np.ndarray, image_shape: Sequence[int | None]) -> np.ndarray:
    """Converts channels and resizes one (H, W, C) 0-255 image to the model's `image_shape`."""
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
