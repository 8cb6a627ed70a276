"""The preprocessing contract: how an image file becomes the pixels a model was evaluated on.

A `Preprocessing` record travels with every model a run or an export writes (the run's
config.json, export.json, the ONNX metadata, the serving `.keras` file) and with every named
set of pretrained weights, as torchvision's `weights.transforms()` and timm's `pretrained_cfg`
do. Two implementations read it, and tests hold them to each other:

- **Pillow and numpy** (`load_image`, `preprocess`): the training pipelines' evaluation crops,
  the folder cache, and `keras-resnet predict`. A file gives the same pixels everywhere.
- **A Keras layer** (`CropResize`) inside every serving graph (SavedModel, ONNX, LiteRT), for
  clients that send whole images of any size.

The geometry (`crop_mode`):

- 'center': resize the shorter side to `floor(size / crop_pct)` and cut the central
  `size x size` (torchvision's `Resize(256)` + `CenterCrop(224)` is crop_pct 0.875): the
  ImageNet recipe's evaluation, and images trained over 64 px;
- 'squash': the whole image resized to `size x size`, whatever its aspect ratio: the small-image
  recipe (whole 28 or 32 px images, as the in-memory datasets train).

Both are one box of the original image resampled to the output size in one step, with Pillow's
filters (`interpolation` 'bilinear' or 'bicubic', widened when reducing: antialiased).

Pixels (`to_uint8`): 8-bit images as they are; 16-bit ones divided by 257 (65535 -> 255);
32-bit integer images within 0-65535 as 16-bit; float images within 0-1 times 255, within 0-255
as they are; anything else is refused. Palette images through RGBA, alpha dropped, then 'L'
(ITU-R 601 luma) or 'RGB' for the model's channel count.

    >>> record = Preprocessing.for_images(image_size=224, channels=3)
    >>> record.crop_mode, record.crop_pct, record.resize_size
    ('center', 0.875, 256)
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

CROP_MODES = ("center", "squash")
INTERPOLATIONS = ("bilinear", "bicubic")
DEFAULT_CROP_PCT = 0.875  # torchvision's reference: Resize(256) + CenterCrop(224)
# Images up to this side train and evaluate whole (the small-image recipe); larger ones with
# the ImageNet recipe's crops.
SMALL_IMAGE_MAX = 64
# How images wider than 8 bits map to 0-255 (recorded with every record, for the reader).
PIXEL_RULES = {
    "8-bit": "as stored",
    "16-bit": "divided by 257 (65535 -> 255)",
    "32-bit integer": "within 0-65535: as 16-bit; otherwise refused",
    "float": "within 0-1: times 255; within 0-255: as stored; otherwise refused",
    "rounding": "to the nearest integer, then uint8",
}
# Pillow's filter supports (its Resample.c): bilinear 1, bicubic 2 (a = -0.5).
_SUPPORT = {"bilinear": 1.0, "bicubic": 2.0}


class ImageError(ValueError):
    """A file or array that cannot be turned into an image; the message says why."""


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """How an image becomes a model's input (see the module docstring).

    Attributes:
        image_size: (height, width) of the model's input.
        channels: 1 ('L') or 3 ('RGB'); other counts take arrays with that many channels.
        crop_mode: 'center' or 'squash'.
        crop_pct: 'center': the crop's side over the resized shorter side (0.875 = 224/256);
            'squash': 1.0.
        interpolation: 'bilinear' or 'bicubic' (Pillow's filters, antialiased when reducing).
        mean, std: per channel in 0-255 units, applied by the model's own first layer
            ('normalize'); None for a model without one.
    """

    image_size: tuple[int, int]
    channels: int
    crop_mode: str = "center"
    crop_pct: float = DEFAULT_CROP_PCT
    interpolation: str = "bilinear"
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __post_init__(self):
        size = self.image_size
        if isinstance(size, int) and not isinstance(size, bool):
            size = (size, size)
        size = tuple(size) if isinstance(size, (list, tuple)) else size
        if (
            not isinstance(size, tuple)
            or len(size) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in size)
        ):
            raise ValueError(
                f"image_size must be a size >= 1 or (height, width), "
                f"received image_size={self.image_size!r}"
            )
        object.__setattr__(self, "image_size", size)
        if isinstance(self.channels, bool) or not isinstance(self.channels, int):
            raise ValueError(
                f"channels must be an integer >= 1, received channels={self.channels!r}"
            )
        if self.channels < 1:
            raise ValueError(
                f"channels must be an integer >= 1, received channels={self.channels!r}"
            )
        if self.crop_mode not in CROP_MODES:
            raise ValueError(
                f"crop_mode must be one of {CROP_MODES}, received crop_mode={self.crop_mode!r}"
            )
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"interpolation must be one of {INTERPOLATIONS}, received "
                f"interpolation={self.interpolation!r}"
            )
        pct = self.crop_pct
        if isinstance(pct, bool) or not isinstance(pct, (int, float)) or not 0 < pct <= 1:
            raise ValueError(f"crop_pct must be a number in (0, 1], received crop_pct={pct!r}")
        if self.crop_mode == "squash" and pct != 1:
            raise ValueError(
                f"crop_pct must be 1 with crop_mode='squash' (the whole image), received "
                f"crop_pct={pct!r}"
            )
        object.__setattr__(self, "crop_pct", float(pct))
        for name in ("mean", "std"):
            value = getattr(self, name)
            if value is None:
                continue
            value = tuple(float(v) for v in np.ravel(np.asarray(value, dtype=np.float64)))
            if len(value) != self.channels or not all(math.isfinite(v) for v in value):
                raise ValueError(
                    f"{name} must hold {self.channels} finite numbers (one per channel), "
                    f"received {name}={getattr(self, name)!r}"
                )
            if name == "std" and min(value) <= 0:
                raise ValueError(f"std must be > 0, received std={value!r}")
            object.__setattr__(self, name, value)
        if (self.mean is None) != (self.std is None):
            raise ValueError(
                f"mean and std go together, received mean={self.mean!r}, std={self.std!r}"
            )

    # ---- construction --------------------------------------------------------------------
    @classmethod
    def for_images(
        cls,
        image_size: int | Sequence[int],
        channels: int,
        *,
        mean=None,
        std=None,
        crop_pct: float | None = None,
        interpolation: str = "bilinear",
    ) -> Preprocessing:
        """The package's recipe for images trained at `image_size`: 'squash' up to
        `SMALL_IMAGE_MAX` px (whole images), else 'center' with `crop_pct` (default 0.875)."""
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if max(size) <= SMALL_IMAGE_MAX:
            return cls(size, channels, "squash", 1.0, interpolation, mean, std)
        pct = DEFAULT_CROP_PCT if crop_pct is None else crop_pct
        return cls(size, channels, "center", pct, interpolation, mean, std)

    @classmethod
    def from_data_config(
        cls, config: Mapping[str, Any], *, channels: int | None = None
    ) -> Preprocessing:
        """A record from timm's data-config convention: `input_size` (C, H, W), `mean` and
        `std` in 0-1 units, `crop_pct`, `crop_mode`, `interpolation`."""
        c, h, w = config["input_size"]
        channels = int(channels or c)
        mean, std = config.get("mean"), config.get("std")
        if mean is not None:
            mean, std = _per_channel(mean, channels, 255.0), _per_channel(std, channels, 255.0)
        mode = config.get("crop_mode", "center")
        pct = float(config.get("crop_pct", DEFAULT_CROP_PCT)) if mode == "center" else 1.0
        return cls(
            (int(h), int(w)),
            channels,
            mode,
            pct,
            config.get("interpolation", "bilinear"),
            mean,
            std,
        )

    def replace(self, **changes) -> Preprocessing:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types; `from_dict` reverses it (`pixels` is documentation)."""
        values = {
            "image_size": list(self.image_size),
            "channels": self.channels,
            "crop_mode": self.crop_mode,
            "crop_pct": self.crop_pct,
            "resize_size": self.resize_size,
            "interpolation": self.interpolation,
            "antialias": True,
            "mean": None if self.mean is None else list(self.mean),
            "std": None if self.std is None else list(self.std),
            "pixels": dict(PIXEL_RULES),
        }
        return json.loads(json.dumps(values))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Preprocessing:
        if not isinstance(values, Mapping):
            raise ValueError(f"a preprocessing record must be a JSON object, received {values!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    # ---- geometry ------------------------------------------------------------------------
    @property
    def resize_size(self) -> int | None:
        """'center': the side the shorter side is resized to before the crop (256 for 224 at
        0.875, as timm computes it: floor(size / crop_pct)); 'squash': None."""
        if self.crop_mode != "center":
            return None
        return int(math.floor(min(self.image_size) / self.crop_pct + 1e-6))

    def box(self, height: int, width: int) -> tuple[float, float, float, float]:
        """The box (left, top, right, bottom) of a `height x width` image that is resampled to
        `image_size`, in the image's pixel coordinates (Pillow's `box`)."""
        out_h, out_w = self.image_size
        if self.crop_mode == "squash":
            return (0.0, 0.0, float(width), float(height))
        resize = self.resize_size
        # torchvision's Resize(int): the shorter side to `resize`, the longer one truncated.
        if height <= width:
            new_h, new_w = resize, int(resize * width / height)
        else:
            new_h, new_w = int(resize * height / width), resize
        new_h, new_w = max(new_h, out_h), max(new_w, out_w)
        top = int(round((new_h - out_h) / 2.0))
        left = int(round((new_w - out_w) / 2.0))
        sy, sx = height / new_h, width / new_w
        return (left * sx, top * sy, (left + out_w) * sx, (top + out_h) * sy)

    def min_decoded_side(self) -> int:
        """The smallest shorter side a JPEG may be decoded at (Pillow's draft) and still cover
        the output at full resolution."""
        return self.resize_size or max(self.image_size)


def _per_channel(values, channels: int, scale: float) -> tuple[float, ...]:
    values = [float(v) * scale for v in np.ravel(values)]
    if len(values) == 1:
        values = values * channels
    if len(values) == 3 and channels == 1:  # RGB statistics for a grayscale model: their mean
        values = [sum(values) / 3]
    return tuple(values)


# --------------------------------------------------------------------------------------------
# Pillow and numpy
# --------------------------------------------------------------------------------------------

_PIL_FILTERS = {"bilinear": 2, "bicubic": 3}  # Image.Resampling.BILINEAR / BICUBIC


def to_uint8(image, channels: int):
    """A Pillow image as an 8-bit 'L' (channels=1) or 'RGB' (channels=3) Pillow image, by the
    rules of `PIXEL_RULES`; other channel counts are refused.

    Raises:
        ImageError: a 32-bit or float image outside the ranges that map to 0-255.
    """
    from PIL import Image

    if channels not in (1, 3):
        raise ImageError(
            f"image files convert to 1 or 3 channels, received channels={channels} "
            "(pass arrays with that many channels instead)"
        )
    mode = image.mode
    if mode.startswith("I;16"):
        wide = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8), "L")
    elif mode == "I":
        wide = np.asarray(image, dtype=np.float64)
        low, high = (float(wide.min()), float(wide.max())) if wide.size else (0.0, 0.0)
        if low < 0 or high > 65535:
            raise ImageError(
                f"a 32-bit integer image must hold values in 0-65535, received {low:g}..{high:g}"
            )
        image = Image.fromarray(np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8), "L")
    elif mode == "F":
        values = np.asarray(image, dtype=np.float64)
        finite = np.isfinite(values).all()
        low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
        if not finite or low < 0 or high > 255:
            raise ImageError(
                f"a float image must hold values in 0-1 or 0-255, received {low:g}..{high:g}"
                + ("" if finite else " with NaN or Inf")
            )
        values = values * 255.0 if high <= 1.0 else values
        image = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), "L")
    elif mode in ("P", "PA"):
        image = image.convert("RGBA")
    return image.convert("L" if channels == 1 else "RGB")


def open_image(path: str | os.PathLike, record: Preprocessing):
    """Opens `path` with Pillow, a JPEG at the smallest of libjpeg's reduced scales (1/2, 1/4,
    1/8) that still covers the record's output (`Image.draft`).

    Returns:
        (image, factor): the image, not yet loaded, and the factor from original to decoded
        coordinates.

    Raises:
        ImageError: not a readable image, over Pillow's decompression-bomb limit, or over
            `MAX_DECODED_PIXELS` once decoded (formats other than JPEG decode at full size).
    """
    from PIL import Image

    try:
        image = Image.open(path)
        width, height = image.size
        short, want = min(width, height), record.min_decoded_side()
        if image.format == "JPEG" and short > want:
            size = (math.ceil(width * want / short), math.ceil(height * want / short))
            image.draft("L" if record.channels == 1 else "RGB", size)
    except Image.DecompressionBombError as error:
        raise ImageError(str(error)) from None
    except (OSError, ValueError, SyntaxError, EOFError) as error:
        if isinstance(error, FileNotFoundError):
            raise
        raise ImageError(f"not a readable image ({error})") from None
    limit = max_decoded_pixels()
    if image.size[0] * image.size[1] > limit:
        image.close()
        raise ImageError(
            f"{image.size[0]}x{image.size[1]} pixels, over the {limit} decoded pixels allowed"
        )
    return image, image.size[0] / width


def max_decoded_pixels() -> int:
    """The most pixels an image may decode to: Pillow's decompression-bomb limit."""
    from PIL import Image

    return Image.MAX_IMAGE_PIXELS or 89_478_485


def decode_image(path: str | os.PathLike, record: Preprocessing):
    """A file decoded as the record's crops start from: a loaded 8-bit 'L' or 'RGB' Pillow
    image, a JPEG at the reduced scale `open_image` chooses. The exported serving graphs,
    given this image's pixels, crop them exactly as `crop_image` does.

    Raises:
        ImageError: see `open_image`; also a truncated file, or pixels that map to no 0-255
            range (`to_uint8`).
    """
    image, _ = open_image(path, record)
    try:
        with image:
            return to_uint8(image, record.channels)  # loads: a truncated file fails here
    except ImageError:
        raise
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as error:
        raise ImageError(f"cannot be decoded ({error})") from None


def crop_image(image, record: Preprocessing, box=None, *, flip: bool = False) -> np.ndarray:
    """The record's crop of a loaded 'L' or 'RGB' Pillow image (or `box` of it, in its own
    coordinates) as uint8 (height, width, channels).

    Resampled as two single-axis Pillow resizes, horizontal then vertical, each rounded to 8
    bits: what one `Image.resize` does in most Pillow versions, with the order fixed so that
    `CropResize` reproduces it pixel for pixel whatever the installed Pillow.
    """
    out_h, out_w = record.image_size
    width, height = image.size
    left, top, right, bottom = record.box(height, width) if box is None else box
    resample = _PIL_FILTERS[record.interpolation]
    image = image.resize((out_w, height), resample, box=(left, 0, right, height))
    image = image.resize((out_w, out_h), resample, box=(0, top, out_w, bottom))
    array = np.asarray(image, dtype=np.uint8).reshape(out_h, out_w, -1)
    return array[:, ::-1] if flip else array


def load_image(path: str | os.PathLike, record: Preprocessing) -> np.ndarray:
    """One file as the model's input: `decode_image`, then `crop_image`: uint8 (height,
    width, channels). The evaluation crops of a run, its cache and `keras-resnet predict` all
    come from here.

    Raises:
        ImageError: the file is not a readable image, or its pixels map to no 0-255 range.
        OSError: the file cannot be read.
    """
    return crop_image(decode_image(path, record), record)


def crop_array(array: np.ndarray, record: Preprocessing) -> np.ndarray:
    """The record's crop of an (H, W, C) array of 0-255 values (uint8 or float), as uint8
    (height, width, channels): the pixels that `load_image` gives for the same image."""
    from PIL import Image

    array = np.asarray(array)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3:
        raise ImageError(f"an image must be (H, W) or (H, W, C), received shape {array.shape}")
    if array.dtype != np.uint8:
        values = array.astype(np.float64)
        if (
            not np.isfinite(values).all()
            or values.min(initial=0) < 0
            or values.max(initial=0) > 255
        ):
            raise ImageError("an image array must hold finite values in 0-255")
        array = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    if array.shape[:2] == record.image_size and record.box(*array.shape[:2]) == (
        0.0,
        0.0,
        float(array.shape[1]),
        float(array.shape[0]),
    ):
        return array
    if array.shape[-1] in (1, 3):
        image = Image.fromarray(
            np.ascontiguousarray(array if array.shape[-1] == 3 else array[..., 0])
        )
        return crop_image(image, record)
    planes = [Image.fromarray(np.ascontiguousarray(array[..., c])) for c in range(array.shape[-1])]
    return np.concatenate([crop_image(plane, record) for plane in planes], axis=-1)


def preprocess(images, record: Preprocessing, *, normalize: bool = False) -> np.ndarray:
    """Files, Pillow images or arrays as a batch of model inputs by `record`.

    Args:
        images: one or a sequence of paths, Pillow images, or (H, W[, C]) arrays of 0-255
            values (already in the record's channels), of any sizes.
        record: the model's `Preprocessing` (`data_config(model_or_run)`).
        normalize: also subtract the mean and divide by the std (for a network built without
            its 'normalize' layer; the package's models normalize themselves).

    Returns:
        float32 (N, height, width, channels).
    """
    from PIL import Image

    if isinstance(images, (str, os.PathLike, np.ndarray, Image.Image)):
        images = [images]
    out = []
    for image in images:
        if isinstance(image, (str, os.PathLike)):
            out.append(load_image(image, record))
        elif isinstance(image, Image.Image):
            out.append(crop_image(to_uint8(image, record.channels), record))
        else:
            out.append(crop_array(image, record))
    batch = (
        np.stack(out).astype(np.float32)
        if out
        else np.zeros((0, *record.image_size, record.channels), np.float32)
    )
    if normalize and record.mean is not None:
        batch = (batch - np.asarray(record.mean, np.float32)) / np.asarray(record.std, np.float32)
    return batch


# --------------------------------------------------------------------------------------------
# The Keras layer
# --------------------------------------------------------------------------------------------


# Pillow's 8-bit resampling (its Resample.c): coefficients in double precision, normalized per
# output pixel, then fixed point with 22 fractional bits; each pass adds half a unit and shifts.
_PRECISION_BITS = 22


def _pillow_filter(xp, x, interpolation: str):
    x = xp.abs(x)
    if interpolation == "bilinear":
        return xp.where(x < 1.0, 1.0 - x, 0.0)
    a = -0.5
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    far = (((x - 5.0) * x + 8.0) * x - 4.0) * a
    return xp.where(x < 1.0, near, xp.where(x < 2.0, far, 0.0))


def _pillow_coefficients(xp, size, start, stop, out: int, interpolation: str):
    """(out, size) int32 weights of Pillow's resampling of [start, stop) of an axis of `size`
    pixels to `out` pixels, with the same arithmetic as its Resample.c (`precompute_coeffs`,
    `normalize_coeffs_8bpc`); `xp` is numpy, or TensorFlow's numpy API inside a traced graph.

    Pillow reads the box as single-precision floats and subtracts them as such; the rest is
    double precision. A weight sum runs left to right (a cumulative sum) as Pillow's loop does.
    """
    f32, f64 = xp.float32, xp.float64
    start = xp.asarray(start, f32)
    stop = xp.asarray(stop, f32)
    scale = xp.asarray(stop - start, f64) / float(out)
    filterscale = xp.maximum(scale, 1.0)
    inverse = 1.0 / filterscale
    centres = xp.asarray(start, f64) + (xp.arange(out, dtype=f64) + 0.5) * scale
    pixels = xp.arange(size, dtype=f64)
    weights = _pillow_filter(
        xp, ((pixels[None, :] - centres[:, None]) + 0.5) * inverse, interpolation
    )
    total = xp.cumsum(weights, axis=1)[:, -1:]
    weights = xp.where(total != 0.0, weights / xp.where(total != 0.0, total, 1.0), weights)
    unit = float(1 << _PRECISION_BITS)
    fixed = xp.where(weights < 0, -0.5 + weights * unit, 0.5 + weights * unit)
    return xp.asarray(xp.trunc(fixed), xp.int32)


class _GraphNumpy:
    """The few numpy functions the weights need, as TensorFlow ops on a traced graph's tensors
    (`tf.experimental.numpy` refuses `arange` of a tensor there)."""

    def __init__(self):
        import tensorflow as tf

        self.tf = tf
        self.float32, self.float64, self.int32 = tf.float32, tf.float64, tf.int32

    def asarray(self, x, dtype):
        return self.tf.cast(self.tf.convert_to_tensor(x), dtype)

    def arange(self, n, dtype):
        return self.tf.range(self.tf.cast(n, dtype), dtype=dtype)

    def abs(self, x):
        return self.tf.abs(x)

    def where(self, condition, x, y):
        x = self.tf.convert_to_tensor(x, self.float64)
        y = self.tf.convert_to_tensor(y, self.float64)
        return self.tf.where(condition, x, y)

    def maximum(self, x, y):
        return self.tf.maximum(self.asarray(x, self.float64), self.asarray(y, self.float64))

    def cumsum(self, x, axis):
        return self.tf.cumsum(x, axis=axis)

    def trunc(self, x):
        return self.tf.where(x < 0, self.tf.math.ceil(x), self.tf.math.floor(x))

    def round(self, x):
        return self.tf.round(x)  # half to even, as numpy's and Python's round()


def _pillow_pass(ops, coefficients, pixels, equation: str):
    """One pass: sum of pixel x weight with half a unit added, shifted, clipped to 8 bits.

    Exact integer arithmetic on every backend: int32 products and sums (they stay under 2**31:
    255 times the absolute weights, which sum to at most about 1.3 units), except on
    TensorFlow, whose integer matrix products Keras computes in float32: there float64, which
    holds every such sum exactly, and which SavedModel, ONNX and LiteRT exporters take.
    """
    import keras

    half = float(1 << (_PRECISION_BITS - 1))
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        total = tf.einsum(equation, tf.cast(coefficients, tf.float64), tf.cast(pixels, tf.float64))
        shifted = tf.floor((total + half) / float(1 << _PRECISION_BITS))
        return tf.cast(tf.clip_by_value(shifted, 0.0, 255.0), tf.int32)
    total = ops.einsum(equation, coefficients, pixels) + int(half)
    return ops.clip(ops.right_shift(total, _PRECISION_BITS), 0, 255)


def __getattr__(name: str):
    # The layer class is made on first use, so that importing this module for the record alone
    # (a command's --help, the data pipelines' workers) imports no Keras backend.
    if name == "CropResize":
        return _crop_resize_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_CLASS = None


def _crop_resize_class():
    global _CLASS
    if _CLASS is not None:
        return _CLASS
    import keras

    @keras.saving.register_keras_serializable(package="keras_resnet")
    class CropResize(keras.layers.Layer):
        """The record's geometry inside a graph: float32 0-255 images of any size in (a batch
        of one size), the record's `image_size` out, pixel for pixel what Pillow gives for the
        same 8-bit image (`crop_image`): the same box, the same fixed-point weights, the same
        two rounded passes (horizontal, then vertical), computed as two integer matrix
        products from the input's shape at run time.

        The weights are computed with numpy when the input's shape is known, with TensorFlow's
        numpy API inside a traced graph of any input size (SavedModel, ONNX, LiteRT exports).
        """

        def __init__(self, record: dict | Preprocessing, **kwargs):
            super().__init__(**kwargs)
            self.record = (
                record if isinstance(record, Preprocessing) else Preprocessing.from_dict(record)
            )

        def _weights(self, height, width):
            out_h, out_w = self.record.image_size
            interpolation = self.record.interpolation
            if isinstance(height, int) and isinstance(width, int):
                left, top, right, bottom = self.record.box(height, width)
                return (
                    _pillow_coefficients(np, height, top, bottom, out_h, interpolation),
                    _pillow_coefficients(np, width, left, right, out_w, interpolation),
                )
            tnp = _GraphNumpy()
            left, top, right, bottom = _graph_box(tnp, self.record, height, width)
            return (
                _pillow_coefficients(tnp, height, top, bottom, out_h, interpolation),
                _pillow_coefficients(tnp, width, left, right, out_w, interpolation),
            )

        def call(self, images):
            ops = keras.ops
            pixels = ops.cast(ops.clip(ops.round(images), 0.0, 255.0), "int32")
            height, width = _static_or_dynamic(images, 1), _static_or_dynamic(images, 2)
            rows, cols = self._weights(height, width)
            rows, cols = ops.convert_to_tensor(rows), ops.convert_to_tensor(cols)
            x = _pillow_pass(ops, cols, pixels, "pw,nhwc->nhpc")
            x = _pillow_pass(ops, rows, x, "oh,nhpc->nopc")
            return ops.cast(x, "float32")

        def compute_output_shape(self, input_shape):
            return (input_shape[0], *self.record.image_size, input_shape[-1])

        def get_config(self):
            return {**super().get_config(), "record": self.record.to_dict()}

    _CLASS = CropResize
    return CropResize


def _static_or_dynamic(images, axis: int):
    """The size of an axis: a Python int when known, else a scalar tensor (a traced graph)."""
    size = images.shape[axis]
    if size is not None:
        return int(size)
    import tensorflow as tf

    return tf.shape(images)[axis]


def _graph_box(tnp, record: Preprocessing, height, width):
    """`Preprocessing.box` on a traced graph's sizes (float64, the same steps)."""
    height, width = tnp.asarray(height, tnp.float64), tnp.asarray(width, tnp.float64)
    out_h, out_w = (float(s) for s in record.image_size)
    if record.crop_mode == "squash":
        zero = tnp.asarray(0.0, tnp.float64)
        return zero, zero, width, height
    resize = float(record.resize_size)
    tall = height > width
    new_h = tnp.where(tall, tnp.trunc(resize * height / width), resize)
    new_w = tnp.where(tall, resize, tnp.trunc(resize * width / height))
    new_h, new_w = tnp.maximum(new_h, out_h), tnp.maximum(new_w, out_w)
    top = tnp.round((new_h - out_h) / 2.0)  # half to even, as Python's round()
    left = tnp.round((new_w - out_w) / 2.0)
    sy, sx = height / new_h, width / new_w
    return left * sx, top * sy, (left + out_w) * sx, (top + out_h) * sy


# --------------------------------------------------------------------------------------------
# Where a model's record is found
# --------------------------------------------------------------------------------------------

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
        for candidate in (folder / "assets" / "export.json", folder / "config.json"):
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


__all__ = [
    "CROP_MODES",
    "add_record",
    "read_keras_record",
    "INTERPOLATIONS",
    "ImageError",
    "Preprocessing",
    "crop_array",
    "crop_image",
    "data_config",
    "load_image",
    "open_image",
    "preprocess",
    "record_of_model",
    "to_uint8",
]
