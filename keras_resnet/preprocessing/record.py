"""The preprocessing record (`Preprocessing`): a model's input size, channels, crop geometry,
interpolation and normalization statistics, the rules that check them, and the pixel rules
(`PIXEL_RULES`) recorded with it. See the package docstring for the contract as a whole."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
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
