"""The Keras layer `CropResize`: the preprocessing record's crop inside a graph, pixel for
pixel what the Pillow implementation (`crop_image`) gives, with Pillow's fixed-point resampling
computed in numpy or, inside a traced graph of any input size, in TensorFlow ops."""

from __future__ import annotations

import numpy as np

from keras_resnet.preprocessing.record import Preprocessing

# Pillow's 8-bit resampling (its Resample.c): coefficients in double precision, normalized per
# output pixel, then fixed point with 22 fractional bits; each pass adds half a unit and shifts.
_PRECISION_BITS = 22

# Pillow's filter supports (its Resample.c): bilinear 1, bicubic 2 (a = -0.5).
_SUPPORT = {"bilinear": 1.0, "bicubic": 2.0}


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

    # Saved models name the public module, whatever file of the package defines the class.
    CropResize.__module__ = "keras_resnet.preprocessing"
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
