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

Every model takes raw pixels: float32 values in 0-255, NHWC. Images become pixels by the
model's preprocessing record (`keras_resnet.preprocessing`: the run's config.json, the export's
export.json or the `.keras` file itself), exactly as the run evaluated them: decoded with Pillow
and mapped to 0-255 by the record's rules (16-bit, 32-bit integer and float images scaled, not
clipped), converted to the model's channels, then cropped (the ImageNet recipe's centre crop, or
the whole image for small-image models). A SavedModel or ONNX export crops inside its graph
(`CropResize`, the same pixels): it is sent the decoded image whole, as a serving client would;
a `.keras` model or a LiteRT file takes the crops.
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

from keras_resnet import preprocessing as prep
from keras_resnet.preprocessing import Preprocessing
from keras_resnet.serving.convert import check_channels_last
from keras_resnet.serving.files import (
    KERAS_FILE,
    LITERT_FILE,
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
        kind: 'saved_model', 'keras', 'onnx' or 'litert'.
        path: what was loaded.
        image_shape: (height, width, channels) of the crops the network takes.
        class_names: one name per class (indices as strings when none were stored).
        fn: the batch function, float32 (N, H, W, C) -> float32 (N, num_classes).
        record: the preprocessing record images are prepared by.
        whole_images: `fn` takes whole decoded images (of one size per batch) and crops them
            itself (SavedModel and ONNX exports); else it takes the record's crops.
    """

    kind: str
    path: Path
    image_shape: tuple[int | None, int | None, int]
    class_names: list[str]
    fn: Callable[[np.ndarray], np.ndarray]
    record: Preprocessing | None = None
    whole_images: bool = False

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
    try:
        record = prep.data_config(model_path)
    except ValueError:  # a model file with no record beside it: the package's recipe for it
        record = prep.record_of_model(model)
    return Predictor("keras", model_path, shape, names, fn, record)


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
    record = _metadata_record(metadata)
    return Predictor("saved_model", folder, shape, names, fn, record, whole_images=True)


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
    record = _metadata_record(metadata)
    return Predictor("onnx", model_path, shape, names, fn, record, whole_images=True)


def _metadata_record(metadata: dict) -> Preprocessing | None:
    """An export's record (export.json); None for exports written before records, whose
    graphs resize whole images themselves."""
    values = metadata.get("preprocessing")
    return Preprocessing.from_dict(values) if isinstance(values, dict) else None


def _litert_predictor(model_path: Path, folder: Path) -> Predictor:
    require_tensorflow("running a LiteRT model")
    import tensorflow as tf

    try:
        interpreter = tf.lite.Interpreter(model_path=os.fspath(model_path))
        runner = interpreter.get_signature_runner()
        inputs = interpreter.get_signature_list()["serving_default"]["inputs"]
    except Exception as error:  # noqa: BLE001
        raise ValueError(
            f"cannot load LiteRT model {os.fspath(model_path)!r}: {one_line(error)}"
        ) from None
    metadata = read_metadata(folder)
    record = _metadata_record(metadata)
    shape = tuple(metadata.get("image_shape") or (*record.image_size, record.channels))

    def fn(images: np.ndarray) -> np.ndarray:
        return np.concatenate(
            [next(iter(runner(**{inputs[0]: image[None]}).values())) for image in images]
        )

    num_classes = int(
        metadata.get("num_classes") or fn(np.zeros((1, *shape), np.float32)).shape[-1]
    )
    names = class_names_or_indices(read_class_names(folder), num_classes)
    return Predictor("litert", model_path, shape, names, fn, record)


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
        (path / f).exists() for f in ("saved_model.pb", KERAS_FILE, ONNX_FILE, LITERT_FILE)
    ):
        path = latest_version(path) or path
    if path.is_dir():
        if (path / "saved_model.pb").is_file():
            return _saved_model_predictor(path, trust)
        if (path / KERAS_FILE).is_file():
            return _keras_predictor(path / KERAS_FILE, path)
        if (path / ONNX_FILE).is_file():
            return _onnx_predictor(path / ONNX_FILE, path)
        if (path / LITERT_FILE).is_file():
            return _litert_predictor(path / LITERT_FILE, path)
    elif path.suffix == ".keras":
        return _keras_predictor(path, path.parent)
    elif path.suffix == ".onnx":
        return _onnx_predictor(path, path.parent)
    elif path.suffix == ".tflite":
        return _litert_predictor(path, path.parent)
    raise ValueError(
        "model must be a SavedModel directory, a .keras, .onnx or .tflite file, or a directory "
        f"holding one (a run directory, or a TF Serving base with version folders), received "
        f"model={os.fspath(path)!r}"
    )


def to_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """Converts an (H, W, C) array to `channels`: grayscale <-> RGB, alpha dropped.

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
    values = array.astype(np.float64)
    if not np.isfinite(values).all() or values.min(initial=0) < 0 or values.max(initial=0) > 255:
        raise ValueError(f"an .npy image must hold finite values in 0-255, in {os.fspath(path)!r}")
    return array.astype(np.float32)


def read_image(
    path: str | os.PathLike,
    record: Preprocessing | None = None,
    *,
    allow_large: bool = False,
) -> np.ndarray:
    """Decodes an image file as the record's crops start from (`preprocessing.decode_image`:
    8-bit, the record's channels, a JPEG at the reduced scale that still covers the crop), or
    reads a `.npy` array of shape (H, W) or (H, W, C) of 0-255 values.

    Args:
        path: the file.
        record: the model's preprocessing record (None: decode at full size, 3 channels
            unless the file is grayscale).
        allow_large: decode images over Pillow's decompression-bomb limit
            (`PIL.Image.MAX_IMAGE_PIXELS`) instead of refusing them.

    Returns:
        float32 (H, W, C), 0-255, whole (not cropped).

    Raises:
        ValueError: one line, when the file is missing, cannot be decoded, or is over the limit.
    """
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"image not found, received image={os.fspath(path)!r}")
    if path.suffix.lower() == ".npy":
        return _read_npy(path)
    if record is None:  # full size, the file's own channels: one for grayscale and wide images
        channels, size = _probe(path)
        record = Preprocessing(size, channels, "squash", 1.0)
    try:
        with _pixel_limit(allow_large):
            image = prep.decode_image(path, record)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ValueError(
            f"image {os.fspath(path)!r} is over Pillow's decompression-bomb limit "
            f"({one_line(error)}); pass --allow-large-images if you trust it"
        ) from None
    except prep.ImageError as error:
        if "decompression bomb" in str(error).lower():
            raise ValueError(
                f"image {os.fspath(path)!r} is over Pillow's decompression-bomb limit "
                f"({one_line(error)}); pass --allow-large-images if you trust it"
            ) from None
        raise ValueError(f"cannot decode image {os.fspath(path)!r}: {one_line(error)}") from None
    except OSError as error:
        raise ValueError(f"cannot decode image {os.fspath(path)!r}: {one_line(error)}") from None
    array = np.asarray(image, dtype=np.float32)
    return array[..., None] if array.ndim == 2 else array


def _probe(path: Path) -> tuple[int, tuple[int, int]]:
    """The file's channels (1 for grayscale, 16-bit, 32-bit or float, else 3) and its (height,
    width); (3, (1, 1)) when it cannot be read (decoding says why)."""
    from PIL import Image

    try:
        with Image.open(path) as probe:
            gray = probe.mode in ("1", "L", "LA", "I", "F") or probe.mode.startswith("I;16")
            return (1 if gray else 3), (max(probe.size[1], 1), max(probe.size[0], 1))
    except Exception:  # noqa: BLE001 - decode_image reports the file's problem in one line
        return 3, (1, 1)


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


def prepare_image(image: np.ndarray, predictor: Predictor) -> np.ndarray:
    """One whole (H, W, C) 0-255 image as `predictor.fn` takes it: in the model's channels,
    rounded to 8 bits as a decoded file is, and cropped by the record unless the model crops
    itself (`whole_images`). A model without a record (an export written before records)
    takes the whole image."""
    channels = int(predictor.image_shape[-1])
    image = to_channels(np.asarray(image, dtype=np.float32), channels)
    if predictor.record is None or predictor.whole_images:
        if predictor.record is None:
            return image.astype(np.float32)
        return np.clip(np.rint(image), 0, 255).astype(np.float32)
    return prep.crop_array(image, predictor.record).astype(np.float32)


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
    """Probabilities for whole (H, W, C) 0-255 images of any size and channel count, prepared
    by the model's record (`prepare_image`)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, received batch_size={batch_size!r}")
    prepared = [prepare_image(image, predictor) for image in images]
    outputs = []
    start = 0
    while start < len(prepared):
        # Images of one size share a batch (crops always do).
        stop = start + 1
        while (
            stop < len(prepared)
            and stop - start < batch_size
            and prepared[stop].shape == prepared[start].shape
        ):
            stop += 1
        outputs.append(predictor(np.stack(prepared[start:stop])))
        start = stop
    if not outputs:
        return np.zeros((0, len(predictor.class_names)), np.float32)
    return np.concatenate(outputs)
