"""Fine-tuning helpers: freeze the stem and early stages, or all but the classifier.

In Keras 3, a `BatchNormalization` layer with `trainable = False` runs in inference mode (it uses
and keeps its moving statistics), so a frozen stage is frozen entirely, batch norm included.
Changing `trainable` takes effect at the next `model.compile()`.

    >>> model = keras_resnet.ResNet50(num_classes=10, weights="resnet50.pth")
    >>> freeze_backbone(model)                 # head-only warm-up
    >>> model.compile(...); model.fit(..., epochs=1)
    >>> unfreeze(model); freeze_stages(model, 2)   # stem and stages 2-3 (layer1-2) frozen
    >>> model.compile(...); model.fit(...)
"""

from __future__ import annotations

import re

import keras

_STAGE = re.compile(r"conv(\d+)_block\d+_")
STEM_PREFIXES = ("normalize", "conv1_", "conv1a_", "conv1b_", "pool1_")
HEAD_LAYERS = ("fc", "predictions", "dropout", "avg_pool", "max_pool")


def num_stages(model: keras.Model) -> int:
    """How many residual stages `model` has (4 for every named architecture)."""
    stages = {int(m.group(1)) for layer in model.layers if (m := _STAGE.match(layer.name))}
    return len(stages)


def freeze_stages(model: keras.Model, k: int) -> list[str]:
    """Freezes the stem and the first `k` stages (`conv2_x` .. `conv{k+1}_x`; torchvision's
    `layer1` .. `layer{k}`), batch norm in inference mode; the other layers become trainable.

    Args:
        model: a keras_resnet model.
        k: 0 (the stem only) to the number of stages (the whole backbone).

    Returns:
        The names of the frozen layers (with weights or not), in model order.

    Raises:
        ValueError: when `k` is not an integer in [0, number of stages].
    """
    total = num_stages(model)
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= total:
        raise ValueError(f"freeze_stages must be an integer in [0, {total}], received {k!r}")
    frozen = []
    for layer in model.layers:
        match = _STAGE.match(layer.name)
        freeze = layer.name.startswith(STEM_PREFIXES) or bool(
            match and int(match.group(1)) <= k + 1
        )
        layer.trainable = not freeze
        if freeze:
            frozen.append(layer.name)
    return frozen


def freeze_backbone(model: keras.Model) -> list[str]:
    """Freezes everything but the head (`fc`), for a head-only warm-up. Returns the names of
    the layers left trainable."""
    trainable = []
    for layer in model.layers:
        layer.trainable = layer.name in HEAD_LAYERS
        if layer.trainable:
            trainable.append(layer.name)
    return trainable


def unfreeze(model: keras.Model) -> None:
    """Makes every layer trainable again (batch norm back in training mode)."""
    model.trainable = True
    for layer in model.layers:
        layer.trainable = True
