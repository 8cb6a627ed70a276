"""ResNet builders on the Keras 3 functional API.

The blocks are plain functions: tensor in, tensor out, their layers written one after another as
in Figure 5 of He et al., "Deep Residual Learning for Image Recognition" (2015). One builder,
`ResNet`, makes every depth; `ResNet18` to `ResNet152` are one-liners over `DEPTHS`.

The models match torchvision's `resnet*`, `wide_resnet*` and `resnext*` layer for layer: the same
parameter counts, and the same logits once `load_torchvision_weights` has copied the weights.

Layer names (one scheme; weight conversion, `walkthrough` and feature extraction rely on it):

    conv1_pad, conv1_conv, conv1_bn, conv1_relu       stem ('cifar' stem: no conv1_pad)
    conv1a_pad, conv1a_{conv,bn,relu},                'deep' stem: 3x3/2 (timm conv1.0/.1),
      conv1b_{conv,bn,relu}, conv1_{conv,bn,relu}       3x3 (conv1.3/.4), 3x3 (conv1.6, bn1)
    pool1_pad, pool1_pool                             stem max-pool ('imagenet' stem only)
    conv{s}_block{b}_{i}_conv / _{i}_bn / _{i}_relu   stage s = 2..5, block b = 1.., layer i = 1..3
    conv{s}_block{b}_2_pad                            the symmetric padding of a strided 3x3
    conv{s}_block{b}_0_conv / _0_bn                   projection shortcut
    conv{s}_block{b}_0_pad / _0_pool                  its average pool (downsample='avg')
    conv{s}_block{b}_drop_path                        stochastic depth (drop_path_rate > 0)
    conv{s}_block{b}_add, conv{s}_block{b}_out        residual sum and the ReLU after it
    avg_pool | max_pool, dropout, fc, predictions     pooling and head

Stage s = 2..5 is torchvision's `layer{s-1}` and the paper's `conv{s}_x`. `conv1_relu` and
`conv{s}_block{last}_out` are the stem's and each stage's outputs (`feature_extractor`).

With `output_stride` 16 or 8, the stages past that stride keep stride 1 and dilate their 3x3
convolutions instead (the first block of such a stage with the previous dilation), as timm's
`make_blocks` and torchvision's `replace_stride_with_dilation` do.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence

import keras
from keras import layers

from keras_resnet.config import (
    ARCHITECTURES,
    BASE_WIDTH,
    BLOCKS,
    DEPTHS,
    DOWNSAMPLES,
    POOLINGS,
    STEMS,
    STRIDE_IN,
    ResNetConfig,
    inner_width,
    total_stride,
)
from keras_resnet.layers import BatchNormalization, DropPath

__all__ = [
    "ARCHITECTURES",
    "BASE_WIDTH",
    "BLOCKS",
    "DEPTHS",
    "DOWNSAMPLES",
    "MODELS",
    "POOLINGS",
    "STEMS",
    "STRIDE_IN",
    "ResNet",
    "ResNetConfig",
    "basic_block",
    "bottleneck_block",
    "build_model",
    "get_model",
    "total_stride",
]

logger = logging.getLogger("keras_resnet")

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


def _stem(x, filters: int, stem: str, data_format: str):
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


def _inputs(config: ResNetConfig, input_tensor):
    """The model's input and the tensor the network starts from."""
    if input_tensor is None:
        inputs = keras.Input(shape=config.image_shape, name="image")
        return inputs, inputs
    if tuple(input_tensor.shape[1:]) != config.image_shape:
        raise ValueError(
            f"input_tensor has shape {tuple(input_tensor.shape)}, which does not match "
            f"input_shape={config.image_shape!r}"
        )
    sources = keras.utils.get_source_inputs(input_tensor)
    return (sources[0] if len(sources) == 1 else sources), input_tensor


def build_model(config: ResNetConfig, *, input_tensor=None, weights=None) -> keras.Model:
    """Builds the functional `keras.Model` that `config` describes.

    Args:
        config: the architecture (validated when it was made).
        input_tensor: a Keras tensor to build on, e.g. the output of augmentation layers applied
            to a `keras.Input`; the model's input is then that tensor's source input (as in
            keras.applications). Its shape must be `config.image_shape`.
        weights: None; the path of a torchvision/timm state dict (`.pth`, `.pt`, `.bin`,
            `.safetensors`) or a Keras `.weights.h5` or `.keras` file to load
            (`weights.load_weights`; suffixes in any case); or pretrained weights by name
            (`keras_resnet.pretrained`): 'imagenet' (the architecture's best), a registered
            name ('resnet50.a1_in1k') or its tag ('a1_in1k', 'IMAGENET1K_V2'), downloaded into
            Keras' cache on first use. A classifier of another size, or no top, keeps the new
            head; 1 or 4 input channels adapt `conv1` by timm's rule; both are logged. Any
            other mismatch is a ValueError that says what to pass. Here `config.normalization`
            is used as given; the builders (`ResNet50(weights="imagenet")`, `get_model`,
            `ResNet`) also set it from named weights.

    Returns:
        A `keras.Model` named `config.name`.

    Example:
        >>> model = build_model(ResNetConfig.named("resnet18", num_classes=10))
    """
    return _build_with_weights(config, input_tensor, weights, set_normalization=False)


def _build_with_weights(
    config: ResNetConfig, input_tensor, weights, *, set_normalization: bool
) -> keras.Model:
    """Resolves `weights` (a name is downloaded before any layer is built), sets the model's
    normalization from named weights when `set_normalization`, builds, then loads."""
    path, entry = (None, None) if weights is None else _resolve_weights(weights, config)
    if entry is not None and set_normalization:
        config = _entry_normalization(config, entry)
    model = _build_network(config, input_tensor)
    if path is not None:
        from keras_resnet.weights import load_weights  # torch/safetensors only when asked

        try:
            load_weights(model, path)
        except ValueError as error:
            if entry is None:
                raise
            raise ValueError(f"weights={weights!r} ({entry.name}): {error}") from None
    return model


def _resolve_weights(weights, config: ResNetConfig):
    from keras_resnet.pretrained import resolve_weights

    return resolve_weights(weights, config)


def _entry_normalization(config: ResNetConfig, entry) -> ResNetConfig:
    """`config` with the entry's mean and std (0-255 units) as its normalization; unchanged, with
    a warning, for a model of other than the entry's input channels."""
    channels = config.image_shape[-1 if config.resolved_data_format == "channels_last" else 0]
    if channels != entry.data_config["input_size"][0]:
        logger.warning(
            "%s: normalization not set from the weights %s (%s input channels, the weights' "
            "statistics have %s): pass normalization=(mean, std)",
            config.name,
            entry.name,
            channels,
            entry.data_config["input_size"][0],
        )
        return config
    return config.replace(normalization=entry.normalization)


def _build_network(config: ResNetConfig, input_tensor) -> keras.Model:
    data_format = config.resolved_data_format
    channel_axis = -1 if data_format == "channels_last" else 1
    inputs, x = _inputs(config, input_tensor)
    if config.normalization is not None:
        mean, std = config.mean_std
        x = layers.Normalization(
            axis=channel_axis, mean=list(mean), variance=[s * s for s in std], name="normalize"
        )(x)
    widths = config.stage_widths
    x = _stem(x, widths[0], config.stem, data_format)
    if config.block == "basic":
        block_fn = functools.partial(basic_block, expansion=config.block_expansion)
    else:
        block_fn = functools.partial(
            bottleneck_block,
            expansion=config.block_expansion,
            groups=config.groups,
            width_per_group=config.width_per_group,
            stride_in=config.stride_in,
        )
    x = _stages(x, config, block_fn, data_format)
    if config.pooling == "avg":
        x = layers.GlobalAveragePooling2D(data_format=data_format, name="avg_pool")(x)
    elif config.pooling == "max":
        x = layers.GlobalMaxPooling2D(data_format=data_format, name="max_pool")(x)
    if config.include_top:
        if config.dropout_rate > 0:
            x = layers.Dropout(config.dropout_rate, name="dropout")(x)
        x = layers.Dense(config.num_classes, name="fc")(x)
        # float32 whatever the dtype policy, so that softmax and the loss are stable in bf16/fp16.
        x = layers.Activation(config.classifier_activation, dtype="float32", name="predictions")(x)
    return keras.Model(inputs, x, name=config.name)


def _stages(x, config: ResNetConfig, block_fn, data_format: str):
    """Every residual block; drop path grows linearly from 0 (first block) to drop_path_rate
    (last), timm's `make_blocks` rule."""
    total = sum(config.stage_blocks)
    index_in_net, previous_dilation = 0, 1
    for stage, (num_blocks, filters, (strides, dilation)) in enumerate(
        zip(config.stage_blocks, config.stage_widths, config.stage_strides, strict=True)
    ):
        for index in range(num_blocks):
            x = block_fn(
                x,
                filters,
                strides=strides if index == 0 else 1,
                dilation=dilation,
                first_dilation=previous_dilation,
                downsample=config.downsample,
                drop_path_rate=config.drop_path_rate * index_in_net / max(total - 1, 1),
                zero_init_residual=config.zero_init_residual,
                name=f"conv{stage + 2}_block{index + 1}",
                data_format=data_format,
            )
            previous_dilation = dilation
            index_in_net += 1
    return x


def _config_for(input_tensor, options: dict, **base) -> ResNetConfig:
    """The config of a builder call: `input_shape` defaults to `input_tensor`'s."""
    if options.get("input_shape") is None and input_tensor is not None:
        options["input_shape"] = tuple(input_tensor.shape[1:])
    return ResNetConfig(**{**base, **options})


def ResNet(
    stage_blocks: Sequence[int],
    block: str = "bottleneck",
    *,
    input_tensor=None,
    weights=None,
    **options,
) -> keras.Model:
    """Builds a ResNet of any depth: `build_model(ResNetConfig(stage_blocks, block, **options))`.

    Args:
        stage_blocks: blocks in each stage, e.g. `(3, 4, 6, 3)` for ResNet-50. Stage `i` (from
            0) has `width * 64 * 2**i` filters; every stage after the first starts with a
            stride-2 block.
        block: 'basic' (two 3x3) or 'bottleneck' (1x1, 3x3, 1x1).
        input_tensor: a Keras tensor to build on (see `build_model`).
        weights: a weights file, or pretrained weights by name (see `build_model`); named
            weights also set `normalization` to their mean and std (0-255 units: the model
            takes raw pixels) unless `normalization` is given (None: no normalization layer).
        **options: any field of `ResNetConfig` (num_classes, input_shape, include_top, pooling,
            classifier_activation, dropout_rate, width, expansion, groups, width_per_group,
            stem, stride_in, zero_init_residual, data_format, normalization, name).

    Returns:
        A `keras.Model`.

    Example:
        >>> model = ResNet((2, 2, 2, 2), "basic", num_classes=10, input_shape=(32, 32, 3),
        ...                stem="cifar")
    """
    set_normalization = "normalization" not in options
    config = _config_for(input_tensor, options, stage_blocks=stage_blocks, block=block)
    return _build_with_weights(config, input_tensor, weights, set_normalization=set_normalization)


def get_model(name_or_depth, *, input_tensor=None, weights=None, **options) -> keras.Model:
    """Builds a model by name ('resnet18', 'resnet50', ..., 'resnet18d' ... 'resnet152d',
    'wide_resnet50_2', 'resnext50_32x4d') or by depth (18, 34, 50, 101, 152), with any
    `ResNetConfig` field as a keyword argument and `weights`: a file or pretrained weights by
    name, which set `normalization` unless it is given (see `ResNet`).

    Example:
        >>> model = get_model("resnet50", weights="imagenet")  # raw 0-255 RGB pixels in
    """
    if isinstance(name_or_depth, int) and not isinstance(name_or_depth, bool):
        if name_or_depth not in DEPTHS:
            raise ValueError(
                f"depth must be one of {sorted(DEPTHS)}, received depth={name_or_depth!r}"
            )
        name_or_depth = f"resnet{name_or_depth}"
    if options.get("input_shape") is None and input_tensor is not None:
        options["input_shape"] = tuple(input_tensor.shape[1:])
    set_normalization = "normalization" not in options
    config = ResNetConfig.named(name_or_depth, **options)
    return _build_with_weights(config, input_tensor, weights, set_normalization=set_normalization)


def ResNet18(**options) -> keras.Model:
    """ResNet-18: basic blocks (2, 2, 2, 2). Takes every `ResNetConfig` field and `input_tensor`."""
    return get_model("resnet18", **options)


def ResNet34(**options) -> keras.Model:
    """ResNet-34: basic blocks (3, 4, 6, 3). Takes every `ResNetConfig` field and `input_tensor`."""
    return get_model("resnet34", **options)


def ResNet50(**options) -> keras.Model:
    """ResNet-50: bottleneck blocks (3, 4, 6, 3). Takes every `ResNetConfig` field and
    `input_tensor`."""
    return get_model("resnet50", **options)


def ResNet101(**options) -> keras.Model:
    """ResNet-101: bottleneck blocks (3, 4, 23, 3). Takes every `ResNetConfig` field and
    `input_tensor`."""
    return get_model("resnet101", **options)


def ResNet152(**options) -> keras.Model:
    """ResNet-152: bottleneck blocks (3, 8, 36, 3). Takes every `ResNetConfig` field and
    `input_tensor`."""
    return get_model("resnet152", **options)


def WideResNet50_2(**options) -> keras.Model:
    """Wide ResNet-50-2 (Zagoruyko & Komodakis 2016), torchvision's `wide_resnet50_2`."""
    return get_model("wide_resnet50_2", **options)


def ResNeXt50_32x4d(**options) -> keras.Model:
    """ResNeXt-50 32x4d (Xie et al. 2017), torchvision's `resnext50_32x4d`."""
    return get_model("resnext50_32x4d", **options)


def ResNet18D(**options) -> keras.Model:
    """ResNet-18-D (He et al. 2019): deep stem and average-pool downsampling, timm's
    `resnet18d`. Takes every `ResNetConfig` field, `input_tensor` and `weights`."""
    return get_model("resnet18d", **options)


def ResNet34D(**options) -> keras.Model:
    """ResNet-34-D, timm's `resnet34d` (see `ResNet18D`)."""
    return get_model("resnet34d", **options)


def ResNet50D(**options) -> keras.Model:
    """ResNet-50-D, timm's `resnet50d` (see `ResNet18D`)."""
    return get_model("resnet50d", **options)


def ResNet101D(**options) -> keras.Model:
    """ResNet-101-D, timm's `resnet101d` (see `ResNet18D`)."""
    return get_model("resnet101d", **options)


def ResNet152D(**options) -> keras.Model:
    """ResNet-152-D, timm's `resnet152d` (see `ResNet18D`)."""
    return get_model("resnet152d", **options)


MODELS = {
    "resnet18": ResNet18,
    "resnet34": ResNet34,
    "resnet50": ResNet50,
    "resnet101": ResNet101,
    "resnet152": ResNet152,
    "wide_resnet50_2": WideResNet50_2,
    "resnext50_32x4d": ResNeXt50_32x4d,
    "resnet18d": ResNet18D,
    "resnet34d": ResNet34D,
    "resnet50d": ResNet50D,
    "resnet101d": ResNet101D,
    "resnet152d": ResNet152D,
}
