"""ResNet builders on the Keras 3 functional API.

The blocks are plain functions: tensor in, tensor out, their layers written one after another as
in Figure 5 of He et al., "Deep Residual Learning for Image Recognition" (2015). One builder,
`ResNet`, makes every depth; `ResNet18` to `ResNet152` are one-liners over `DEPTHS`.

The models match torchvision's `resnet*`, `wide_resnet*` and `resnext*` layer for layer: the same
parameter counts, and the same logits once `load_torchvision_weights` has copied the weights.

Layer names (one scheme; weight conversion, `walkthrough` and feature extraction rely on it):

    conv1_pad, conv1_conv, conv1_bn, conv1_relu       stem ('cifar' stem: no conv1_pad)
    pool1_pad, pool1_pool                             stem max-pool ('imagenet' stem only)
    conv{s}_block{b}_{i}_conv / _{i}_bn / _{i}_relu   stage s = 2..5, block b = 1.., layer i = 1..3
    conv{s}_block{b}_2_pad                            the symmetric padding of a strided 3x3
    conv{s}_block{b}_0_conv / _0_bn                   projection shortcut
    conv{s}_block{b}_add, conv{s}_block{b}_out        residual sum and the ReLU after it
    avg_pool | max_pool, dropout, fc, predictions     pooling and head

Stage s = 2..5 is torchvision's `layer{s-1}` and the paper's `conv{s}_x`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import keras
from keras import layers

from keras_resnet.layers import BatchNormalization

# Depth -> (default block kind, blocks per stage). Table 1 of the paper.
DEPTHS: dict[int, tuple[str, tuple[int, int, int, int]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
BLOCKS = ("basic", "bottleneck")
STEMS = ("imagenet", "cifar")
STRIDE_IN = ("3x3", "1x1")
POOLINGS = ("avg", "max", None)
BASE_WIDTH = 64  # channels of the stem and of stage 1 at width=1

# PyTorch's BatchNorm defaults: eps=1e-5, and its momentum 0.1 is Keras' momentum 0.9.
BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9

# torchvision initializes convolutions with kaiming_normal_(mode="fan_out", nonlinearity="relu").
CONV_INIT = keras.initializers.VarianceScaling(
    scale=2.0, mode="fan_out", distribution="untruncated_normal"
)


def _layer_factories(data_format: str):
    """Shared defaults for every convolution, batch norm and padding, in one place."""
    conv = functools.partial(
        layers.Conv2D,
        use_bias=False,
        padding="valid",
        data_format=data_format,
        kernel_initializer=CONV_INIT,
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
    x, filters, kernel_size, *, strides=1, groups=1, relu=True, zero_gamma=False, name, data_format
):
    """Convolution, batch norm and (optionally) ReLU, named `{name}_conv/_bn/_relu`.

    Padding is explicit and symmetric (`kernel_size // 2` on every side, as PyTorch's
    `padding=k//2`). Keras' 'same' with stride 2 pads one pixel more at the bottom/right when the
    input size is even (224 -> 112 -> 56 ...) and symmetrically when it is odd (the 107x107 map of a
    214 input), so a 'same' model agrees with torchvision at some sizes and layers and silently
    shifts by a pixel at others. Stride-1 'same' with an odd kernel is always symmetric.
    """
    conv, bn, pad = _layer_factories(data_format)
    if kernel_size > 1:
        if strides == 1:
            # Stride 1 with an odd kernel: 'same' is already symmetric and needs no extra layer.
            x = conv(filters, kernel_size, padding="same", groups=groups, name=f"{name}_conv")(x)
        else:
            x = pad(kernel_size // 2, name=f"{name}_pad")(x)
            x = conv(filters, kernel_size, strides=strides, groups=groups, name=f"{name}_conv")(x)
    else:
        x = conv(filters, 1, strides=strides, groups=groups, name=f"{name}_conv")(x)
    x = bn(gamma_initializer="zeros" if zero_gamma else "ones", name=f"{name}_bn")(x)
    if relu:
        x = layers.ReLU(name=f"{name}_relu")(x)
    return x


def _shortcut(x, out_channels, *, strides, name, data_format):
    """Identity, or a strided 1x1 projection when the shape changes (the paper's option B)."""
    channel_axis = -1 if data_format == "channels_last" else 1
    if strides == 1 and x.shape[channel_axis] == out_channels:
        return x
    return _conv_bn(
        x, out_channels, 1, strides=strides, relu=False, name=f"{name}_0", data_format=data_format
    )


def basic_block(
    x,
    filters: int,
    *,
    strides: int = 1,
    expansion: int = 1,
    zero_init_residual: bool = False,
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
        name: prefix of the block's layer names, e.g. `conv2_block1`.
        data_format: 'channels_last' or 'channels_first'.

    Returns:
        The block's output tensor.
    """
    out_channels = expansion * filters
    shortcut = _shortcut(x, out_channels, strides=strides, name=name, data_format=data_format)
    x = _conv_bn(x, filters, 3, strides=strides, name=f"{name}_1", data_format=data_format)
    x = _conv_bn(
        x,
        out_channels,
        3,
        relu=False,
        zero_gamma=zero_init_residual,
        name=f"{name}_2",
        data_format=data_format,
    )
    x = layers.Add(name=f"{name}_add")([shortcut, x])
    return layers.ReLU(name=f"{name}_out")(x)


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
        name: prefix of the block's layer names, e.g. `conv2_block1`.
        data_format: 'channels_last' or 'channels_first'.

    Returns:
        The block's output tensor.
    """
    inner = _inner_width(filters, groups, width_per_group)
    out_channels = expansion * filters
    stride_1x1, stride_3x3 = (1, strides) if stride_in == "3x3" else (strides, 1)
    shortcut = _shortcut(x, out_channels, strides=strides, name=name, data_format=data_format)
    x = _conv_bn(x, inner, 1, strides=stride_1x1, name=f"{name}_1", data_format=data_format)
    x = _conv_bn(
        x, inner, 3, strides=stride_3x3, groups=groups, name=f"{name}_2", data_format=data_format
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
    x = layers.Add(name=f"{name}_add")([shortcut, x])
    return layers.ReLU(name=f"{name}_out")(x)


def _stem(x, filters: int, stem: str, data_format: str):
    if stem == "imagenet":
        x = _conv_bn(x, filters, 7, strides=2, name="conv1", data_format=data_format)
        # Zero padding before the max-pool equals PyTorch's -inf padding here: the input is a
        # ReLU output, so it is >= 0 and a padded zero never wins the max.
        x = layers.ZeroPadding2D(1, data_format=data_format, name="pool1_pad")(x)
        return layers.MaxPooling2D(3, strides=2, data_format=data_format, name="pool1_pool")(x)
    # 'cifar': one 3x3 stride-1 convolution and no pool, for 28-64 px images (He et al. sec. 4.2).
    return _conv_bn(x, filters, 3, name="conv1", data_format=data_format)


def total_stride(stem: str, num_stages: int) -> int:
    """How much the network downsamples: the stem (4 for 'imagenet', 1 for 'cifar'), then 2 at
    the start of every stage after the first. Images must be at least this large."""
    return (4 if stem == "imagenet" else 1) * 2 ** (num_stages - 1)


def _inner_width(filters: int, groups: int, width_per_group: int) -> int:
    """The bottleneck's 3x3 width: torchvision's `int(planes * base_width / 64) * groups`."""
    return int(filters * (width_per_group / 64.0)) * groups


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, received {name}={value!r}")


def _resolve_data_format(data_format: str | None) -> str:
    data_format = data_format or keras.config.image_data_format()
    if data_format not in ("channels_last", "channels_first"):
        raise ValueError(
            "data_format must be 'channels_last' or 'channels_first', "
            f"received data_format={data_format!r}"
        )
    return data_format


def ResNet(
    stage_blocks: Sequence[int],
    block: str = "bottleneck",
    *,
    num_classes: int = 1000,
    input_shape: Sequence[int] | None = None,
    include_top: bool = True,
    pooling: str | None = "avg",
    classifier_activation: str | None = "softmax",
    dropout_rate: float = 0.0,
    width: float = 1.0,
    expansion: int | None = None,
    groups: int = 1,
    width_per_group: int = 64,
    stem: str = "imagenet",
    stride_in: str = "3x3",
    zero_init_residual: bool = False,
    data_format: str | None = None,
    normalization: tuple[Sequence[float], Sequence[float]] | None = None,
    input_tensor=None,
    name: str = "resnet",
) -> keras.Model:
    """Builds a ResNet of any depth as a functional `keras.Model`.

    Args:
        stage_blocks: number of blocks in each stage, e.g. `(3, 4, 6, 3)` for ResNet-50. Stage
            `i` (from 0) has `width * 64 * 2**i` filters; every stage after the first starts
            with a stride-2 block.
        block: 'basic' (two 3x3) or 'bottleneck' (1x1, 3x3, 1x1).
        num_classes: classes of the classifier (used when `include_top`).
        input_shape: shape of one image in `data_format` order, without the batch. Default
            (224, 224, 3) (or (3, 224, 224)). Any channel count; height and width must be at
            least the total downsampling (32 with the 'imagenet' stem, 8 with 'cifar').
        include_top: end with pooling, dropout and a dense classifier.
        pooling: without the top: 'avg', 'max' or None (the last feature map). With the top,
            'avg' (default) or 'max'.
        classifier_activation: activation of the classifier ('softmax', or None for logits).
            It is computed in float32 under mixed precision.
        dropout_rate: dropout before the classifier (0 in the paper).
        width: multiplier on every stage's width and on the stem; 0.25 gives 16-32-64-128.
        expansion: output channels per inner channel; default 4 for bottleneck, 1 for basic.
        groups: groups of the bottleneck's 3x3 convolution (ResNeXt). Bottleneck only.
        width_per_group: inner width per group at width 1; 64 for ResNet. Bottleneck only.
        stem: 'imagenet' (7x7 stride-2 convolution and 3x3 stride-2 max-pool) or 'cifar'
            (3x3 stride-1 convolution, no pool; for 28 to 64 px images).
        stride_in: '3x3' (v1.5, torchvision's default) or '1x1' (the paper's v1).
        zero_init_residual: start each block's last batch-norm gamma at zero.
        data_format: 'channels_last' or 'channels_first'; default
            `keras.config.image_data_format()`.
        normalization: `(mean, std)` per channel, in the units of the input (e.g. 0-255 pixels).
            A `Normalization` layer named 'normalize' then opens the network, so that the saved
            and exported model takes raw pixels. None (default): the input is used as it is.
        input_tensor: a Keras tensor to build on, e.g. the output of augmentation layers applied
            to a `keras.Input`; the model's input is then that tensor's source input (as in
            keras.applications).
        name: the model's name.

    Returns:
        A `keras.Model`.

    Example:
        >>> model = ResNet((2, 2, 2, 2), "basic", num_classes=10, input_shape=(32, 32, 3),
        ...                stem="cifar")
    """
    # --- validation: every argument checked here, before any layer exists ---
    if block not in BLOCKS:
        raise ValueError(f"block must be one of {BLOCKS}, received block={block!r}")
    if stem not in STEMS:
        raise ValueError(f"stem must be one of {STEMS}, received stem={stem!r}")
    if stride_in not in STRIDE_IN:
        raise ValueError(f"stride_in must be one of {STRIDE_IN}, received stride_in={stride_in!r}")
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, received pooling={pooling!r}")
    if include_top and pooling is None:
        raise ValueError(
            "pooling must be 'avg' or 'max' when include_top=True, received pooling=None"
        )
    if (
        not isinstance(stage_blocks, Sequence)
        or len(stage_blocks) == 0
        or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in stage_blocks)
    ):
        raise ValueError(
            "stage_blocks must be a non-empty sequence of integers >= 1, "
            f"received stage_blocks={stage_blocks!r}"
        )
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not width > 0:
        raise ValueError(f"width must be a number > 0, received width={width!r}")
    if expansion is None:
        expansion = 4 if block == "bottleneck" else 1
    _check_int("expansion", expansion, 1)
    _check_int("num_classes", num_classes, 1)
    _check_int("groups", groups, 1)
    _check_int("width_per_group", width_per_group, 1)
    if not 0.0 <= dropout_rate < 1.0:
        raise ValueError(f"dropout_rate must be in [0, 1), received dropout_rate={dropout_rate!r}")
    if block == "basic" and (groups != 1 or width_per_group != 64):
        raise ValueError(
            "groups and width_per_group apply to bottleneck blocks only; basic blocks need "
            f"groups=1 and width_per_group=64, received groups={groups}, "
            f"width_per_group={width_per_group}"
        )
    data_format = _resolve_data_format(data_format)
    channels_last = data_format == "channels_last"
    if input_shape is None and input_tensor is not None:
        input_shape = tuple(input_tensor.shape[1:])
    if input_shape is None:
        input_shape = (224, 224, 3) if channels_last else (3, 224, 224)
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or any(
        d is not None and (isinstance(d, bool) or not isinstance(d, int) or d < 1)
        for d in input_shape
    ):
        raise ValueError(
            "input_shape must be 3 positive integers (height, width, channels) in data_format "
            f"order, received input_shape={input_shape!r}"
        )
    spatial = input_shape[:2] if channels_last else input_shape[1:]
    channels = input_shape[2] if channels_last else input_shape[0]
    if channels is None:
        raise ValueError(
            f"input_shape must give the channel count, received input_shape={input_shape!r}"
        )
    downsampling = total_stride(stem, len(stage_blocks))
    if any(d is not None and d < downsampling for d in spatial):
        raise ValueError(
            f"input_shape is too small: the network downsamples by {downsampling} "
            f"(stem={stem!r}, {len(stage_blocks)} stages), so height and width must be >= "
            f"{downsampling}, received input_shape={input_shape!r}"
        )
    stage_widths = [int(round(BASE_WIDTH * width * 2**i)) for i in range(len(stage_blocks))]
    if block == "bottleneck":
        for filters in stage_widths:
            inner = _inner_width(filters, groups, width_per_group)
            if inner < groups:
                raise ValueError(
                    f"groups must divide the bottleneck's inner width, received groups={groups} "
                    f"for an inner width of {inner} (width={width}, "
                    f"width_per_group={width_per_group})"
                )
    if stage_widths[0] < 1:  # the narrowest: the stem's and the first stage's
        raise ValueError(
            f"width is too small to leave one channel per layer, received width={width!r}"
        )

    if normalization is not None:
        mean, std = (list(map(float, v)) for v in normalization)
        if len(mean) != channels or len(std) != channels or min(std) <= 0:
            raise ValueError(
                f"normalization must be (mean, std) with {channels} values each and std > 0, "
                f"received normalization={normalization!r}"
            )

    # --- the network ---
    if input_tensor is None:
        inputs = x = keras.Input(shape=input_shape, name="image")
    else:
        if tuple(input_tensor.shape[1:]) != input_shape:
            raise ValueError(
                f"input_tensor has shape {tuple(input_tensor.shape)}, which does not match "
                f"input_shape={input_shape!r}"
            )
        sources = keras.utils.get_source_inputs(input_tensor)
        inputs, x = (sources[0] if len(sources) == 1 else sources), input_tensor
    if normalization is not None:
        x = layers.Normalization(
            axis=-1 if channels_last else 1,
            mean=mean,
            variance=[s * s for s in std],
            name="normalize",
        )(x)
    x = _stem(x, stage_widths[0], stem, data_format)
    for stage, (num_blocks, filters) in enumerate(zip(stage_blocks, stage_widths, strict=True)):
        for index in range(num_blocks):
            strides = 2 if stage > 0 and index == 0 else 1
            block_name = f"conv{stage + 2}_block{index + 1}"
            if block == "basic":
                x = basic_block(
                    x,
                    filters,
                    strides=strides,
                    expansion=expansion,
                    zero_init_residual=zero_init_residual,
                    name=block_name,
                    data_format=data_format,
                )
            else:
                x = bottleneck_block(
                    x,
                    filters,
                    strides=strides,
                    expansion=expansion,
                    groups=groups,
                    width_per_group=width_per_group,
                    stride_in=stride_in,
                    zero_init_residual=zero_init_residual,
                    name=block_name,
                    data_format=data_format,
                )
    if pooling == "avg":
        x = layers.GlobalAveragePooling2D(data_format=data_format, name="avg_pool")(x)
    elif pooling == "max":
        x = layers.GlobalMaxPooling2D(data_format=data_format, name="max_pool")(x)
    if include_top:
        if dropout_rate > 0:
            x = layers.Dropout(dropout_rate, name="dropout")(x)
        x = layers.Dense(num_classes, name="fc")(x)
        # float32 whatever the dtype policy, so that softmax and the loss are stable in bf16/fp16.
        x = layers.Activation(classifier_activation, dtype="float32", name="predictions")(x)
    return keras.Model(inputs, x, name=name)


def _named(depth: int, **defaults):
    block_default, stage_blocks = DEPTHS[depth]

    def builder(*, block: str | None = None, **kwargs) -> keras.Model:
        options = {**defaults, **kwargs}
        options.setdefault("name", f"resnet{depth}")
        return ResNet(stage_blocks, block or block_default, **options)

    builder.__name__ = builder.__qualname__ = f"ResNet{depth}"
    builder.__doc__ = (
        f"ResNet-{depth}: {block_default} blocks {stage_blocks}. Takes `block` to override the "
        "block kind, and every keyword argument of `ResNet`."
    )
    return builder


ResNet18 = _named(18)
ResNet34 = _named(34)
ResNet50 = _named(50)
ResNet101 = _named(101)
ResNet152 = _named(152)


def get_model(name_or_depth, **kwargs) -> keras.Model:
    """Builds a model by name ('resnet18', 'resnet50', ..., 'wide_resnet50_2', 'resnext50_32x4d')
    or by depth (18, 34, 50, 101, 152)."""
    if isinstance(name_or_depth, int) and not isinstance(name_or_depth, bool):
        if name_or_depth not in DEPTHS:
            raise ValueError(
                f"depth must be one of {sorted(DEPTHS)}, received depth={name_or_depth!r}"
            )
        key = f"resnet{name_or_depth}"
    else:
        key = str(name_or_depth).lower().replace("-", "")
    if key not in MODELS:
        raise ValueError(
            f"model must be one of {sorted(MODELS)} (or a depth in {sorted(DEPTHS)}), "
            f"received model={name_or_depth!r}"
        )
    return MODELS[key](**kwargs)


def WideResNet50_2(**kwargs) -> keras.Model:
    """Wide ResNet-50-2 (Zagoruyko & Komodakis 2016), torchvision's `wide_resnet50_2`."""
    kwargs.setdefault("name", "wide_resnet50_2")
    return ResNet50(width_per_group=128, **kwargs)


def ResNeXt50_32x4d(**kwargs) -> keras.Model:
    """ResNeXt-50 32x4d (Xie et al. 2017), torchvision's `resnext50_32x4d`."""
    kwargs.setdefault("name", "resnext50_32x4d")
    return ResNet50(groups=32, width_per_group=4, **kwargs)


MODELS = {
    "resnet18": ResNet18,
    "resnet34": ResNet34,
    "resnet50": ResNet50,
    "resnet101": ResNet101,
    "resnet152": ResNet152,
    "wide_resnet50_2": WideResNet50_2,
    "resnext50_32x4d": ResNeXt50_32x4d,
}
