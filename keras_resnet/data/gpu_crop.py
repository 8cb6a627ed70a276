"""The ImageNet recipe's random-resized crop and flip, run on the accelerator inside the model.

Cropping on 16 CPU cores (2,500 img/s from the uint8 cache on the GPU machine) cannot feed an
H200 training ResNet-50 (about 7,000 img/s). Here the input pipeline only gathers the cache's
squashed `side x side` uint8 images and their original sizes (`CachePyDataset(...,
crop_on_device=True)`), and the model crops them: a bilinear resize of a box is two small matrix
products per image, `out = Wy @ image @ Wx^T`, with `Wy`, `Wx` (size x side) interpolation
matrices built from the box and the flip folded into `Wx`. Batched einsums: no gather, fast on a
GPU, written in `keras.ops`, so the same layer runs on TensorFlow, JAX and PyTorch.

Boxes are drawn per image in the ORIGINAL image's coordinates (torchvision's
`RandomResizedCrop.get_params`: scale (0.08, 1), ratio (3/4, 4/3), 10 tries then a clamped
center crop, vectorized as 10 candidates per image of which the first valid one is kept) and
mapped onto the squashed grid, so aspect ratios are those of the original image. The resize is
bilinear with half-pixel centers and no antialiasing (as `torch.nn.functional.interpolate(...,
align_corners=False)`); the cache's 256-px copy is at most 1.14x larger than a 224 crop of the
whole image, so there is little to alias.
"""

from __future__ import annotations

import math

import keras
from keras import ops

SCALE = (0.08, 1.0)
RATIO = (3 / 4, 4 / 3)
TRIES = 10
EVAL_RESIZE_RATIO = 256 / 224


def random_boxes(sizes, seed, scale=SCALE, ratio=RATIO, tries: int = TRIES):
    """torchvision's random-resized-crop boxes, one per image, drawn with `keras.random`.

    Args:
        sizes: (B, 2) original (height, width) of each image.
        seed: a `keras.random.SeedGenerator` (or an int).
        scale: range of the box's area as a fraction of the image's.
        ratio: range of the box's aspect ratio (width / height), sampled log-uniformly.
        tries: candidates drawn per image; the first that fits is kept, else the center crop.

    Returns:
        (B, 4) float32 boxes (left, top, right, bottom) in original pixel coordinates, integer
        valued as torchvision's.
    """
    sizes = ops.cast(sizes, "float32")
    height, width = sizes[:, :1], sizes[:, 1:2]
    batch = ops.shape(sizes)[0]
    area = height * width * keras.random.uniform((batch, tries), *scale, seed=seed)
    log_ratio = keras.random.uniform(
        (batch, tries), math.log(ratio[0]), math.log(ratio[1]), seed=seed
    )
    aspect = ops.exp(log_ratio)
    w = ops.round(ops.sqrt(area * aspect))
    h = ops.round(ops.sqrt(area / aspect))
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = ops.expand_dims(ops.argmax(ops.cast(fits, "int32"), axis=1), 1)
    w = ops.take_along_axis(w, first, axis=1)
    h = ops.take_along_axis(h, first, axis=1)
    found = ops.any(fits, axis=1, keepdims=True)
    # torchvision draws top and left uniformly among the integer offsets that keep the box inside.
    offsets = keras.random.uniform((batch, 2), seed=seed)
    top = ops.minimum(ops.floor(offsets[:, :1] * (height - h + 1)), height - h)
    left = ops.minimum(ops.floor(offsets[:, 1:] * (width - w + 1)), width - w)
    # Fallback: the whole image, its aspect ratio clamped to `ratio`, centered.
    in_ratio = width / height
    fw = ops.where(in_ratio > ratio[1], ops.round(height * ratio[1]), width)
    fh = ops.where(in_ratio < ratio[0], ops.round(width / ratio[0]), height)
    ftop, fleft = ops.floor((height - fh) / 2), ops.floor((width - fw) / 2)
    top, left = ops.where(found, top, ftop), ops.where(found, left, fleft)
    w, h = ops.where(found, w, fw), ops.where(found, h, fh)
    return ops.concatenate([left, top, left + w, top + h], axis=1)


def center_boxes(sizes, size: int):
    """The eval recipe's box (resize the shorter side to size * 256 / 224, center-crop `size`).

    Returns:
        (B, 4) float32 boxes: the central square of side `min(h, w) * 224 / 256`, within
        torchvision's integer rounding of `recipe.eval_crop_box`.
    """
    sizes = ops.cast(sizes, "float32")
    height, width = sizes[:, :1], sizes[:, 1:2]
    side = ops.minimum(height, width) / EVAL_RESIZE_RATIO
    top, left = (height - side) / 2, (width - side) / 2
    return ops.concatenate([left, top, left + side, top + side], axis=1)


def _weights(start, length, stored: int, original, size: int, flip=None):
    """(B, size, stored) bilinear weights sampling [start, start + length) of the original axis
    (length `original`) from its `stored`-pixel squashed copy."""
    scale = stored / original  # (B, 1)
    j = ops.cast(ops.arange(size), "float32")[None, :]
    if flip is not None:
        j = ops.where(flip, size - 1 - j, j)
    # Half-pixel centers: output pixel j covers [j, j + 1) * length / size of the box.
    u = (start + (j + 0.5) * length / size) * scale - 0.5
    u = ops.clip(u, 0.0, stored - 1.0)
    k = ops.cast(ops.arange(stored), "float32")[None, None, :]
    return ops.relu(1.0 - ops.abs(ops.expand_dims(u, -1) - k))


def resized_crop(images, boxes, sizes, size: int, flip=None):
    """Bilinear resize of each image's `box` (original coordinates) to `size x size`.

    Args:
        images: (B, S, S, C) images, the originals squashed to S x S (any dtype).
        boxes: (B, 4) (left, top, right, bottom) in the original image's pixel coordinates.
        sizes: (B, 2) original (height, width).
        size: output side.
        flip: optional (B, 1) bool, True to mirror the crop horizontally.

    Returns:
        float32 (B, size, size, C).
    """
    images = ops.cast(images, "float32")
    stored_h, stored_w = images.shape[1], images.shape[2]
    sizes = ops.cast(sizes, "float32")
    boxes = ops.cast(boxes, "float32")
    wy = _weights(boxes[:, 1:2], boxes[:, 3:4] - boxes[:, 1:2], stored_h, sizes[:, :1], size)
    wx = _weights(boxes[:, :1], boxes[:, 2:3] - boxes[:, :1], stored_w, sizes[:, 1:], size, flip)
    rows = ops.einsum("bis,bswc->biwc", wy, images)
    return ops.einsum("bjw,biwc->bijc", wx, rows)


@keras.saving.register_keras_serializable(package="keras_resnet")
class RandomResizedCrop(keras.layers.Layer):
    """Random-resized crop + flip of squashed cache images, on the accelerator.

    Call: `layer(images, sizes, training=...)`, images (B, S, S, C) of any dtype (uint8 from the
    cache), sizes (B, 2) int the original (height, width) of each image.

    - training: a torchvision random-resized crop (box drawn in original coordinates) and a
      horizontal flip with probability 1/2, resized to `size x size`;
    - inference, input already `size x size` (the cache's val/test split, stored as the eval
      recipe's center crop): the images as float32, `sizes` ignored;
    - inference, any other input size (squashed images): the eval recipe's center box
      (`center_boxes`) resized to `size x size`.

    Which of the last two is decided on the static shape of `images`.

    Args:
        size: output side (224).
        scale: area range of the box (fraction of the image).
        ratio: aspect-ratio range of the box.
        seed: seed of the layer's `keras.random.SeedGenerator`.

    Returns:
        float32 (B, size, size, C), pixel values in the input's range (0-255).
    """

    def __init__(self, size: int = 224, scale=SCALE, ratio=RATIO, seed=None, **kwargs):
        kwargs.setdefault("dtype", "float32")  # the resize stays float32 under mixed precision
        super().__init__(**kwargs)
        self.size = int(size)
        self.scale = tuple(float(v) for v in scale)
        self.ratio = tuple(float(v) for v in ratio)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, sizes, training=None):
        if training:
            boxes = random_boxes(sizes, self.seed_generator, self.scale, self.ratio)
            batch = ops.shape(images)[0]
            flip = keras.random.uniform((batch, 1), seed=self.seed_generator) < 0.5
            return resized_crop(images, boxes, sizes, self.size, flip)
        if images.shape[1] == self.size and images.shape[2] == self.size:
            return ops.cast(images, "float32")
        return resized_crop(images, center_boxes(sizes, self.size), sizes, self.size)

    def compute_output_shape(self, images_shape, sizes_shape=None):
        return (images_shape[0], self.size, self.size, images_shape[-1])

    def get_config(self):
        return {
            **super().get_config(),
            "size": self.size,
            "scale": self.scale,
            "ratio": self.ratio,
            "seed": self.seed,
        }


def training_model(backbone: keras.Model, *, side: int | None = None, seed=None) -> keras.Model:
    """`backbone` behind a `RandomResizedCrop`, for `fit` on `CachePyDataset(crop_on_device=True)`.

    Args:
        backbone: the model to train; its input is (size, size, C) images in 0-255.
        side: the cache's stored side, or None to accept any (train batches at `side`, val
            batches at the crop size, as the cache stores them).
        seed: the crop layer's seed.

    Returns:
        A model on {"image": uint8 (B, side, side, C), "size": int32 (B, 2)} that shares the
        backbone's weights: train it, then save or export `backbone`.
    """
    size, channels = backbone.input_shape[1], backbone.input_shape[-1]
    image = keras.Input((side, side, channels), dtype="uint8", name="image")
    sizes = keras.Input((2,), dtype="int32", name="size")
    crops = RandomResizedCrop(size, seed=seed, name="random_resized_crop")(image, sizes)
    return keras.Model({"image": image, "size": sizes}, backbone(crops), name=backbone.name)


def backbone_of(model: keras.Model) -> keras.Model:
    """The network that `training_model` wrapped (what is saved and exported: the on-device crop
    is a step of the training input, not of the network), or `model` itself when it is no such
    wrapper."""
    if not any(isinstance(layer, RandomResizedCrop) for layer in model.layers):
        return model
    nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    if len(nested) != 1:
        raise ValueError(f"{model.name} wraps {len(nested)} networks behind its crop, not one")
    return nested[0]
