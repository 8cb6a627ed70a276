"""Experimental layer variants, measured with the benchmark to decide a model change.

Part of the harness, not of the installed package; from the repository root:

    KERAS_BACKEND=jax python benchmarks/run.py --models resnet50 --variants keras-bn --peers none

'keras-bn': every batch norm back to `keras.layers.BatchNormalization` (the model before
`keras_resnet.layers.BatchNormalization`); 'bn-bf16-apply': our batch norm computing `x * a + b`
in bfloat16; 'shifted-maxpool': the stem's max-pool as the maximum of k*k strided slices.
docs/PERFORMANCE.md has what each measured.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import ops

from keras_resnet.layers import BatchNormalization

VARIANTS = ("keras-bn", "bn-bf16-apply", "shifted-maxpool")


class Bfloat16ApplyBatchNormalization(BatchNormalization):
    """keras_resnet's batch norm, but `x * a + b` computed in the input's dtype (bfloat16 under
    mixed precision) instead of float32."""

    def _normalize(self, inputs, scale, offset):
        return inputs * ops.cast(scale, inputs.dtype) + ops.cast(offset, inputs.dtype)


class ShiftedMaxPooling2D(keras.layers.Layer):
    """Max-pooling as the maximum of k*k strided slices (channels_last, 'valid' padding).

    Same output as `MaxPooling2D`; its gradient is a chain of selects and pads that XLA fuses,
    instead of the select-and-scatter of `reduce_window`'s gradient.
    """

    def __init__(self, pool_size=3, strides=2, **kwargs):
        super().__init__(**kwargs)
        self.pool_size, self.strides = pool_size, strides

    def call(self, x):
        k, s = self.pool_size, self.strides
        h, w = x.shape[1], x.shape[2]
        ho, wo = (h - k) // s + 1, (w - k) // s + 1
        out = None
        for i in range(k):
            for j in range(k):
                part = x[:, i : i + s * (ho - 1) + 1 : s, j : j + s * (wo - 1) + 1 : s, :]
                out = part if out is None else ops.maximum(out, part)
        return out

    def compute_output_shape(self, input_shape):
        k, s = self.pool_size, self.strides
        n, h, w, c = input_shape
        return (n, (h - k) // s + 1, (w - k) // s + 1, c)


def check_variants(variants: Sequence[str]) -> None:
    """Raises ValueError for an unknown variant or two that exclude each other."""
    for variant in variants:
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, received variant={variant!r}")
    if "keras-bn" in variants and "bn-bf16-apply" in variants:
        raise ValueError(
            f"variants 'keras-bn' and 'bn-bf16-apply' exclude each other, received {list(variants)}"
        )


def with_variants(model: keras.Model, variants: Sequence[str]) -> keras.Model:
    """A copy of a channels_last keras_resnet model with some layers swapped (fresh weights),
    computing the same function as the original.

    Args:
        model: a keras_resnet model.
        variants: names from `VARIANTS`.

    Returns:
        The copy (`keras.models.clone_model`).
    """
    check_variants(variants)

    def swap(layer):
        config = layer.get_config()
        if isinstance(layer, BatchNormalization):
            if "keras-bn" in variants:
                return keras.layers.BatchNormalization.from_config(config)
            if "bn-bf16-apply" in variants:
                return Bfloat16ApplyBatchNormalization.from_config(config)
        if "shifted-maxpool" in variants and isinstance(layer, keras.layers.MaxPooling2D):
            return ShiftedMaxPooling2D(
                layer.pool_size[0], layer.strides[0], name=layer.name, dtype=layer.dtype_policy
            )
        return layer.__class__.from_config(config)

    return keras.models.clone_model(model, clone_function=swap)
