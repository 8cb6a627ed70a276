"""ResNet builders on the Keras 3 functional API.

The blocks (`keras_resnet.blocks`, re-exported here) are plain functions: tensor in, tensor out,
their layers written one after another as in Figure 5 of He et al., "Deep Residual Learning for
Image Recognition" (2015). One builder, `ResNet`, makes every depth; `ResNet18` to `ResNet152`
are one-liners over `DEPTHS`.

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

from keras_resnet.blocks import (  # noqa: F401  (BN_*, conv_init: importable from here as before)
    BN_EPSILON,
    BN_MOMENTUM,
    basic_block,
    bottleneck_block,
    conv_init,
    resnet_stem,
)
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
    inner_width,  # noqa: F401  (importable from here as before)
    total_stride,
)

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
    x = resnet_stem(x, widths[0], config.stem, data_format)
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
