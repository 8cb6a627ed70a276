"""The ImageNet-style recipe's geometry, as crop boxes in the source image's pixel coordinates.

Training: random-resized crop (Szegedy et al. 2015; torchvision's `RandomResizedCrop`, scale
(0.08, 1), aspect ratio (3/4, 4/3), 10 tries then a center crop) and a horizontal flip.
Evaluation: resize the shorter side to `size * 256 / 224`, then center-crop `size` (torchvision's
reference `Resize(256) + CenterCrop(224)`). Both are expressed as one box of the original image
that is resized to `size x size` in a single step: the same sampling as resizing then cropping,
without materializing the intermediate image.
"""

from __future__ import annotations

import math

import numpy as np

# torchvision's reference: evaluation resizes to 256 for a 224 crop.
EVAL_RESIZE_RATIO = 256 / 224
Box = tuple[float, float, float, float]  # left, top, right, bottom (Pillow's `box`)


def random_resized_crop_box(
    rng: np.random.Generator,
    height: int,
    width: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> Box:
    """torchvision's `RandomResizedCrop.get_params`, drawn from `rng`, as a box."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return (left, top, left + w, top + h)
    # Fallback: the whole image's central crop, with its aspect ratio clamped to `ratio`.
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    top, left = (height - h) // 2, (width - w) // 2
    return (left, top, left + w, top + h)


def eval_crop_box(height: int, width: int, size: int, resize: int | None = None) -> Box:
    """The box of the original that `Resize(resize)` then `CenterCrop(size)` keeps.

    `resize` defaults to `round(size * 256 / 224)`. The resized image has its shorter side equal
    to `resize` and its longer side truncated as torchvision does; the crop offset is rounded as
    torchvision's `CenterCrop` rounds it; the box maps that crop back through the resize.
    """
    resize = resize or int(round(size * EVAL_RESIZE_RATIO))
    if height <= width:
        new_h, new_w = resize, int(resize * width / height)
    else:
        new_h, new_w = int(resize * height / width), resize
    top = int(round((new_h - size) / 2.0))
    left = int(round((new_w - size) / 2.0))
    sy, sx = height / new_h, width / new_w
    return (left * sx, top * sy, (left + size) * sx, (top + size) * sy)
