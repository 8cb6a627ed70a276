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

import dataclasses
import functools
import hashlib
import importlib.resources
import os
import re
import shutil
import tempfile
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from keras_resnet.config import ARCHITECTURES, ResNetConfig
from keras_resnet.utils import one_line

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

OFFLINE_ENV = "KERAS_RESNET_OFFLINE"
MIRROR_ENV = "KERAS_RESNET_WEIGHTS_MIRROR"
ALIAS = "imagenet"
FORMATS = ("torchvision", "timm", "keras")
# timm's data config, in its units: input_size (C, H, W), mean and std of 0-1 pixels.
DATA_CONFIG_KEYS = ("input_size", "mean", "std", "crop_pct", "crop_mode", "interpolation")
INTERPOLATIONS = ("bilinear", "bicubic")
CROP_MODES = ("center",)
# Every suffix `weights.load_weights` reads, longest first (".weights.h5" before ".h5").
WEIGHTS_SUFFIXES = (".weights.h5", ".safetensors", ".keras", ".pth", ".bin", ".pt", ".h5")
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_DEFAULT_DATA_CONFIG = {
    "input_size": (3, 224, 224),
    "mean": _IMAGENET_MEAN,
    "std": _IMAGENET_STD,
    "crop_pct": 0.875,
    "crop_mode": "center",
    "interpolation": "bilinear",
}


@dataclasses.dataclass(frozen=True)
class PretrainedWeights:
    """One file of pretrained weights.

    Attributes:
        name: `<architecture>.<tag>`, e.g. 'resnet50.a1_in1k'.
        model: the architecture, a key of `keras_resnet.ARCHITECTURES`.
        origin: the URL the file is downloaded from.
        file_name: its name in the cache (and in a mirror).
        sha256: the file's sha256 digest, or its first characters (torchvision's files carry
            the first 8 in their names and torch.hub checks that prefix); None: not checked.
        format: 'torchvision' or 'timm' (a state dict in that library's names) or 'keras'.
        num_classes: classifier outputs.
        license: the weights' license, as their publisher gives it.
        source: the publisher's name for the weights.
        top1: ImageNet-1k validation top-1 accuracy (%) the publisher reports, at
            `data_config`; None where none is published.
        data_config: timm's data config: `input_size` (C, H, W), `mean` and `std` of 0-1
            pixels, `crop_pct` (crop side / resize side), `crop_mode` ('center'),
            `interpolation` ('bilinear' or 'bicubic').
    """

    name: str
    model: str
    origin: str
    file_name: str
    sha256: str | None
    format: str
    num_classes: int
    license: str | None
    source: str | None
    top1: float | None
    data_config: Mapping[str, Any] = dataclasses.field(hash=False)

    @property
    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """`data_config`'s mean and std in 0-255 pixel units: a builder's `normalization`."""
        mean, std = self.data_config["mean"], self.data_config["std"]
        return tuple(m * 255.0 for m in mean), tuple(s * 255.0 for s in std)


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


def _check_name(name) -> None:
    if (
        not isinstance(name, str)
        or not name
        or name != name.strip()
        or any(c.isspace() or c in "/\\" for c in name)
        or name.lower() == ALIAS
        or _weights_suffix(name) is not None
    ):
        raise ValueError(
            "name must be a non-empty name without spaces or slashes, not 'imagenet', and not "
            f"ending in a file suffix, received name={name!r}"
        )


def _check_file_name(file_name, format: str) -> None:
    suffix = _weights_suffix(file_name) if isinstance(file_name, str) else None
    if suffix is None or os.path.basename(file_name) != file_name or file_name.startswith("."):
        raise ValueError(
            f"file_name must be a plain file name ending in {', '.join(WEIGHTS_SUFFIXES)}, "
            f"received file_name={file_name!r}"
        )
    keras_file = suffix in (".weights.h5", ".keras", ".h5")
    if keras_file != (format == "keras"):
        raise ValueError(
            f"format={format!r} does not fit file_name={file_name!r}: 'keras' goes with "
            ".weights.h5 and .keras files, 'torchvision' and 'timm' with state dicts"
        )


def _weights_suffix(path: str) -> str | None:
    lower = path.lower()
    return next((s for s in WEIGHTS_SUFFIXES if lower.endswith(s)), None)


def _data_config(given: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(given) - set(DATA_CONFIG_KEYS))
    if unknown:
        raise ValueError(
            f"unknown data config key(s) {unknown}; the keys are {list(DATA_CONFIG_KEYS)}"
        )
    config = {**_DEFAULT_DATA_CONFIG, **given}
    size = config["input_size"]
    if (
        not isinstance(size, (tuple, list))
        or len(size) != 3
        or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in size)
    ):
        raise ValueError(
            f"input_size must be (channels, height, width), 3 positive integers, "
            f"received input_size={size!r}"
        )
    config["input_size"] = tuple(size)
    for key, low, high in (("mean", 0.0, 1.0), ("std", 0.0, 1.0)):
        values = config[key]
        ok = isinstance(values, (tuple, list)) and len(values) == size[0]
        ok = ok and all(
            not isinstance(v, bool) and isinstance(v, (int, float)) and low <= v <= high
            for v in values
        )
        if not ok or (key == "std" and min(values) <= 0):
            raise ValueError(
                f"{key} must be {size[0]} numbers in [0, 1] (0-1 pixel units; std > 0), one per "
                f"input channel, received {key}={values!r}"
            )
        config[key] = tuple(float(v) for v in values)
    crop = config["crop_pct"]
    if isinstance(crop, bool) or not isinstance(crop, (int, float)) or not 0 < crop <= 1:
        raise ValueError(f"crop_pct must be a number in (0, 1], received crop_pct={crop!r}")
    config["crop_pct"] = float(crop)
    for key, choices in (("crop_mode", CROP_MODES), ("interpolation", INTERPOLATIONS)):
        if config[key] not in choices:
            raise ValueError(f"{key} must be one of {choices}, received {key}={config[key]!r}")
    return {key: config[key] for key in DATA_CONFIG_KEYS}


def _architecture_key(model) -> str:
    key = str(model).lower().replace("-", "") if isinstance(model, str) else None
    if key not in ARCHITECTURES:
        raise ValueError(f"model must be one of {sorted(ARCHITECTURES)}, received model={model!r}")
    return key


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


# Fields that decide which pretrained weights fit a config, the first ones before the others.
_CORE_FIELDS = ("stage_blocks", "block", "block_expansion", "groups", "width_per_group")
_STEM_FIELDS = ("stem", "downsample")


def architecture_name(config: ResNetConfig) -> str:
    """The key of `ARCHITECTURES` whose weights `config` takes: its name when that architecture
    has the same blocks (depth, block, expansion, groups, width per group), else the
    architecture with those blocks whose stem and downsampling agree most (a CIFAR-stem
    ResNet-50 is 'resnet50'), else `config.name`. The stem, width and the rest are left to the
    load, which says what to pass when they differ.

    Example:
        >>> architecture_name(ResNetConfig(stage_blocks=(3, 4, 6, 3), block="bottleneck"))
        'resnet50'
    """

    def same(name: str, fields) -> int:
        named = ResNetConfig.named(name)
        return sum(getattr(named, f) == getattr(config, f) for f in fields)

    if config.name in ARCHITECTURES and same(config.name, _CORE_FIELDS) == len(_CORE_FIELDS):
        return config.name
    candidates = [n for n in ARCHITECTURES if same(n, _CORE_FIELDS) == len(_CORE_FIELDS)]
    if not candidates:
        return config.name
    return max(candidates, key=lambda n: same(n, _STEM_FIELDS))  # first of equals: plain


# ---------------------------------------------------------------------------------------------
# The cache
# ---------------------------------------------------------------------------------------------


def cache_folder() -> Path:
    """Where the weights are cached: `$KERAS_HOME/models`, default `~/.keras/models` (read at
    each call, so that a changed KERAS_HOME applies)."""
    home = os.environ.get("KERAS_HOME") or os.path.join("~", ".keras")
    return Path(os.path.expanduser(home)) / "models"


def _offline() -> bool:
    value = os.environ.get(OFFLINE_ENV, "").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise ValueError(
        f"{OFFLINE_ENV} must be 1 (offline) or 0, received {OFFLINE_ENV}="
        f"{os.environ[OFFLINE_ENV]!r}"
    )


def _source_url(entry: PretrainedWeights) -> str:
    """The URL to fetch `entry` from: the mirror's when one is set, else the origin."""
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    if not mirror:
        return entry.origin
    if urllib.parse.urlsplit(mirror).scheme in ("http", "https", "file"):
        return f"{mirror.rstrip('/')}/{urllib.parse.quote(entry.file_name)}"
    folder = Path(os.path.expanduser(mirror))
    if not folder.is_dir():
        raise ValueError(
            f"{MIRROR_ENV} must be a folder or an http(s):// or file:// URL prefix, received "
            f"{MIRROR_ENV}={mirror!r} (no such folder)"
        )
    path = folder.resolve() / entry.file_name
    if not path.is_file():
        raise ValueError(
            f"weights {entry.name!r} are not in the mirror folder {MIRROR_ENV}={mirror!r}: "
            f"expected {path}"
        )
    return path.as_uri()


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


def _download(entry: PretrainedWeights, url: str, target: Path) -> None:
    import keras  # only when a file is fetched

    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{entry.file_name}.", dir=target.parent))
    except OSError as error:
        raise ValueError(
            f"the weights cache {target.parent} cannot be written ({one_line(error)}); set "
            "KERAS_HOME to a writable folder"
        ) from None
    try:
        try:
            # get_file falls back to /tmp/.keras for a cache_dir it cannot write; `scratch`
            # exists and is ours, so the file lands there.
            fetched = Path(
                keras.utils.get_file(
                    fname=entry.file_name, origin=url, cache_dir=str(scratch), cache_subdir="."
                )
            )
        except Exception as error:  # get_file raises a bare Exception for URL errors
            raise ValueError(
                f"could not download weights {entry.name!r} from {url}: {one_line(error)}"
            ) from None
        _verify(entry, fetched, url)
        with open(fetched, "rb") as file:
            os.fsync(file.fileno())
        os.replace(fetched, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _verify(entry: PretrainedWeights, path: Path, url: str) -> None:
    if entry.sha256 is not None:
        digest = hashlib.sha256()
        with open(path, "rb") as file:
            for chunk in iter(lambda: file.read(1 << 20), b""):
                digest.update(chunk)
        actual = digest.hexdigest()
        if not actual.startswith(entry.sha256):
            raise ValueError(
                f"weights {entry.name!r} downloaded from {url} have sha256 {actual}, expected "
                f"{entry.sha256}{'...' if len(entry.sha256) < 64 else ''}; the file was "
                "discarded and nothing was cached"
            )
    if entry.file_name.lower().endswith(".safetensors"):
        try:
            from safetensors import safe_open
        except ImportError:
            return  # loading will say that safetensors is needed
        try:
            with safe_open(str(path), "numpy"):
                pass
        except Exception as error:  # SafetensorError, OSError
            raise ValueError(
                f"weights {entry.name!r} downloaded from {url} are not a whole safetensors "
                f"file ({one_line(error)}); the file was discarded and nothing was cached"
            ) from None


# ---------------------------------------------------------------------------------------------
# ImageNet's classes
# ---------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def imagenet_classes() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names, in the order of the classifier's outputs
    (torchvision's `_IMAGENET_CATEGORIES`)."""
    text = (
        importlib.resources.files("keras_resnet")
        .joinpath("imagenet_classes.txt")
        .read_text(encoding="utf-8")
    )
    return tuple(text.splitlines())


def decode_predictions(probabilities, top: int = 5) -> list[list[tuple[int, str, float]]]:
    """The `top` ImageNet classes of each row of a 1000-class classifier's output, as
    keras.applications' `decode_predictions` gives them, with the class index in place of the
    WordNet id.

    Args:
        probabilities: an array or tensor of shape (batch, 1000) (or (1000,), one row): the
            model's softmax output (logits rank the same; their values are returned as they are).
        top: how many classes per row, in [1, 1000].

    Returns:
        One list per row of (class index, class name, value) tuples, the highest value first
        (ties: the lower index first).

    Raises:
        ValueError: for another shape, or `top` out of range.

    Example:
        >>> decoded = decode_predictions(model.predict(images), top=2)
        >>> index, name, probability = decoded[0][0]  # the first image's best class
    """
    if hasattr(probabilities, "shape") and not isinstance(probabilities, np.ndarray):
        import keras

        probabilities = keras.ops.convert_to_numpy(probabilities)
    values = np.asarray(probabilities, dtype=np.float64)
    classes = imagenet_classes()
    if values.ndim == 1:
        values = values[None]
    if values.ndim != 2 or values.shape[1] != len(classes):
        raise ValueError(
            f"probabilities must have shape (batch, {len(classes)}), received shape "
            f"{tuple(np.shape(probabilities))}"
        )
    if isinstance(top, bool) or not isinstance(top, int) or not 1 <= top <= len(classes):
        raise ValueError(f"top must be an integer in [1, {len(classes)}], received top={top!r}")
    result = []
    for row in values:
        order = np.argsort(-row, kind="stable")[:top]
        result.append([(int(i), classes[i], float(row[i])) for i in order])
    return result


# ---------------------------------------------------------------------------------------------
# The registry: torchvision's and timm's published ImageNet-1k weights
# ---------------------------------------------------------------------------------------------

_TV_V1 = {"input_size": (3, 224, 224), "crop_pct": 0.875, "interpolation": "bilinear"}
# torchvision's V2 recipes evaluate at resize 232, crop 224.
_TV_V2 = {"input_size": (3, 224, 224), "crop_pct": 224 / 232, "interpolation": "bilinear"}

# torchvision: (architecture, weights enum, tag, file, top-1, data config), from
# torchvision 0.29's `<Enum>.<TAG>.url`, `.meta["_metrics"]` and `.transforms()`.
_TORCHVISION = [
    ("resnet18", "ResNet18_Weights", "IMAGENET1K_V1", "resnet18-f37072fd.pth", 69.758, _TV_V1),
    ("resnet34", "ResNet34_Weights", "IMAGENET1K_V1", "resnet34-b627a593.pth", 73.314, _TV_V1),
    ("resnet50", "ResNet50_Weights", "IMAGENET1K_V1", "resnet50-0676ba61.pth", 76.13, _TV_V1),
    ("resnet50", "ResNet50_Weights", "IMAGENET1K_V2", "resnet50-11ad3fa6.pth", 80.858, _TV_V2),
    ("resnet101", "ResNet101_Weights", "IMAGENET1K_V1", "resnet101-63fe2227.pth", 77.374, _TV_V1),
    ("resnet101", "ResNet101_Weights", "IMAGENET1K_V2", "resnet101-cd907fc2.pth", 81.886, _TV_V2),
    ("resnet152", "ResNet152_Weights", "IMAGENET1K_V1", "resnet152-394f9c45.pth", 78.312, _TV_V1),
    ("resnet152", "ResNet152_Weights", "IMAGENET1K_V2", "resnet152-f82ba261.pth", 82.284, _TV_V2),
    (
        "wide_resnet50_2",
        "Wide_ResNet50_2_Weights",
        "IMAGENET1K_V1",
        "wide_resnet50_2-95faca4d.pth",
        78.468,
        _TV_V1,
    ),
    (
        "wide_resnet50_2",
        "Wide_ResNet50_2_Weights",
        "IMAGENET1K_V2",
        "wide_resnet50_2-9ba9bcbe.pth",
        81.602,
        _TV_V2,
    ),
    (
        "resnext50_32x4d",
        "ResNeXt50_32X4D_Weights",
        "IMAGENET1K_V1",
        "resnext50_32x4d-7cdf4587.pth",
        77.618,
        _TV_V1,
    ),
    (
        "resnext50_32x4d",
        "ResNeXt50_32X4D_Weights",
        "IMAGENET1K_V2",
        "resnext50_32x4d-1a0047aa.pth",
        81.198,
        _TV_V2,
    ),
    # Registered only where keras_resnet.ARCHITECTURES names these architectures.
    (
        "wide_resnet101_2",
        "Wide_ResNet101_2_Weights",
        "IMAGENET1K_V1",
        "wide_resnet101_2-32ee1156.pth",
        78.848,
        _TV_V1,
    ),
    (
        "wide_resnet101_2",
        "Wide_ResNet101_2_Weights",
        "IMAGENET1K_V2",
        "wide_resnet101_2-d733dc28.pth",
        82.51,
        _TV_V2,
    ),
    (
        "resnext101_32x8d",
        "ResNeXt101_32X8D_Weights",
        "IMAGENET1K_V1",
        "resnext101_32x8d-8ba56ff5.pth",
        79.312,
        _TV_V1,
    ),
    (
        "resnext101_32x8d",
        "ResNeXt101_32X8D_Weights",
        "IMAGENET1K_V2",
        "resnext101_32x8d-110c445d.pth",
        82.834,
        _TV_V2,
    ),
    (
        "resnext101_64x4d",
        "ResNeXt101_64X4D_Weights",
        "IMAGENET1K_V1",
        "resnext101_64x4d-173b62eb.pth",
        83.246,
        _TV_V2,
    ),
]

_RSB = {"interpolation": "bicubic", "crop_pct": 1.0, "input_size": (3, 288, 288)}
_RA2 = {"interpolation": "bicubic", "crop_pct": 0.95, "input_size": (3, 288, 288)}
_RA2_320 = {"interpolation": "bicubic", "crop_pct": 1.0, "input_size": (3, 320, 320)}
_RA4 = {**_RSB, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
_TIMM_TV2 = {"interpolation": "bilinear", "crop_pct": 0.965, "input_size": (3, 224, 224)}

# timm: (name, license, top-1, data config). The data config is timm 1.0's pretrained_cfg at its
# test size (`resolve_data_config(use_test_size=True)`), where timm's results-imagenet.csv
# reports top-1 (the CSV's img_size and crop_pct). tv/tv2 files are torchvision's V1/V2 weights.
_TIMM = [
    ("resnet18.a1_in1k", "apache-2.0", 73.158, _RSB),
    ("resnet18.tv_in1k", "bsd-3-clause", 69.760, _TV_V1),
    ("resnet34.a1_in1k", "apache-2.0", 77.918, _RSB),
    # Not in timm's CSV; torchvision reports 73.314 for this file (resnet34-b627a593.pth).
    ("resnet34.tv_in1k", "bsd-3-clause", 73.314, _TV_V1),
    ("resnet50.a1_in1k", "apache-2.0", 81.214, _RSB),
    ("resnet50.a1h_in1k", "apache-2.0", 80.676, {**_RSB, "input_size": (3, 224, 224)}),
    ("resnet50.tv_in1k", "bsd-3-clause", 76.130, _TV_V1),
    ("resnet50.tv2_in1k", "bsd-3-clause", 80.850, _TIMM_TV2),
    ("resnet101.a1h_in1k", "apache-2.0", 82.778, _RSB),
    ("resnet101.tv_in1k", "bsd-3-clause", 77.376, _TV_V1),
    ("resnet101.tv2_in1k", "bsd-3-clause", 81.890, _TIMM_TV2),
    ("resnet152.a1h_in1k", "apache-2.0", 83.450, _RSB),
    ("resnet152.tv_in1k", "bsd-3-clause", 78.322, _TV_V1),
    ("resnet152.tv2_in1k", "bsd-3-clause", 82.288, _TIMM_TV2),
    ("resnet18d.ra2_in1k", "apache-2.0", 73.794, _RA2),
    # No published top-1 found for resnet18d's ra4 weights.
    ("resnet18d.ra4_e3600_r224_in1k", "apache-2.0", None, _RA4),
    ("resnet34d.ra2_in1k", "apache-2.0", 78.436, _RA2),
    ("resnet50d.ra2_in1k", "apache-2.0", 81.356, _RA2),
    ("resnet50d.a1_in1k", "apache-2.0", 81.450, _RSB),
    # timm's model card (288 px; 80.952 at 224).
    ("resnet50d.ra4_e3600_r224_in1k", "apache-2.0", 81.838, _RA4),
    ("resnet101d.ra2_in1k", "apache-2.0", 83.016, _RA2_320),
    ("resnet152d.ra2_in1k", "apache-2.0", 83.684, _RA2_320),
    ("wide_resnet50_2.racm_in1k", "apache-2.0", 82.280, _RA2),
    ("wide_resnet50_2.tv_in1k", "bsd-3-clause", 78.480, _TV_V1),
    ("wide_resnet50_2.tv2_in1k", "bsd-3-clause", 81.606, _TIMM_TV2),
    ("resnext50_32x4d.a1h_in1k", "apache-2.0", 82.014, _RSB),
    ("resnext50_32x4d.tv_in1k", "bsd-3-clause", 77.618, _TV_V1),
    ("resnext50_32x4d.tv2_in1k", "bsd-3-clause", 81.182, _TIMM_TV2),
    # Registered only where keras_resnet.ARCHITECTURES names these architectures.
    ("wide_resnet101_2.tv_in1k", "bsd-3-clause", 78.838, _TV_V1),
    ("wide_resnet101_2.tv2_in1k", "bsd-3-clause", 82.498, _TIMM_TV2),
    ("resnext101_32x8d.tv_in1k", "bsd-3-clause", 79.310, _TV_V1),
    ("resnext101_32x8d.tv2_in1k", "bsd-3-clause", 82.832, _TIMM_TV2),
    ("resnext101_64x4d.tv_in1k", "bsd-3-clause", 82.992, _TV_V1),
    ("resnext101_64x4d.c1_in1k", "apache-2.0", 83.156, _RSB),
]

# "imagenet": the highest top-1 among each architecture's .safetensors (timm) entries.
_BEST = {
    "resnet18": "resnet18.a1_in1k",
    "resnet34": "resnet34.a1_in1k",
    "resnet50": "resnet50.a1_in1k",
    "resnet101": "resnet101.a1h_in1k",
    "resnet152": "resnet152.a1h_in1k",
    "resnet18d": "resnet18d.ra2_in1k",
    "resnet34d": "resnet34d.ra2_in1k",
    "resnet50d": "resnet50d.ra4_e3600_r224_in1k",
    "resnet101d": "resnet101d.ra2_in1k",
    "resnet152d": "resnet152d.ra2_in1k",
    "wide_resnet50_2": "wide_resnet50_2.racm_in1k",
    "resnext50_32x4d": "resnext50_32x4d.a1h_in1k",
    "wide_resnet101_2": "wide_resnet101_2.tv2_in1k",
    "resnext101_32x8d": "resnext101_32x8d.tv2_in1k",
    "resnext101_64x4d": "resnext101_64x4d.c1_in1k",
}


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
