"""How torchvision/timm state dict names and shapes map onto keras_resnet layers, and the checks.

`keras_resnet.weights` reads the files and loads them through this module: `_collect` turns a
state dict into a plan (layer name -> {slot: array in Keras layout}), `_adapt` makes the
fine-tuning changes (a new head, an adapted first convolution), `_check` lists what does not fit,
`_architecture_hint` says what to build instead, and `_assign` sets the weights once all is
checked. The name table is in `keras_resnet.weights`' docstring.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping

import keras
import numpy as np

from keras_resnet.config import ARCHITECTURES, ResNetConfig

logger = logging.getLogger("keras_resnet")

_BN_FIELDS = {"weight": 0, "bias": 1, "running_mean": 2, "running_var": 3}  # Keras' BN order
_DEEP_STEM = {
    "conv1.0": "conv1a_conv",
    "conv1.1": "conv1a_bn",
    "conv1.3": "conv1b_conv",
    "conv1.4": "conv1b_bn",
    "conv1.6": "conv1_conv",
}
# The builders' options that a state dict shows, in the order a fix is suggested.
_ARCHITECTURE_OPTIONS = (
    "stem",
    "downsample",
    "width",
    "block",
    "stage_blocks",
    "groups",
    "width_per_group",
)
# Those that only another architecture changes: the hint names it.
_BLOCK_OPTIONS = ("block", "stage_blocks", "groups", "width_per_group")


def _keras_layer_name(torch_module: str, avg_down: bool = False) -> str | None:
    """The keras_resnet layer of a torchvision/timm module name. `avg_down`: the state dict's
    downsample modules are timm's (AvgPool, conv, bn)."""
    if torch_module == "conv1":
        return "conv1_conv"
    if torch_module == "bn1":
        return "conv1_bn"
    if torch_module == "fc":
        return "fc"
    if torch_module in _DEEP_STEM:
        return _DEEP_STEM[torch_module]
    match = re.fullmatch(r"layer(\d+)\.(\d+)\.(conv|bn)(\d+)", torch_module)
    if match:
        stage, block, kind, index = match.groups()
        return f"conv{int(stage) + 1}_block{int(block) + 1}_{index}_{kind}"
    match = re.fullmatch(r"layer(\d+)\.(\d+)\.downsample\.([012])", torch_module)
    if match:
        stage, block, index = match.groups()
        kinds = {"1": "conv", "2": "bn"} if avg_down else {"0": "conv", "1": "bn"}
        if index not in kinds:
            return None
        return f"conv{int(stage) + 1}_block{int(block) + 1}_0_{kinds[index]}"
    return None


def _to_numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor; no torch import needed here
        value = value.detach().cpu().float().numpy()
    return np.asarray(value, dtype=np.float32)


def adapt_input_conv(kernel: np.ndarray, in_channels: int) -> np.ndarray:
    """timm's `adapt_input_conv` on a Keras HWIO kernel: RGB weights for `in_channels` inputs.
    1 channel: the sum over RGB (a grey image repeated on R, G, B gives the same output);
    otherwise the RGB weights repeated to `in_channels` and scaled by 3 / in_channels."""
    if in_channels == kernel.shape[2]:
        return kernel
    if in_channels == 1:
        return kernel.sum(axis=2, keepdims=True)
    repeat = int(math.ceil(in_channels / kernel.shape[2]))
    tiled = np.concatenate([kernel] * repeat, axis=2)[:, :, :in_channels, :]
    return tiled * (kernel.shape[2] / float(in_channels))


def _count(problems: list) -> str:
    return f"{len(problems)} problem{'' if len(problems) == 1 else 's'}"


def _shape(value) -> tuple:
    return tuple(int(d) for d in value.shape)


def _state_dict_architecture(state_dict: Mapping) -> dict:
    """The builder options a torchvision/timm ResNet state dict shows (those it shows)."""
    found: dict = {}
    if "conv1.0.weight" in state_dict:
        found["stem"] = "deep"
    elif "conv1.weight" in state_dict:
        kernel = _shape(state_dict["conv1.weight"])[-1]
        found["stem"] = {7: "imagenet", 3: "cifar"}.get(kernel)
    if any(".downsample." in key for key in state_dict):
        avg = any(".downsample.2." in key for key in state_dict)
        found["downsample"] = "avg" if avg else "conv"
    if "bn1.weight" in state_dict:
        found["width"] = _shape(state_dict["bn1.weight"])[0] / 64
    blocks: dict[int, int] = {}
    for key in state_dict:
        match = re.match(r"layer(\d+)\.(\d+)\.", key)
        if match:
            stage, block = int(match.group(1)), int(match.group(2))
            blocks[stage] = max(blocks.get(stage, 0), block + 1)
    if blocks:
        found["stage_blocks"] = tuple(blocks[s] for s in sorted(blocks))
        bottleneck = "layer1.0.conv3.weight" in state_dict
        found["block"] = "bottleneck" if bottleneck else "basic"
        if bottleneck and "layer1.0.conv2.weight" in state_dict:
            inner, in_per_group = _shape(state_dict["layer1.0.conv2.weight"])[:2]
            found["groups"] = inner // max(in_per_group, 1)
            if "width" in found:  # torchvision: inner = int(64 * width * wpg / 64) * groups
                found["width_per_group"] = round(inner / found["groups"] / found["width"])
    return {key: value for key, value in found.items() if value is not None}


def _model_architecture(model: keras.Model) -> dict:
    """The same options, read from a keras_resnet model's layers."""
    layers = {layer.name: layer for layer in model.layers}
    found: dict = {}
    if "conv1a_conv" in layers:
        found["stem"] = "deep"
    elif "conv1_conv" in layers:
        found["stem"] = "imagenet" if "pool1_pool" in layers else "cifar"
    if any(re.fullmatch(r"conv\d+_block\d+_0_conv", name) for name in layers):
        avg = any(re.fullmatch(r"conv\d+_block\d+_0_pool", name) for name in layers)
        found["downsample"] = "avg" if avg else "conv"
    if "conv1_bn" in layers and layers["conv1_bn"].weights:
        found["width"] = _shape(layers["conv1_bn"].weights[0])[0] / 64
    blocks: dict[int, int] = {}
    for name in layers:
        match = re.fullmatch(r"conv(\d+)_block(\d+)_1_conv", name)
        if match:
            stage, block = int(match.group(1)), int(match.group(2))
            blocks[stage] = max(blocks.get(stage, 0), block)
    if blocks:
        found["stage_blocks"] = tuple(blocks[s] for s in sorted(blocks))
        bottleneck = "conv2_block1_3_conv" in layers
        found["block"] = "bottleneck" if bottleneck else "basic"
        if bottleneck and "conv2_block1_2_conv" in layers:
            conv = layers["conv2_block1_2_conv"]
            found["groups"] = int(getattr(conv, "groups", 1))
            if "width" in found:
                found["width_per_group"] = round(conv.filters / found["groups"] / found["width"])
    return found


def _architecture_hint(model: keras.Model, state_dict: Mapping) -> str:
    """What to pass to build the network `state_dict` holds, e.g. "the weights are for
    stem='imagenet': pass stem='imagenet' (--stem imagenet)"; "" when nothing it shows
    differs."""
    theirs, ours = _state_dict_architecture(state_dict), _model_architecture(model)
    differ = [
        k for k in _ARCHITECTURE_OPTIONS if k in theirs and k in ours and theirs[k] != ours[k]
    ]
    if not differ:
        return ""
    if any(k in differ for k in _BLOCK_OPTIONS):
        named = [
            name
            for name in ARCHITECTURES
            if all(
                getattr(ResNetConfig.named(name), k) == theirs[k]
                for k in ("stem", "downsample", *_BLOCK_OPTIONS)
                if k in theirs
            )
        ]
        if named:
            return (
                f"the weights are for {named[0]}: build that architecture "
                f"(get_model({named[0]!r}), --model {named[0]})"
            )
    given = [f"{k}={theirs[k]!r}" for k in differ]
    flags = " ".join(f"--{k.replace('_', '-')} {theirs[k]}" for k in differ if k != "stage_blocks")
    return f"the weights are for {', '.join(given)}: pass {' and '.join(given)}" + (
        f" ({flags})" if flags else ""
    )


def _assign(model: keras.Model, pending: dict, notes: list[str]) -> keras.Model:
    """Sets each layer's weights from a checked plan (layer name -> {slot: array}), then logs
    the plan's fine-tuning notes; nothing is assigned before every check passed."""
    for layer in model.layers:
        if layer.weights and layer.name in pending:
            given = pending[layer.name]
            layer.set_weights([given[slot] for slot in range(len(layer.weights))])
    for note in notes:
        logger.warning("%s: %s", model.name, note)
    return model


def _collect(model: keras.Model, state_dict: Mapping) -> tuple[dict, list[str]]:
    """Layer name -> {slot: array in Keras layout}, and the entries that fit no layer."""
    layers_by_name = {layer.name: layer for layer in model.layers}
    avg_blocks = {
        key.rsplit(".downsample.", 1)[0]
        for key in state_dict
        if re.search(r"\.downsample\.2\.", key)
    }
    pending: dict[str, dict[int, np.ndarray]] = {}
    problems: list[str] = []
    for key, value in state_dict.items():
        module, _, field = key.rpartition(".")
        if field == "num_batches_tracked":
            continue
        layer_name = _keras_layer_name(module, module.split(".downsample.")[0] in avg_blocks)
        if layer_name == "fc" and "fc" not in layers_by_name:
            continue  # a headless model takes the backbone only
        layer = layers_by_name.get(layer_name) if layer_name else None
        if layer is None:
            problems.append(f"{key}: no matching layer in the model")
            continue
        array = _to_numpy(value)
        if isinstance(layer, keras.layers.Conv2D) and field == "weight":
            slot, array = 0, array.transpose(2, 3, 1, 0)  # OIHW -> HWIO (also for groups)
        elif isinstance(layer, keras.layers.Dense) and field in ("weight", "bias"):
            slot = 0 if field == "weight" else 1
            array = array.T if field == "weight" else array
        elif isinstance(layer, keras.layers.BatchNormalization) and field in _BN_FIELDS:
            slot = _BN_FIELDS[field]
        else:
            problems.append(f"{key}: no weight {field!r} in layer {layer.name}")
            continue
        pending.setdefault(layer.name, {})[slot] = array
    return pending, problems


def _adapt(model: keras.Model, pending: dict, *, source_has_fc: bool = True) -> list[str]:
    """Fine-tuning changes to `pending`, in place: a new head, an adapted first convolution.
    `source_has_fc`: the weights hold a classifier (a headless model notes it was left out).
    Returns one note per change for the log."""
    notes = []
    layers_by_name = {layer.name: layer for layer in model.layers}
    fc = layers_by_name.get("fc")
    if fc is not None and (
        "fc" not in pending
        or any(
            tuple(array.shape) != tuple(fc.weights[slot].shape)
            for slot, array in pending["fc"].items()
        )
    ):
        given = pending.pop("fc", {})
        received = f"{given[0].shape[1]} classes" if 0 in given else "no classifier"
        notes.append(
            f"classifier 'fc' kept new ({fc.weights[0].shape[1]} classes; the weights have "
            f"{received}); the backbone was loaded"
        )
    elif fc is None and source_has_fc:
        notes.append("no classifier in the model; the backbone was loaded")
    first = "conv1a_conv" if "conv1a_conv" in layers_by_name else "conv1_conv"
    if first in pending and 0 in pending[first] and first in layers_by_name:
        kernel = pending[first][0]
        channels = layers_by_name[first].weights[0].shape[2]
        if kernel.shape[2] == 3 and channels != 3:
            pending[first][0] = adapt_input_conv(kernel, channels)
            notes.append(
                f"{first} adapted from 3 input channels to {channels} (timm's adapt_input_conv)"
            )
    return notes


def _check(
    model: keras.Model, pending: dict, *, new_head: bool, source: str = "state_dict"
) -> list[str]:
    problems = []
    for layer in model.layers:
        if not layer.weights or (layer.name == "fc" and new_head):
            continue
        given = pending.get(layer.name, {})
        for slot, weight in enumerate(layer.weights):
            if slot not in given:
                problems.append(f"{layer.name}/{weight.name}: missing from {source}")
            elif tuple(given[slot].shape) != tuple(weight.shape):
                problems.append(
                    f"{layer.name}/{weight.name}: shape {tuple(weight.shape)} in the model, "
                    f"{tuple(given[slot].shape)} in {source}"
                )
    return problems
