"""Pretrained weights by name: a registry of torchvision's and timm's ImageNet weights, their
download into Keras' cache, and ImageNet's class names.

    >>> model = keras_resnet.ResNet50(weights="imagenet")  # raw 0-255 RGB pixels in
    >>> probabilities = model.predict(images)
    >>> pretrained.decode_predictions(probabilities, top=3)[0]  # the first image's
    [(index, 'class name', probability), ...], the highest first

Names are `<architecture>.<tag>` with timm's tags (`resnet50.a1_in1k`, `resnet50.tv2_in1k`) and
torchvision's (`resnet50.IMAGENET1K_V2`), matched without regard to case; a builder also takes the
tag alone (`ResNet50(weights="tv2_in1k")`), and `"imagenet"`, each architecture's best weights
(the highest top-1 among its `.safetensors` files, which load without PyTorch).

Files are cached in `$KERAS_HOME/models` (default `~/.keras/models`, where keras.applications keeps
its weights). A download goes to a temporary folder beside the cache and is moved into it only
once its hash (when one is registered) matches and a `.safetensors` file's header reads whole: a
failed, cut or wrong download leaves nothing in the cache. Keras' `get_file` checks a hash after
downloading too, but leaves a mismatching file in place, where the next call takes it as cached.

Environment:
    KERAS_RESNET_OFFLINE=1: never download over the network; a file missing from the cache is an
        error naming the path where it was expected (a mirror folder is still read).
    KERAS_RESNET_WEIGHTS_MIRROR: a folder, or an http(s):// or file:// URL prefix, holding the
        files under their cache names (`PretrainedWeights.file_name`); used instead of the
        origins. A folder can be torch.hub's (`~/.cache/torch/hub/checkpoints`) for torchvision's
        files, which keep their names.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from pathlib import Path
from types import MappingProxyType

from keras_resnet.config import ARCHITECTURES, ResNetConfig
from keras_resnet.pretrained.classes import decode_predictions, imagenet_classes
from keras_resnet.pretrained.download import (
    MIRROR_ENV,  # noqa: F401
    OFFLINE_ENV,
    _download,
    _offline,
    _source_url,
    cache_folder,
)
from keras_resnet.pretrained.entry import (
    _DEFAULT_DATA_CONFIG,  # noqa: F401
    _IMAGENET_MEAN,  # noqa: F401
    _IMAGENET_STD,  # noqa: F401
    ALIAS,
    CROP_MODES,  # noqa: F401
    DATA_CONFIG_KEYS,
    FORMATS,
    INTERPOLATIONS,  # noqa: F401
    WEIGHTS_SUFFIXES,
    PretrainedWeights,
    _architecture_key,
    _check_file_name,
    _check_name,
    _data_config,
    _weights_suffix,
    architecture_name,
)
from keras_resnet.pretrained.registry import _BEST, _TIMM, _TORCHVISION

__all__ = [
    "DATA_CONFIG_KEYS",
    "FORMATS",
    "PretrainedWeights",
    "architecture_name",
    "decode_predictions",
    "get_weights",
    "imagenet_classes",
    "list_weights",
    "register_weights",
    "resolve_weights",
    "weights_file",
]

_REGISTRY: dict[str, PretrainedWeights] = {}
_DEFAULTS: dict[str, str] = {}  # architecture -> the name "imagenet" stands for


def register_weights(
    name: str,
    origin: str,
    *,
    model: str,
    sha256: str | None = None,
    file_name: str | None = None,
    format: str = "torchvision",
    num_classes: int = 1000,
    license: str | None = None,
    source: str | None = None,
    top1: float | None = None,
    **data_config,
) -> PretrainedWeights:
    """Registers weights under `name`, so that `weights=name` finds them (a name registered
    again is replaced).

    Args:
        name: the name, e.g. 'resnet50.my_finetune' (a builder then also takes 'my_finetune').
        origin: an http(s):// or file:// URL of the file.
        model: the architecture, a key of `keras_resnet.ARCHITECTURES`.
        sha256: the file's sha256 digest, or its first 8 or more hex characters; checked after
            every download. None: not checked.
        file_name: its name in the cache (default: `name` + the origin's suffix, e.g.
            'resnet50.my_finetune.safetensors').
        format: 'torchvision' or 'timm' (a `.pth`/`.pt`/`.bin`/`.safetensors` state dict) or
            'keras' (a `.weights.h5` or `.keras` file).
        num_classes, license, source, top1: as in `PretrainedWeights`.
        **data_config: any of `input_size`, `mean`, `std`, `crop_pct`, `crop_mode`,
            `interpolation` (timm's units; default torchvision's: 224 px, ImageNet mean and
            std, crop_pct 0.875, center, bilinear).

    Returns:
        The new entry.

    Raises:
        ValueError: naming the argument and the value received.

    Example:
        >>> register_weights("resnet18.ours", "https://example.com/r18.safetensors",
        ...                  model="resnet18", format="timm", interpolation="bicubic")
        >>> model = keras_resnet.ResNet18(weights="ours")
    """
    _check_name(name)
    model = _architecture_key(model)
    scheme = urllib.parse.urlsplit(str(origin)).scheme
    if not isinstance(origin, str) or scheme not in ("http", "https", "file"):
        raise ValueError(f"origin must be an http(s):// or file:// URL, received origin={origin!r}")
    if sha256 is not None and not (
        isinstance(sha256, str) and re.fullmatch(r"[0-9a-f]{8,64}", sha256)
    ):
        raise ValueError(
            f"sha256 must be 8 to 64 lower-case hex digits (a digest or its prefix), "
            f"received sha256={sha256!r}"
        )
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, received format={format!r}")
    if file_name is None:
        suffix = _weights_suffix(urllib.parse.urlsplit(origin).path)
        if suffix is None:
            raise ValueError(
                f"origin {origin!r} does not end in a weights suffix "
                f"({', '.join(WEIGHTS_SUFFIXES)}): pass file_name, e.g. "
                "file_name='weights.safetensors'"
            )
        file_name = name + suffix
    _check_file_name(file_name, format)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(
            f"num_classes must be an integer >= 1, received num_classes={num_classes!r}"
        )
    if top1 is not None and (
        isinstance(top1, bool) or not isinstance(top1, (int, float)) or not 0 <= top1 <= 100
    ):
        raise ValueError(f"top1 must be a percentage in [0, 100] or None, received top1={top1!r}")
    entry = PretrainedWeights(
        name=name,
        model=model,
        origin=origin,
        file_name=file_name,
        sha256=sha256,
        format=format,
        num_classes=num_classes,
        license=license,
        source=source,
        top1=None if top1 is None else float(top1),
        data_config=MappingProxyType(_data_config(data_config)),
    )
    _REGISTRY[name.lower()] = entry
    return entry


def list_weights(model: str | None = None) -> list[str]:
    """The registered names, by architecture (`ARCHITECTURES`' order) then name; those of one
    architecture when `model` is given.

    Example:
        >>> list_weights("resnet18")
        ['resnet18.a1_in1k', 'resnet18.IMAGENET1K_V1', 'resnet18.tv_in1k']
    """
    key = None if model is None else _architecture_key(model)
    order = {name: i for i, name in enumerate(ARCHITECTURES)}
    entries = [entry for entry in _REGISTRY.values() if key is None or entry.model == key]
    entries.sort(key=lambda entry: (order[entry.model], entry.name.lower()))
    return [entry.name for entry in entries]


def get_weights(name_or_alias, model: str | None = None) -> PretrainedWeights:
    """The entry a name stands for.

    Args:
        name_or_alias: a registered name ('resnet50.a1_in1k'; any case), a tag of `model`'s
            ('a1_in1k', 'IMAGENET1K_V2'), 'imagenet' (`model`'s best weights), or an entry.
        model: the architecture the weights are for: 'imagenet' and tags need it; a full name
            of another architecture's weights is then an error.

    Raises:
        ValueError: one line listing the names registered for `model` (all names without it).
    """
    key = None if model is None else _architecture_key(model)
    if isinstance(name_or_alias, PretrainedWeights):
        entry = name_or_alias
    elif not isinstance(name_or_alias, str) or not name_or_alias:
        raise ValueError(
            "weights must be a name of registered weights or a file path, received "
            f"weights={name_or_alias!r}"
        )
    else:
        wanted = name_or_alias.lower()
        if wanted == ALIAS:
            if key is None:
                raise ValueError(
                    "weights='imagenet' needs the architecture: get_weights('imagenet', "
                    "model='resnet50')"
                )
            wanted = _DEFAULTS.get(key, "").lower()
        entry = _REGISTRY.get(wanted)
        if entry is None and key is not None:
            entry = _REGISTRY.get(f"{key}.{wanted}")
        if entry is None:
            raise ValueError(_unknown(name_or_alias, key))
    if key is not None and entry.model != key:
        raise ValueError(
            f"weights {entry.name!r} are for {entry.model}, not {key}; the names for {key}: "
            f"{_names_for(key)}"
        )
    return entry


def _names_for(key: str | None) -> str:
    names = list_weights(key)
    if key is not None and key in _DEFAULTS:
        names = [f"imagenet (= {_DEFAULTS[key]})", *names]
    return ", ".join(names) if names else "none"


def _unknown(name, key: str | None) -> str:
    where = f" for {key}" if key is not None else ""
    return (
        f"unknown weights {name!r}{where}; the names{where}: {_names_for(key)}; or the path of a "
        f"file ending in {', '.join(WEIGHTS_SUFFIXES)}"
    )


def resolve_weights(
    spec, model_name: str | ResNetConfig
) -> tuple[str | os.PathLike | None, PretrainedWeights | None]:
    """What a builder's `weights=` stands for: a file to load and, for named weights, their entry.

    A path (an `os.PathLike`, or a string with a weights suffix in any case or a path separator)
    stays as it is, for `weights.load_weights` (which reports a missing file); a name
    ('imagenet', 'resnet50.a1_in1k', 'a1_in1k') or an entry becomes the cached file,
    downloaded first when needed.

    Args:
        spec: None, a path, a registered name or 'imagenet', or a `PretrainedWeights`.
        model_name: the architecture being built: a key of `keras_resnet.ARCHITECTURES`, or its
            `ResNetConfig` (`architecture_name` picks the key by its blocks, whatever its name).

    Returns:
        (None, None) for None; (the path, None) for a path; (the cached file, the entry).

    Raises:
        ValueError: one line, for an unknown name (listing `model_name`'s names), weights of
            another architecture, or a file that could not be fetched.
    """
    if spec is None:
        return None, None
    if isinstance(spec, os.PathLike):
        return spec, None
    if isinstance(spec, str) and (
        _weights_suffix(spec) is not None or "/" in spec or os.sep in spec
    ):
        return spec, None
    if isinstance(model_name, ResNetConfig):
        model_name = architecture_name(model_name)
    if str(model_name).lower().replace("-", "") not in ARCHITECTURES:
        raise ValueError(
            f"weights={spec!r} names pretrained weights, which exist for the named "
            f"architectures only ({', '.join(ARCHITECTURES)}); this model is none of them "
            f"({model_name!r}): pass a weights file"
        )
    entry = get_weights(spec, model_name)
    return weights_file(entry), entry


def weights_file(entry) -> Path:
    """The cached file of `entry` (an entry or a registered name), downloaded and checked first
    when it is not in the cache.

    A download shows Keras' progress bar, goes to a temporary folder beside the cache, and is
    moved into it only once the registered sha256 (digest or prefix) matches and, for
    `.safetensors`, the file's header reads whole. A file in the cache is trusted: only
    checked files are ever moved there.

    Raises:
        ValueError: one line: offline with the file missing (naming the path expected), a
            failed download, or a wrong hash (the cache is left without the file).
    """
    if not isinstance(entry, PretrainedWeights):
        entry = get_weights(entry)
    target = cache_folder() / entry.file_name
    if target.is_file():
        return target
    url = _source_url(entry)
    if _offline() and urllib.parse.urlsplit(url).scheme != "file":
        raise ValueError(
            f"weights {entry.name!r} are not in the cache and {OFFLINE_ENV}=1 forbids "
            f"downloading them: expected {target}"
        )
    _download(entry, url, target)
    return target


def _register_builtins() -> None:
    for model, enum, tag, file_name, top1, config in _TORCHVISION:
        if model not in ARCHITECTURES:
            continue
        register_weights(
            f"{model}.{tag}",
            f"https://download.pytorch.org/models/{file_name}",
            model=model,
            # torch.hub's check: the hex digits after the last '-' of the file name are the
            # first ones of the file's sha256.
            sha256=re.search(r"-([0-9a-f]{8,})\.", file_name).group(1),
            file_name=file_name,
            format="torchvision",
            license="bsd-3-clause",
            source=f"torchvision {enum}.{tag}",
            top1=top1,
            **config,
        )
    for name, license_, top1, config in _TIMM:
        model = name.split(".", 1)[0]
        if model not in ARCHITECTURES:
            continue
        register_weights(
            name,
            f"https://huggingface.co/timm/{name}/resolve/main/model.safetensors",
            model=model,
            format="timm",
            license=license_,
            source=f"timm {name}",
            top1=top1,
            **config,
        )
    for model, name in _BEST.items():
        if model in ARCHITECTURES:
            _DEFAULTS[model] = name


_register_builtins()
