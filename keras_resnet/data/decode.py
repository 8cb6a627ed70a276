"""Decoding one image file into a fixed-size uint8 crop, with bad files reported, not raised.

Pillow decodes every format the folders accept (JPEG, PNG, BMP, GIF's first frame, WebP); the
pixels follow the preprocessing contract (`keras_resnet.preprocessing`): 16-bit, 32-bit and
float images map to 0-255 by its rules, and the evaluation crop is the model's record, the same
function `keras-resnet predict` calls. JPEG is decoded at reduced scale (`Image.draft`: libjpeg's
DCT scaling by 1/2, 1/4 or 1/8) down to the smallest size that still covers the output, so a
10,000 x 10,000 JPEG costs about as much memory as a 1,250 x 1,250 one. Other formats cannot be
decoded at reduced scale: one whose decoded size would exceed `MAX_DECODED_PIXELS` is skipped
instead, and Pillow's own decompression-bomb guard (over twice `Image.MAX_IMAGE_PIXELS`) skips the
file too.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
from PIL import Image

from keras_resnet import preprocessing
from keras_resnet.data.recipe import random_resized_crop_box
from keras_resnet.preprocessing import Preprocessing

MAX_DECODED_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485
_FIRST_PATHS = 5


class BadImage(Exception):
    """A file that cannot be turned into an image; the message is the reason."""


def to_channels(image: Image.Image, channels: int) -> Image.Image:
    """`image` as 8-bit 'L' (channels=1) or 'RGB' (channels=3), by the preprocessing
    contract's pixel rules (`keras_resnet.preprocessing.to_uint8`).

    Raises:
        BadImage: a 32-bit or float image whose values map to no 0-255 range.
    """
    try:
        return preprocessing.to_uint8(image, channels)
    except preprocessing.ImageError as error:
        raise BadImage(str(error)) from None


def open_scaled(path: str | os.PathLike, min_side: int, channels: int) -> tuple[Image.Image, float]:
    """Opens `path` at the smallest JPEG scale whose shorter side is >= `min_side`.

    Returns:
        The image (not yet loaded) and the factor from original to decoded coordinates.

    Raises:
        BadImage: not an image, over Pillow's bomb limit, or too large to decode at this scale.
    """
    record = Preprocessing(
        (min_side, min_side), channels if channels in (1, 3) else 3, "squash", 1.0
    )
    try:
        return preprocessing.open_image(path, record)
    except preprocessing.ImageError as error:
        raise BadImage(str(error)) from None
    except OSError as error:
        raise BadImage(f"not a readable image ({error})") from None


def recipe_crop(
    path: str | os.PathLike,
    size: int,
    channels: int,
    *,
    train: bool,
    seed: int | None = None,
    record: Preprocessing | None = None,
) -> np.ndarray:
    """One file as a training or evaluation crop, uint8 (size, size, channels).

    Evaluation (`train=False`): the model's preprocessing record (`record`; default the
    package's recipe for `size`: whole images up to 64 px, else the ImageNet recipe's centre
    crop), the pixels `keras-resnet predict` gives. Training: torchvision's random-resized crop
    and a horizontal flip, drawn from `np.random.default_rng(seed)`, resampled with the
    record's filter.

    Raises:
        BadImage: the file is unreadable, truncated, or too large (see the module docstring).
    """
    if record is None:
        record = Preprocessing.for_images(size, channels)
    if not train:
        try:
            return preprocessing.load_image(path, record)
        except preprocessing.ImageError as error:
            raise BadImage(str(error)) from None
        except OSError as error:
            raise BadImage(f"not a readable image ({error})") from None
    rng = np.random.default_rng(seed)
    flip = bool(rng.integers(2))
    image, factor = open_scaled(path, max(record.image_size), channels)
    try:
        with image:
            width, height = image.size
            # The box is drawn on the original's size, so that a draw does not depend on the
            # scale the JPEG was decoded at.
            w0, h0 = int(round(width / factor)), int(round(height / factor))
            box = tuple(v * factor for v in random_resized_crop_box(rng, h0, w0))
            pixels = to_channels(image, channels)  # loads the pixels: truncation shows up here
            return preprocessing.crop_image(pixels, record, box, flip=flip)
    except BadImage:
        raise
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as error:
        raise BadImage(f"cannot be decoded ({error})") from None


class SkipLog:
    """Files skipped while reading: a count and the first paths, shared by threads and processes.

    Each skip is one line appended to `folder/skipped.tsv` (O_APPEND writes of a short line do
    not interleave), so worker processes report to the parent without a channel of their own.
    Paths are written as their bytes (`os.fsencode`), so a file name that is not UTF-8 is
    recorded too; a backslash, tab, newline or carriage return in a name is written as a
    backslash escape, so that a line is one file.
    """

    # The backslash first: the escapes are then read back unambiguously.
    _ESCAPES = ((b"\\", b"\\\\"), (b"\t", b"\\t"), (b"\n", b"\\n"), (b"\r", b"\\r"))

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
        name = os.fsencode(path)
        for raw, escaped in self._ESCAPES:
            name = name.replace(raw, escaped)
        reason = " ".join(str(reason).split()).encode("utf-8", "backslashreplace")
        with self._lock, open(self.path, "ab") as f:
            f.write(name + b"\t" + reason + b"\n")

    def summary(self) -> dict:
        """{'count': distinct files skipped, 'first': up to 5 of them with their reason}."""
        if not self.path.exists():
            return {"count": 0, "first": []}
        seen: dict[str, str] = {}
        for line in self.path.read_bytes().split(b"\n"):
            if line:  # a name that is not UTF-8 shows its bytes as \xNN
                path, _, reason = line.decode("utf-8", "backslashreplace").partition("\t")
                seen.setdefault(path, reason)
        first = [{"path": p, "reason": r} for p, r in list(seen.items())[:_FIRST_PATHS]]
        return {"count": len(seen), "first": first}
