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

Keras files (`.weights.h5`, or the weights inside a `.keras` archive) are matched by layer name,
the `name` Keras (3.10 and later) records beside each layer's variables, so that a file of
another class count, or with or without a top, gives a new head and the rest of the network.

File suffixes are matched in any case (`R50.PTH` is a `.pth`). A state dict that does not fit
says what to pass to build the network it holds (`stem='imagenet'`, `--stem imagenet`).

The name mapping, the shape checks and the architecture hint are in `keras_resnet.weight_mapping`.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import warnings
import zipfile
from collections.abc import Iterator, Mapping

import h5py
import keras
import numpy as np

from keras_resnet.utils import one_line
from keras_resnet.weight_mapping import (
    _adapt,
    _architecture_hint,
    _assign,
    _check,
    _collect,
    _count,
    _to_numpy,
    adapt_input_conv,  # noqa: F401  (public: keras_resnet.weights.adapt_input_conv)
)

STATE_DICT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")
KERAS_SUFFIXES = (".h5", ".keras")
# Where Keras' saving_lib puts the weights inside a `.keras` archive.
_KERAS_ARCHIVE_WEIGHTS = "model.weights.h5"


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
    if path.lower().endswith(".safetensors"):
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

    try:
        import torch
    except ImportError:
        raise ValueError(
            f"state_dict file {path!r} is a PyTorch file, which needs torch: pip install torch "
            "(a .safetensors file needs only safetensors)"
        ) from None

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
    try:
        from safetensors import SafetensorError
        from safetensors.numpy import load_file
    except ImportError:
        raise ValueError(
            f"state_dict file {path!r} is a safetensors file, which needs safetensors: "
            "pip install safetensors"
        ) from None

    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as error:
        raise ValueError(
            f"state_dict file {path!r} could not be read as safetensors: {one_line(error)}"
        ) from None


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
    label = "state_dict"
    if isinstance(state_dict, (str, os.PathLike)):
        label = f"weights file {os.fspath(state_dict)!r}"
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
        hint = _architecture_hint(model, state_dict)
        raise ValueError(
            f"{label} does not match model {model.name!r}{f'; {hint}' if hint else ''} "
            f"({_count(problems)}; the model was left unchanged): {shown}"
        )
    return _assign(model, pending, notes)


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


def load_weights(model: keras.Model, path: str | os.PathLike) -> keras.Model:
    """The builders' `weights=` (and train's `--weights`): a file of weights into `model`.

    - A torchvision/timm state dict (`.pth`, `.pt`, `.bin`, `.safetensors`): loaded with
      `load_torchvision_weights(adapt=True)`.
    - A Keras `.weights.h5` file, or the weights inside a `.keras` model file (a run's
      `model.keras` or `checkpoints/best.keras`; only its weights are read, no code or config
      in it is used). A file of the same architecture loads with Keras' `model.load_weights`.
      A file whose classifier has another number of classes, or that has a classifier the
      model lacks or lacks one the model has, loads every other layer by name and keeps the
      model's classifier as initialized; RGB weights of the first convolution are adapted to 1
      or 4 input channels as for state dicts. Each such change is logged as one WARNING.

    Every other difference (depth, width, block, stem, input channels) is an error.

    Args:
        model: a model from `keras_resnet` (its layer names are the contract).
        path: the weights file.

    Returns:
        The same model, for chaining.

    Raises:
        ValueError: one line naming the file (and the first mismatching layer), when it cannot
            be read or does not match; the model's weights are then unchanged.
    """
    path = os.fspath(path)
    if path.lower().endswith(KERAS_SUFFIXES):
        return _load_keras_file(model, path)
    if not path.lower().endswith(STATE_DICT_SUFFIXES):
        raise ValueError(
            f"weights must be a .weights.h5 or .keras file or a state dict "
            f"({', '.join(STATE_DICT_SUFFIXES)}), a registered name or 'imagenet' "
            f"(keras_resnet.pretrained), received weights={path!r}"
        )
    return load_torchvision_weights(model, path, adapt=True)


def _load_keras_file(model: keras.Model, path: str) -> keras.Model:
    """A Keras weights file into `model`: Keras' own loader when the layers and shapes agree,
    else by layer name with a new head (see `load_weights`)."""
    if not os.path.isfile(path):
        raise ValueError(f"weights file not found, received weights={path!r}")
    with _keras_weight_groups(path) as (groups, duplicates):
        if groups is None or (not duplicates and _same_architecture(model, groups)):
            plan = None
        else:
            try:
                plan = _plan_by_name(model, groups, duplicates)
            except OSError as error:  # h5py, on a damaged variable
                raise _unreadable(path, error) from None
    if plan is None:
        return _load_same_architecture(model, path)
    pending, problems, notes = plan
    if problems:
        raise ValueError(
            f"weights file {path!r} does not fit model {model.name!r} ({_count(problems)}; the "
            f"model was left unchanged), the first: {problems[0]}"
        )
    return _assign(model, pending, notes)


def _unreadable(path: str, error: BaseException) -> ValueError:
    return ValueError(
        f"weights file {path!r} could not be read as a Keras weights file: {one_line(error)}"
    )


def _load_same_architecture(model: keras.Model, path: str) -> keras.Model:
    before = model.get_weights()
    try:
        # Keras only warns when part of the file matches no layer ("Skipping ...", those
        # layers keep their fresh weights): a half-loaded model is an error here.
        with warnings.catch_warnings(), _lower_case_suffix(path) as readable:
            warnings.simplefilter("error", UserWarning)
            model.load_weights(readable)
    except Exception as error:  # Keras raises ValueError, OSError or KeyError by case
        model.set_weights(before)
        raise ValueError(
            f"weights file {path!r} does not fit model {model.name!r}: {one_line(error)}"
        ) from None
    return model


@contextlib.contextmanager
def _lower_case_suffix(path: str) -> Iterator[str]:
    """`path`, or a link to it whose suffix is in lower case: Keras picks its reader by the
    suffix, in lower case only (`R18.WEIGHTS.H5`)."""
    lower = path.lower()
    suffix = ".weights.h5" if lower.endswith(".weights.h5") else os.path.splitext(lower)[1]
    if path.endswith(suffix):
        yield path
        return
    folder = tempfile.mkdtemp(prefix="keras-resnet-weights-")
    try:
        link = os.path.join(folder, "weights" + suffix)
        try:
            os.symlink(os.path.abspath(path), link)
        except OSError:  # no symbolic links (some Windows accounts): a copy
            shutil.copyfile(path, link)
        yield link
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def _keras_weight_groups(path: str) -> Iterator[tuple[dict | None, list[str]]]:
    """The layers of a Keras 3 weights file (a `.weights.h5`, or the one inside a `.keras`):
    layer name -> its h5py group of variables ("0", "1", ... in the layer's own order), layers
    of nested models included, layers without variables left out; and the names found twice.
    Keras files address layers by class and position (`layers/conv2d_3/vars`) and record the
    layer's name in the group's `name` attribute (Keras 3.10 and later). The groups are None
    when that name is absent (older or Keras 2 files): those load only as the same
    architecture, through Keras."""
    with contextlib.ExitStack() as stack:
        try:
            source = path
            if path.lower().endswith(".keras"):
                archive = stack.enter_context(zipfile.ZipFile(path))
                source = stack.enter_context(archive.open(_KERAS_ARCHIVE_WEIGHTS))
            h5 = stack.enter_context(h5py.File(source, "r"))
            found, duplicates = {}, []
            named = _named_layer_groups(h5.get("layers"), found, duplicates)
        except (OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
            raise _unreadable(path, error) from None
        yield (found if named and found else None), duplicates


def _named_layer_groups(layers, found: dict, duplicates: list) -> bool:
    """Fills `found` and `duplicates` from a file's `layers` group; False when a layer's
    variables carry no name."""
    if not isinstance(layers, h5py.Group):
        return True
    for key in layers:
        child = _hard_child(layers, key)
        if not isinstance(child, h5py.Group):
            continue
        variables = _hard_child(child, "vars")
        if isinstance(variables, h5py.Group) and len(variables):
            name = variables.attrs.get("name")
            if name is None:
                return False
            for slot in variables:
                if not isinstance(_hard_child(variables, slot), h5py.Dataset):
                    raise ValueError(f"{variables.name}/{slot} is not an array")
            name = name.decode() if isinstance(name, bytes) else str(name)
            if name in found:
                duplicates.append(name)
            found[name] = variables
        nested = _hard_child(child, "layers")  # a model inside the model
        if isinstance(nested, h5py.Group) and not _named_layer_groups(nested, found, duplicates):
            return False
    return True


def _hard_child(group: h5py.Group, key: str):
    """`group[key]`, or None; a soft or external link is refused, as Keras' own loader does
    (an external link would read another file)."""
    link = group.get(key, getlink=True)
    if link is None:
        return None
    if not isinstance(link, h5py.HardLink):
        raise ValueError(f"{group.name}/{key} is a {type(link).__name__}, not allowed")
    return group[key]


def _slots(variables: h5py.Group) -> list[str]:
    return sorted(variables, key=lambda key: (len(key), key))  # "0", "1", ... "10"


def _read_array(dataset: h5py.Dataset) -> np.ndarray:
    value = dataset[()]
    if dataset.attrs.get("dtype") == "bfloat16":  # Keras stores bfloat16 as 2 opaque bytes
        import ml_dtypes  # Keras' own dependency; needed only for such files

        value = value.view(ml_dtypes.bfloat16)
    return np.asarray(value)


def _same_architecture(model: keras.Model, groups: dict) -> bool:
    layers = {layer.name: layer for layer in model.layers if layer.weights}
    return set(layers) == set(groups) and all(
        [tuple(groups[name][key].shape) for key in _slots(groups[name])]
        == [tuple(weight.shape) for weight in layer.weights]
        for name, layer in layers.items()
    )


def _natural(name: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _plan_by_name(model: keras.Model, groups: dict, duplicates: list) -> tuple:
    """What a file of another architecture gives `model`: layer name -> {slot: array}, the
    problems (in the model's layer order, then the file's extra layers), the notes to log."""
    layers = {layer.name: layer for layer in model.layers if layer.weights}
    has_fc = any(layer.name == "fc" for layer in model.layers)
    pending: dict[str, dict[int, np.ndarray]] = {}
    extra = [f"{name}: in the file twice" for name in sorted(set(duplicates))]
    for name in sorted(groups, key=_natural):
        variables, layer = groups[name], layers.get(name)
        if layer is None:
            if name != "fc" or has_fc:  # a headless model takes the backbone only
                extra.append(f"{name}: in the file, no layer of that name in the model")
            continue
        slots = _slots(variables)
        if len(slots) > len(layer.weights):
            extra.append(
                f"{name}: {len(slots)} variables in the file, {len(layer.weights)} in the model"
            )
        pending[name] = {slot: _read_array(variables[key]) for slot, key in enumerate(slots)}
    notes = _adapt(model, pending, source_has_fc="fc" in groups)
    problems = _check(model, pending, new_head="fc" not in pending, source="the file")
    return pending, problems + extra, notes
