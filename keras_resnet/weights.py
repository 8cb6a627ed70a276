"""Copying torchvision ResNet weights into keras_resnet models.

torchvision name                      keras_resnet layer (weight)
conv1.weight                          conv1_conv (kernel)
bn1.{weight,bias,running_mean,var}    conv1_bn (gamma, beta, moving_mean, moving_variance)
layer{s}.{b}.conv{i}.weight           conv{s+1}_block{b+1}_{i}_conv
layer{s}.{b}.bn{i}.*                  conv{s+1}_block{b+1}_{i}_bn
layer{s}.{b}.downsample.0.weight      conv{s+1}_block{b+1}_0_conv
layer{s}.{b}.downsample.1.*           conv{s+1}_block{b+1}_0_bn
fc.weight, fc.bias                    fc (kernel, bias)
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import keras
import numpy as np

_BN_FIELDS = {"weight": 0, "bias": 1, "running_mean": 2, "running_var": 3}  # Keras' BN order


def _keras_layer_name(torch_module: str) -> str | None:
    if torch_module == "conv1":
        return "conv1_conv"
    if torch_module == "bn1":
        return "conv1_bn"
    if torch_module == "fc":
        return "fc"
    match = re.fullmatch(r"layer(\d+)\.(\d+)\.(conv|bn)(\d+)", torch_module)
    if match:
        stage, block, kind, index = match.groups()
        return f"conv{int(stage) + 1}_block{int(block) + 1}_{index}_{kind}"
    match = re.fullmatch(r"layer(\d+)\.(\d+)\.downsample\.([01])", torch_module)
    if match:
        stage, block, index = match.groups()
        kind = "conv" if index == "0" else "bn"
        return f"conv{int(stage) + 1}_block{int(block) + 1}_0_{kind}"
    return None


def _to_numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor; no torch import needed here
        value = value.detach().cpu().float().numpy()
    return np.asarray(value, dtype=np.float32)


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a `torch.save` file as data only (`weights_only=True`): no code in it runs."""
    import pickle

    import torch

    if not os.path.isfile(path):
        raise ValueError(f"state_dict file not found, received state_dict={str(path)!r}")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"state_dict file {str(path)!r} holds more than tensors and was refused; only "
            f"weights_only files are read, so no code in it runs ({str(error).splitlines()[0]})"
        ) from None
    if (
        isinstance(loaded, Mapping)
        and "state_dict" in loaded
        and isinstance(loaded["state_dict"], Mapping)
    ):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, Mapping):
        raise ValueError(
            f"state_dict file {str(path)!r} does not hold a mapping of names to tensors, "
            f"received a {type(loaded).__name__}"
        )
    return {name: _to_numpy(value) for name, value in loaded.items()}


def load_torchvision_weights(model: keras.Model, state_dict) -> keras.Model:
    """Copies a torchvision ResNet's weights into a keras_resnet model of the same architecture.

    Every weight of the model must be found in `state_dict` with the right shape, and every
    entry of `state_dict` must be used (its `fc.*` entries are skipped when the model has no
    top; `num_batches_tracked` is always skipped). Otherwise a ValueError lists the mismatches and
    the model's weights are left exactly as they were: nothing is assigned until all is checked.

    Args:
        model: a model from `keras_resnet` (its layer names are the contract).
        state_dict: a mapping of torchvision names to torch tensors or numpy arrays, or the path
            of a file written by `torch.save(model.state_dict(), path)`.

    Returns:
        The same model, for chaining.

    Example:
        >>> import torchvision  # before TensorFlow: importing it after segfaults on some builds
        >>> model = keras_resnet.ResNet50(classifier_activation=None)
        >>> load_torchvision_weights(model, torchvision.models.resnet50().state_dict())
    """
    if isinstance(state_dict, (str, os.PathLike)):
        state_dict = read_state_dict(state_dict)
    if not isinstance(state_dict, Mapping):
        raise ValueError(
            "state_dict must be a mapping of names to tensors or a file path, "
            f"received state_dict of type {type(state_dict).__name__}"
        )
    layers_by_name = {layer.name: layer for layer in model.layers}
    # Layer name -> list of arrays in the layer's own weight order.
    pending: dict[str, dict[int, np.ndarray]] = {}
    problems: list[str] = []
    for key, value in state_dict.items():
        module, _, field = key.rpartition(".")
        if field == "num_batches_tracked":
            continue
        layer_name = _keras_layer_name(module)
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

    for layer in model.layers:
        if not layer.weights:
            continue
        given = pending.get(layer.name, {})
        for slot, weight in enumerate(layer.weights):
            if slot not in given:
                problems.append(f"{layer.name}/{weight.name}: missing from state_dict")
            elif tuple(given[slot].shape) != tuple(weight.shape):
                problems.append(
                    f"{layer.name}/{weight.name}: shape {tuple(weight.shape)} in the model, "
                    f"{tuple(given[slot].shape)} in state_dict"
                )
    if problems:
        shown = "; ".join(problems[:5]) + (
            f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
        )
        raise ValueError(
            f"state_dict does not match model {model.name!r} ({len(problems)} problems; the model "
            f"was left unchanged): {shown}"
        )
    for layer in model.layers:
        if layer.weights:
            given = pending[layer.name]
            layer.set_weights([given[slot] for slot in range(len(layer.weights))])
    return model
