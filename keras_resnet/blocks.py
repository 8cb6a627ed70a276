"""The residual blocks and the stem of `keras_resnet.models`, as plain functions.

Each block is tensor in, tensor out, its layers written one after another as in Figure 5 of He et
al., "Deep Residual Learning for Image Recognition" (2015). The layer names follow the scheme that
`keras_resnet.models` documents.
"""

from __future__ import annotations

import functools

import keras
from keras import layers

from keras_resnet.config import inner_width
from keras_resnet.layers import BatchNormalization, DropPath

__all__ = [
    "BN_EPSILON",
    "BN_MOMENTUM",
    "basic_block",
    "bottleneck_block",
    "conv_init",
    "resnet_stem",
]

# PyTorch's BatchNorm defaults: eps=1e-5, and its momentum 0.1 is Keras' momentum 0.9.
BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9


def conv_init() -> keras.initializers.Initializer:
    """torchvision's kaiming_normal_(mode="fan_out", nonlinearity="relu"), one per layer.

    A Keras initializer draws its seed when it is created and gives the same values at every
    call with that seed: one shared instance would give every kernel of a shape the same
    values, and a seed drawn at import time would ignore `keras.utils.set_random_seed`. A new
    instance per layer draws its seed from the seeded global state at build time.
    """
    return keras.initializers.VarianceScaling(
        scale=2.0, mode="fan_out", distribution="untruncated_normal"
    )


def _layer_factories(data_format: str):
    """Shared defaults for every convolution, batch norm and padding, in one place."""
    conv = functools.partial(
        layers.Conv2D,
        use_bias=False,
        padding="valid",
        data_format=data_format,
        kernel_initializer=conv_init(),
    )
    bn = functools.partial(
        BatchNormalization,  # Keras' layer, with a faster mixed-precision path (layers.py)
        axis=-1 if data_format == "channels_last" else 1,
        epsilon=BN_EPSILON,
        momentum=BN_MOMENTUM,
    )
    pad = functools.partial(layers.ZeroPadding2D, data_format=data_format)
    return conv, bn, pad


def _conv_bn(
    x,
    filters,
    kernel_size,
    *,
    strides=1,
    groups=1,
    dilation=1,
    relu=True,
    zero_gamma=False,
    name,
    data_format,
):
    """Convolution, batch norm and (optionally) ReLU, named `{name}_conv/_bn/_relu`.

    Padding is explicit and symmetric (`kernel_size // 2` on every side, as PyTorch's
    `padding=k//2`). Keras' 'same' with stride 2 pads one pixel more at the bottom/right when the
    input size is even (224 -> 112 -> 56 ...) and symmetrically when it is odd (the 107x107 map of a
    214 input), so a 'same' model agrees with torchvision at some sizes and layers and silently
    shifts by a pixel at others. Stride-1 'same' with an odd kernel is always symmetric, dilated
    or not (strided convolutions are never dilated here: dilation replaces the stride).
    """
    conv, bn, pad = _layer_factories(data_format)
    if kernel_size > 1:
        if strides == 1:
            # Stride 1 with an odd kernel: 'same' is already symmetric and needs no extra layer.
            x = conv(
                filters,
                kernel_size,
                padding="same",
                groups=groups,
                dilation_rate=dilation,
                name=f"{name}_conv",
            )(x)
        else:
            x = pad(kernel_size // 2, name=f"{name}_pad")(x)
            x = conv(filters, kernel_size, strides=strides, groups=groups, name=f"{name}_conv")(x)
    else:
        x = conv(filters, 1, strides=strides, groups=groups, name=f"{name}_conv")(x)
    x = bn(gamma_initializer="zeros" if zero_gamma else "ones", name=f"{name}_bn")(x)
    if relu:
        x = layers.ReLU(name=f"{name}_relu")(x)
    return x


def _shortcut(x, out_channels, *, strides, dilation=1, downsample="conv", name, data_format):
    """Identity, or a 1x1 projection when the shape changes (the paper's option B): strided
    ('conv'), or after a 2x2 average pool ('avg', ResNet-D: the strided 1x1 would skip 3 of every
    4 positions)."""
    channel_axis = -1 if data_format == "channels_last" else 1
    if strides == 1 and x.shape[channel_axis] == out_channels:
        return x
    if downsample == "avg" and strides > 1:
        # 'same' with a 2x2/2 window = PyTorch's AvgPool2d(2, 2, ceil_mode=True,
        # count_include_pad=False) on every backend: odd sizes average the last row alone.
        x = layers.AveragePooling2D(
            2, strides, padding="same", data_format=data_format, name=f"{name}_0_pool"
        )(x)
        strides = 1
    elif downsample == "avg" and dilation > 1:
        # timm's AvgPool2dSame(2, 1): zeros padded at the bottom/right are counted in the mean.
        x = layers.ZeroPadding2D(((0, 1), (0, 1)), data_format=data_format, name=f"{name}_0_pad")(x)
        x = layers.AveragePooling2D(2, 1, data_format=data_format, name=f"{name}_0_pool")(x)
    return _conv_bn(
        x, out_channels, 1, strides=strides, relu=False, name=f"{name}_0", data_format=data_format
    )


def _residual(shortcut, x, *, drop_path_rate, name):
    if drop_path_rate > 0:
        x = DropPath(drop_path_rate, name=f"{name}_drop_path")(x)
    x = layers.Add(name=f"{name}_add")([shortcut, x])
    return layers.ReLU(name=f"{name}_out")(x)


def basic_block(
    x,
    filters: int,
    *,
    strides: int = 1,
    expansion: int = 1,
    zero_init_residual: bool = False,
    dilation: int = 1,
    first_dilation: int | None = None,
    downsample: str = "conv",
    drop_path_rate: float = 0.0,
    name: str,
    data_format: str = "channels_last",
):
    """Two 3x3 convolutions and a shortcut (Figure 5, left). Output: `expansion * filters`.

    Args:
        x: input tensor.
        filters: width of the first 3x3 convolution.
        strides: stride of the first 3x3 convolution (2 at the start of stages 3 to 5).
        expansion: the output has `expansion * filters` channels (1 in the paper).
        zero_init_residual: start the last batch norm's gamma at zero, so that the block begins
            as the identity (Goyal et al. 2017, "Accurate, Large Minibatch SGD", section 5.1).
        dilation: dilation of the 3x3 convolutions (output_stride < 32).
        first_dilation: dilation of the first 3x3 (default `dilation`): the previous stage's in
            the first block of a dilated stage, as timm and torchvision.
        downsample: 'conv' or 'avg' projection shortcut (see `ResNetConfig.downsample`).
        drop_path_rate: probability of dropping the residual branch per sample in training.
        name: prefix of the block's layer names, e.g. `conv2_block1`.
        data_format: 'channels_last' or 'channels_first'.

    Returns:
        The block's output tensor.
    """
    out_channels = expansion * filters
    shortcut = _shortcut(
        x,
        out_channels,
        strides=strides,
        dilation=dilation,
        downsample=downsample,
        name=name,
        data_format=data_format,
    )
    x = _conv_bn(
        x,
        filters,
        3,
        strides=strides,
        dilation=first_dilation or dilation,
        name=f"{name}_1",
        data_format=data_format,
    )
    x = _conv_bn(
        x,
        out_channels,
        3,
        dilation=dilation,
        relu=False,
        zero_gamma=zero_init_residual,
        name=f"{name}_2",
        data_format=data_format,
    )
    return _residual(shortcut, x, drop_path_rate=drop_path_rate, name=name)


def bottleneck_block(
    x,
    filters: int,
    *,
    strides: int = 1,
    expansion: int = 4,
    groups: int = 1,
    width_per_group: int = 64,
    stride_in: str = "3x3",
    zero_init_residual: bool = False,
    dilation: int = 1,
    first_dilation: int | None = None,
    downsample: str = "conv",
    drop_path_rate: float = 0.0,
    name: str,
    data_format: str = "channels_last",
):
    """1x1 reduce, 3x3, 1x1 expand, and a shortcut (Figure 5, right).

    The block's inner width is `filters` (times `width_per_group / 64 * groups`, torchvision's rule
    for wide and ResNeXt variants); its output has `expansion * filters` channels. With the
    defaults, an input of 64 channels and `filters=64` leaves the block with 256.

    Args:
        x: input tensor.
        filters: inner width of the block.
        strides: 2 at the start of stages 3 to 5.
        expansion: output channels per inner channel (4 in the paper).
        groups: groups of the 3x3 convolution (32 for ResNeXt-50 32x4d).
        width_per_group: 64 for ResNet, 128 for Wide ResNet-50-2, 4 for ResNeXt-50 32x4d.
        stride_in: where the stride goes. '3x3' (ResNet v1.5, torchvision's default) strides
            the 3x3 convolution and keeps the information that a strided 1x1 would skip; '1x1'
            strides the first 1x1 convolution, as in the paper (v1).
        zero_init_residual: start the last batch norm's gamma at zero.
        dilation, first_dilation, downsample, drop_path_rate: as in `basic_block` (the 3x3
            convolution is the dilated one).
        name: prefix of the block's layer names, e.g. `conv2_block1`.
        data_format: 'channels_last' or 'channels_first'.

    Returns:
        The block's output tensor.
    """
    inner = inner_width(filters, groups, width_per_group)
    out_channels = expansion * filters
    stride_1x1, stride_3x3 = (1, strides) if stride_in == "3x3" else (strides, 1)
    shortcut = _shortcut(
        x,
        out_channels,
        strides=strides,
        dilation=dilation,
        downsample=downsample,
        name=name,
        data_format=data_format,
    )
    x = _conv_bn(x, inner, 1, strides=stride_1x1, name=f"{name}_1", data_format=data_format)
    x = _conv_bn(
        x,
        inner,
        3,
        strides=stride_3x3,
        groups=groups,
        dilation=first_dilation or dilation,
        name=f"{name}_2",
        data_format=data_format,
    )
    x = _conv_bn(
        x,
        out_channels,
        1,
        relu=False,
        zero_gamma=zero_init_residual,
        name=f"{name}_3",
        data_format=data_format,
    )
    return _residual(shortcut, x, drop_path_rate=drop_path_rate, name=name)


def resnet_stem(x, filters: int, stem: str, data_format: str):
    """The stem before stage 2: 'imagenet' (7x7/2 and a 3x3/2 max-pool), 'deep' (three 3x3
    and the max-pool) or 'cifar' (one 3x3, no pool), as `ResNetConfig.stem` names them."""
    if stem in ("imagenet", "deep"):
        if stem == "imagenet":
            x = _conv_bn(x, filters, 7, strides=2, name="conv1", data_format=data_format)
        else:
            # Three 3x3 in place of the 7x7 (ResNet-C, He et al. 2019 "Bag of Tricks"), timm's
            # stem_type='deep': widths 32, 32, 64 at width 1.
            inner = max(1, filters // 2)
            x = _conv_bn(x, inner, 3, strides=2, name="conv1a", data_format=data_format)
            x = _conv_bn(x, inner, 3, name="conv1b", data_format=data_format)
            x = _conv_bn(x, filters, 3, name="conv1", data_format=data_format)
        # Zero padding before the max-pool equals PyTorch's -inf padding here: the input is a
        # ReLU output, so it is >= 0 and a padded zero never wins the max.
        x = layers.ZeroPadding2D(1, data_format=data_format, name="pool1_pad")(x)
        return layers.MaxPooling2D(3, strides=2, data_format=data_format, name="pool1_pool")(x)
    # 'cifar': one 3x3 stride-1 convolution and no pool, for 28-64 px images (He et al. sec. 4.2).
    return _conv_bn(x, filters, 3, name="conv1", data_format=data_format)
