"""Copying torchvision and timm ResNet weights into keras_resnet models.

torchvision / timm name               keras_resnet layer (weight)
conv1.weight                          conv1_conv (kernel)
bn1.{weight,bias,running_mean,var}    conv1_bn (gamma, beta, moving_mean, moving_variance)
conv1.{0,1,3,4,6}.*                   deep stem (timm resnet*d): conv1a_conv, conv1a_bn,
                                      conv1b_conv, conv1b_bn, conv1_conv (then bn1 = conv1_bn)
layer{s}.{b}.conv{i}.weight           conv{s+1}_block{b+1}_{i}_conv
layer{s}.{b}.bn{i}.*                  conv{s+1}_block{b+1}_{i}_bn
layer{s}.{b}.downsample.0.weight      conv{s+1}_block{b+1}_0_conv
layer{s}.{b}.downsample.1.*           conv{s+1}_block{b+1}_0_bn
layer{s}.{b}.downsample.{1,2}.*       the same after timm's AvgPool (downsample='avg'), which
                                      shifts the indices by one
fc.weight, fc.bias                    fc (kernel, bias)

Files are read as data: `torch.load(weights_only=True)` or safetensors, never by unpickling code.
"""

from __future__ import annotations

import logging
import math
import os
import re
import warnings
from collections.abc import Mapping

import keras
import numpy as np

from keras_resnet.utils import one_line

logger = logging.getLogger("keras_resnet")

_BN_FIELDS = {"weight": 0, "bias": 1, "running_mean": 2, "running_var": 3}  # Keras' BN order
_DEEP_STEM = {
    "conv1.0": "conv1a_conv",
    "conv1.1": "conv1a_bn",
    "conv1.3": "conv1b_conv",
    "conv1.4": "conv1b_bn",
    "conv1.6": "conv1_conv",
}
STATE_DICT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")


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


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a state dict file as data only: `.safetensors` with safetensors, anything else with
    `torch.load(weights_only=True)`, so no code in it runs. A `{"state_dict": ...}` or
    `{"model": ...}` checkpoint is unwrapped.

    Raises:
        ValueError: one line naming the file, when it is missing, empty, truncated, not a
            state dict, or holds more than tensors.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"state_dict file not found, received state_dict={path!r}")
    if os.path.getsize(path) == 0:
        raise ValueError(f"state_dict file {path!r} is empty")
    if path.endswith(".safetensors"):
        loaded = _read_safetensors(path)
    else:
        loaded = _read_torch(path)
    for key in ("state_dict", "model"):
        if isinstance(loaded, Mapping) and isinstance(loaded.get(key), Mapping):
            loaded = loaded[key]
    if not isinstance(loaded, Mapping):
        raise ValueError(
            f"state_dict file {path!r} does not hold a mapping of names to tensors, "
            f"received a {type(loaded).__name__}"
        )
    return {name: _to_numpy(value) for name, value in loaded.items()}


def _read_torch(path: str):
    import pickle

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"state_dict file {path!r} holds more than tensors and was refused; only "
            f"weights_only files are read, so no code in it runs ({one_line(error)})"
        ) from None
    except Exception as error:  # torch raises RuntimeError, EOFError, IndexError... by damage
        raise ValueError(
            f"state_dict file {path!r} could not be read as a PyTorch state dict (truncated, or "
            f"not a torch.save file): {one_line(error)}"
        ) from None


def _read_safetensors(path: str):
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as error:
        raise ValueError(
            f"state_dict file {path!r} could not be read as safetensors: {one_line(error)}"
        ) from None


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


def load_torchvision_weights(model: keras.Model, state_dict, *, adapt: bool = False) -> keras.Model:
    """Copies a torchvision (or timm) ResNet's weights into a keras_resnet model of the same
    architecture.

    Every weight of the model must be found in `state_dict` with the right shape, and every
    entry of `state_dict` must be used (its `fc.*` entries are skipped when the model has no
    top; `num_batches_tracked` is always skipped). Otherwise a ValueError lists the mismatches and
    the model's weights are left exactly as they were: nothing is assigned until all is checked.

    Args:
        model: a model from `keras_resnet` (its layer names are the contract).
        state_dict: a mapping of torchvision/timm names to torch tensors or numpy arrays, or the
            path of a `.pth`/`.pt` (read with `weights_only=True`) or `.safetensors` file.
        adapt: fine-tuning mode. A classifier of another size stays as initialized (the log
            says so), and RGB weights of the first convolution are adapted to a model with
            another number of input channels by timm's rule (`adapt_input_conv`). Every other
            mismatch is still an error.

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
    pending, problems = _collect(model, state_dict)
    notes = _adapt(model, pending) if adapt else []
    new_head = adapt and "fc" not in pending
    problems += _check(model, pending, new_head=new_head)
    if problems:
        shown = "; ".join(problems[:5]) + (
            f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
        )
        raise ValueError(
            f"state_dict does not match model {model.name!r} ({len(problems)} problems; the model "
            f"was left unchanged): {shown}"
        )
    for layer in model.layers:
        if layer.weights and layer.name in pending:
            given = pending[layer.name]
            layer.set_weights([given[slot] for slot in range(len(layer.weights))])
    for note in notes:
        logger.warning("%s: %s", model.name, note)
    return model


def load_timm_weights(model: keras.Model, state_dict, *, adapt: bool = False) -> keras.Model:
    """Copies a timm ResNet's weights (`resnet18`, `resnet50`, `resnet18d` ... `resnet152d`:
    timm's `state_dict()` or a `.pth`/`.safetensors` file) into a keras_resnet model of the same
    architecture, e.g. `get_model("resnet50d")` for timm's `resnet50d`. timm keeps torchvision's
    names for plain ResNets; its deep stem (`conv1.0` ... `conv1.6`) and average-pool
    downsampling (`downsample.1/.2`) are mapped too. Same checks and `adapt` as
    `load_torchvision_weights`.

    Example:
        >>> import timm  # before TensorFlow, as torchvision
        >>> model = keras_resnet.get_model("resnet50d", classifier_activation=None)
        >>> load_timm_weights(model, timm.create_model("resnet50d").state_dict())
    """
    return load_torchvision_weights(model, state_dict, adapt=adapt)


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


def _adapt(model: keras.Model, pending: dict) -> list[str]:
    """Fine-tuning changes to `pending`, in place: a new head, an adapted first convolution.
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
    elif fc is None:
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


def _check(model: keras.Model, pending: dict, *, new_head: bool) -> list[str]:
    problems = []
    for layer in model.layers:
        if not layer.weights or (layer.name == "fc" and new_head):
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
    return problems


def load_weights(model: keras.Model, path: str | os.PathLike) -> keras.Model:
    """The builders' `weights=`: a torchvision/timm state dict (`.pth`, `.pt`, `.bin`,
    `.safetensors`; loaded with `adapt=True`: new head and 1/4-channel input allowed, logged) or
    a Keras `.weights.h5` file of the same architecture.

    Raises:
        ValueError: one line naming the file, when it cannot be read or does not match; the
            model's weights are then unchanged.
    """
    path = os.fspath(path)
    if path.endswith(".h5"):
        if not os.path.isfile(path):
            raise ValueError(f"weights file not found, received weights={path!r}")
        before = model.get_weights()
        try:
            # Keras only warns when part of the file matches no layer ("Skipping ...", those
            # layers keep their fresh weights): a half-loaded model is an error here.
            with warnings.catch_warnings():
                warnings.simplefilter("error", UserWarning)
                model.load_weights(path)
        except Exception as error:  # Keras raises ValueError, OSError or KeyError by case
            model.set_weights(before)
            raise ValueError(
                f"weights file {path!r} does not fit model {model.name!r}: {one_line(error)}"
            ) from None
        return model
    if not path.endswith(STATE_DICT_SUFFIXES):
        raise ValueError(
            f"weights must be a .weights.h5 file or a state dict ({', '.join(STATE_DICT_SUFFIXES)}"
            f"), received weights={path!r}"
        )
    return load_torchvision_weights(model, read_state_dict(path), adapt=True)
