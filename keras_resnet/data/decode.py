"""Decoding one image file into a fixed-size uint8 crop, with bad files reported, not raised.

Pillow decodes every format the folders accept (JPEG, PNG, BMP, GIF's first frame, WebP). JPEG is
decoded at reduced scale (`Image.draft`: libjpeg's DCT scaling by 1/2, 1/4 or 1/8) down to the
smallest size that still covers the output, so a 10,000 x 10,000 JPEG costs about as much memory
as a 1,250 x 1,250 one. Other formats cannot be decoded at reduced scale: one whose decoded size
would exceed `MAX_DECODED_PIXELS` is skipped instead, and Pillow's own decompression-bomb guard
(over twice `Image.MAX_IMAGE_PIXELS`) skips the file too.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from keras_resnet.data.recipe import Box, eval_crop_box, random_resized_crop_box

MAX_DECODED_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485
# Modes holding more than 8 bits per sample: scaled to 0-255, not clipped (issue 14, item 7).
_WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_FIRST_PATHS = 5


class BadImage(Exception):
    """A file that cannot be turned into an image; the message is the reason."""


def to_channels(image: Image.Image, channels: int) -> Image.Image:
    """`image` as 'L' (channels=1) or 'RGB' (channels=3), whatever its mode.

    16-bit and 32-bit integer images are scaled from 0-65535 to 0-255; float images from 0-1
    when their maximum is <= 1, else clipped to 0-255; palette images (with or without a
    transparent colour) go through RGBA; alpha is dropped.
    """
    if image.mode in _WIDE_MODES:
        wide = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8), "L")
    elif image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        values = values * 255.0 if np.nanmax(values, initial=0.0) <= 1.0 else values
        image = Image.fromarray(np.clip(np.nan_to_num(np.rint(values)), 0, 255).astype(np.uint8))
    elif image.mode in ("P", "PA"):
        image = image.convert("RGBA")
    return image.convert("L" if channels == 1 else "RGB")


def open_scaled(path: str | os.PathLike, min_side: int, channels: int) -> tuple[Image.Image, float]:
    """Opens `path` at the smallest JPEG scale whose shorter side is >= `min_side`.

    Returns:
        The image (not yet loaded) and the factor from original to decoded coordinates.

    Raises:
        BadImage: not an image, over Pillow's bomb limit, or too large to decode at this scale.
    """
    try:
        image = Image.open(path)
        width, height = image.size
        short = min(width, height)
        if image.format == "JPEG" and short > min_side:
            want = (math.ceil(width * min_side / short), math.ceil(height * min_side / short))
            image.draft("L" if channels == 1 else "RGB", want)
    except Image.DecompressionBombError as error:
        raise BadImage(str(error)) from None
    except (OSError, ValueError, SyntaxError, EOFError) as error:
        raise BadImage(f"not a readable image ({error})") from None
    if image.size[0] * image.size[1] > MAX_DECODED_PIXELS:
        raise BadImage(
            f"{image.size[0]}x{image.size[1]} pixels, over the {MAX_DECODED_PIXELS} decoded "
            "pixels allowed"
        )
    return image, image.size[0] / width


def crop_resize(
    path: str | os.PathLike,
    size: int,
    channels: int,
    box_fn: Callable[[int, int], Box],
    *,
    min_side: int,
    flip: bool = False,
) -> np.ndarray:
    """Decodes `path`, resizes the box `box_fn(height, width)` to `size x size` (bilinear).

    Returns:
        uint8 array (size, size, channels).

    Raises:
        BadImage: the file is unreadable, truncated, or too large (see the module docstring).
    """
    image, factor = open_scaled(path, min_side, channels)
    width, height = image.size[0] / factor, image.size[1] / factor
    left, top, right, bottom = box_fn(int(round(height)), int(round(width)))
    box = (left * factor, top * factor, right * factor, bottom * factor)
    try:
        with image:
            image = to_channels(image, channels)  # loads the pixels: truncation shows up here
            out = image.resize((size, size), Image.Resampling.BILINEAR, box=box)
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as error:
        raise BadImage(f"cannot be decoded ({error})") from None
    array = np.asarray(out, dtype=np.uint8).reshape(size, size, channels)
    return array[:, ::-1] if flip else array


def recipe_crop(
    path: str | os.PathLike, size: int, channels: int, *, train: bool, seed: int | None = None
) -> np.ndarray:
    """The ImageNet recipe on one file: random-resized crop + flip (train) or resize + center
    crop (eval), drawn from `np.random.default_rng(seed)`."""
    if train:
        rng = np.random.default_rng(seed)
        flip = bool(rng.integers(2))
        return crop_resize(
            path,
            size,
            channels,
            lambda h, w: random_resized_crop_box(rng, h, w),
            min_side=size,
            flip=flip,
        )
    return crop_resize(
        path,
        size,
        channels,
        lambda h, w: eval_crop_box(h, w, size),
        min_side=int(round(size * 256 / 224)),
    )


class SkipLog:
    """Files skipped while reading: a count and the first paths, shared by threads and processes.

    Each skip is one line appended to `folder/skipped.tsv` (O_APPEND writes of a short line do
    not interleave), so worker processes report to the parent without a channel of their own.
    """

    def __init__(self, folder: str | os.PathLike):
        self.path = Path(folder) / "skipped.tsv"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def __getstate__(self):
        return {"path": self.path}

    def __setstate__(self, state):
        self.path = state["path"]
        self._lock = threading.Lock()

    def record(self, path, reason: str) -> None:
        line = f"{os.fsdecode(path)}\t{' '.join(str(reason).split())}\n"
        with self._lock, open(self.path, "a", encoding="utf-8") as f:
            f.write(line)

    def summary(self) -> dict:
        """{'count': distinct files skipped, 'first': up to 5 of them with their reason}."""
        if not self.path.exists():
            return {"count": 0, "first": []}
        seen: dict[str, str] = {}
        for line in self.path.read_text(encoding="utf-8").splitlines():
            path, _, reason = line.partition("\t")
            seen.setdefault(path, reason)
        first = [{"path": p, "reason": r} for p, r in list(seen.items())[:_FIRST_PATHS]]
        return {"count": len(seen), "first": first}
