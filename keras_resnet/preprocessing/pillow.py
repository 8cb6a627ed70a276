"""The Pillow and numpy implementation of the preprocessing record: pixel conversion
(`to_uint8`), decoding (`open_image`, `decode_image`), the record's crops (`crop_image`,
`crop_array`, `load_image`) and batches of model inputs (`preprocess`). The training pipelines'
evaluation crops, the folder cache and `keras-resnet predict` all read images through here."""

from __future__ import annotations

import math
import os

import numpy as np

from keras_resnet.preprocessing.record import ImageError, Preprocessing

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
