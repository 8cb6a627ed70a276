"""Looking inside a model: the walkthrough table and the FLOP count."""

from __future__ import annotations

import re
from dataclasses import dataclass

import keras

_BLOCK_OUT = re.compile(r"^conv(\d+)_block(\d+)_out$")


@dataclass(frozen=True)
class Row:
    """One step of the walkthrough: a named part of the network and its shapes (no batch)."""

    kind: str  # 'stem', 'pool', 'block', 'stage', 'pooling' or 'head'
    name: str
    input_shape: tuple
    output_shape: tuple


def _shape(layer) -> tuple:
    return tuple(layer.output.shape[1:])


def walkthrough(model: keras.Model) -> list[Row]:
    """The rows of the original walkthrough, for any keras_resnet model.

    One row for the stem, the stem's max-pool, each block, each stage (the shapes across all of
    its blocks), the global pooling and the classifier; each row's input is the previous row's
    output. Rows are found by the layer-name scheme of `keras_resnet.models`.

    Example:
        >>> rows = walkthrough(ResNet18(block="bottleneck", input_shape=(214, 214, 3)))
        >>> rows[-1].output_shape
        (1000,)
    """
    by_name = {layer.name: layer for layer in model.layers}
    rows: list[Row] = []
    current = tuple(model.inputs[0].shape[1:])

    def add(kind: str, name: str, layer) -> None:
        nonlocal current
        rows.append(Row(kind, name, current, _shape(layer)))
        current = _shape(layer)

    add("stem", "conv1", by_name["conv1_relu"])
    if "pool1_pool" in by_name:
        add("pool", "pool1", by_name["pool1_pool"])
    stages: dict[int, list[str]] = {}
    for layer in model.layers:
        match = _BLOCK_OUT.match(layer.name)
        if match:
            stages.setdefault(int(match.group(1)), []).append(layer.name)
    for stage, names in stages.items():
        stage_input = current
        for name in names:
            add("block", name.removesuffix("_out"), by_name[name])
        rows.append(Row("stage", f"conv{stage}", stage_input, current))
    for name, kind in (("avg_pool", "pooling"), ("max_pool", "pooling"), ("fc", "head")):
        if name in by_name:
            add(kind, name, by_name[name])
    return rows


def count_flops(model: keras.Model) -> int:
    """FLOPs of one forward pass for one image, counting a multiply-add as 2 FLOPs.

    Counts the convolutions and dense layers, which are over 99.5% of a ResNet's arithmetic;
    batch norm, ReLU, additions and pooling are left out. torchvision's model table lists
    multiply-adds under "GFLOPS" (4.09 for resnet50): this count is twice that (8.18 G).
    """
    flops = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kernel_h, kernel_w, in_per_group, out_channels = layer.kernel.shape
            output = layer.output.shape[1:]
            spatial = output[:2] if layer.data_format == "channels_last" else output[1:]
            flops += 2 * spatial[0] * spatial[1] * out_channels * kernel_h * kernel_w * in_per_group
        elif isinstance(layer, keras.layers.Dense):
            flops += 2 * layer.kernel.shape[0] * layer.kernel.shape[1]
    return int(flops)


def count_params(model: keras.Model, trainable_only: bool = True) -> int:
    """Parameters; with `trainable_only` (default) the figure torchvision reports, which
    excludes batch-norm running statistics."""
    weights = model.trainable_weights if trainable_only else model.weights
    return int(sum(int(keras.ops.size(w)) for w in weights))


def format_table(model: keras.Model) -> str:
    """The walkthrough as a text table, with the parameter count and FLOPs."""
    rows = walkthrough(model)
    fmt = lambda shape: "x".join("?" if d is None else str(d) for d in shape)  # noqa: E731
    lines = [f"{'step':<8} {'name':<16} {'input':>14} {'output':>14}"]
    lines += [
        f"{r.kind:<8} {r.name:<16} {fmt(r.input_shape):>14} {fmt(r.output_shape):>14}" for r in rows
    ]
    lines.append(
        f"{model.name}: {count_params(model):,} trainable parameters, "
        f"{count_params(model, trainable_only=False):,} in all, "
        f"{count_flops(model) / 1e9:.2f} GFLOPs per image (forward, multiply-add = 2)"
    )
    return "\n".join(lines)
