"""Multi-scale features of a keras_resnet model: the output of every stage, by stride.

    >>> backbone = keras_resnet.feature_extractor(keras_resnet.ResNet50(include_top=False))
    >>> sorted(backbone.output)
    ['P2', 'P3', 'P4', 'P5']

Keys follow KerasHub's `pyramid_outputs`: `P{s}` is stage s (`conv{s}_x`, torchvision's
`layer{s-1}`), the output of its last block `conv{s}_block{last}_out`. With the 'imagenet' or
'deep' stem and `output_stride=32`, P2..P5 have strides 4, 8, 16, 32. The keys stay the stage's
even when the stride differs: `output_stride=16` gives P5 at stride 16, `output_stride=8` P4 and
P5 at stride 8, and the 'cifar' stem strides 1, 2, 4, 8.
"""

from __future__ import annotations

import re

import keras

_STAGE_OUT = re.compile(r"conv(\d+)_block(\d+)_out")


def stage_outputs(model: keras.Model) -> dict[str, str]:
    """`{"P2": "conv2_block3_out", ...}`: the layer that ends each stage of `model`."""
    last: dict[int, int] = {}
    for layer in model.layers:
        match = _STAGE_OUT.fullmatch(layer.name)
        if match:
            stage, block = int(match.group(1)), int(match.group(2))
            last[stage] = max(block, last.get(stage, 0))
    return {f"P{stage}": f"conv{stage}_block{block}_out" for stage, block in sorted(last.items())}


def feature_extractor(model: keras.Model) -> keras.Model:
    """A model with the same input and weights (shared, not copied) whose output is a dict of
    every stage's feature map: `{"P2": stride 4, "P3": 8, "P4": 16, "P5": 32}` (see the module
    docstring for `output_stride` and the 'cifar' stem), in the model's data format.

    Args:
        model: any keras_resnet model, with or without the top.

    Returns:
        A functional `keras.Model` named `{model.name}_features`.

    Raises:
        ValueError: when `model` has no layer of keras_resnet's naming scheme.
    """
    names = stage_outputs(model)
    if not names:
        raise ValueError(
            f"model {model.name!r} has no 'conv{{s}}_block{{b}}_out' layers; feature_extractor "
            "needs a keras_resnet model"
        )
    outputs = {key: model.get_layer(name).output for key, name in names.items()}
    return keras.Model(model.input, outputs, name=f"{model.name}_features")
