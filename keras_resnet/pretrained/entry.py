"""A registry entry (`PretrainedWeights`), the rules that check what `register_weights` is
given (names, file names, suffixes, timm's data config), and `architecture_name`, the
architecture whose weights a `ResNetConfig` takes."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

from keras_resnet.config import ARCHITECTURES, ResNetConfig

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
