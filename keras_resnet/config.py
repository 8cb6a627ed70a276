"""`ResNetConfig`: every option of the ResNet builder, in one frozen dataclass.

One field per option, checked in one place (`__post_init__`), with its help text in the field's
metadata. `keras_resnet.build_model(config)` builds it; `ResNet`, `ResNet18` ... go through it; the
training options embed it; the command-line flags of every command are generated from its fields
(`keras_resnet.cli.options`); a run's config.json and an export's `export.json` store
`config.to_dict()`, and `ResNetConfig.from_dict` rebuilds the same architecture.

Adding an option: a field here (with `metadata=_help(...)`), its check in `_validate`, and its use
in `models.build_model`.

    >>> config = ResNetConfig.named("resnet50", num_classes=10, width=0.5)
    >>> ResNetConfig.from_dict(config.to_dict()) == config
    True
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

from keras_resnet.utils import OptionError, check_choice, check_int, check_number

# Depth -> (default block kind, blocks per stage). Table 1 of the paper.
DEPTHS: dict[int, tuple[str, tuple[int, int, int, int]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
BLOCKS = ("basic", "bottleneck")
STEMS = ("imagenet", "cifar", "deep")
DOWNSAMPLES = ("conv", "avg")
OUTPUT_STRIDES = (8, 16, 32)
# torchvision's ImageNet statistics in 0-255 pixel units (mean, std): normalization="imagenet".
IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
# `pooling`'s default: resolved in __post_init__ to 'avg' with the top and None without it
# (keras.applications' convention), so that to_dict() stores the value the model was built with.
POOLING_DEFAULT = "default"
STRIDE_IN = ("3x3", "1x1")
POOLINGS = ("avg", "max", None)
DATA_FORMATS = ("channels_last", "channels_first")
BASE_WIDTH = 64  # channels of the stem and of stage 1 at width=1

# Named architectures: the fields that differ from ResNetConfig's defaults.
ARCHITECTURES: dict[str, dict[str, Any]] = {
    **{
        f"resnet{depth}": {"stage_blocks": stages, "block": block}
        for depth, (block, stages) in DEPTHS.items()
    },
    # Zagoruyko & Komodakis 2016; torchvision's wide_resnet50_2.
    "wide_resnet50_2": {
        "stage_blocks": DEPTHS[50][1],
        "block": "bottleneck",
        "width_per_group": 128,
    },
    # Xie et al. 2017; torchvision's resnext50_32x4d.
    "resnext50_32x4d": {
        "stage_blocks": DEPTHS[50][1],
        "block": "bottleneck",
        "groups": 32,
        "width_per_group": 4,
    },
    # ResNet-D (He et al. 2019, "Bag of Tricks"): deep stem and average-pool downsampling, timm's
    # resnet18d .. resnet152d.
    **{
        f"resnet{depth}d": {
            "stage_blocks": stages,
            "block": block,
            "stem": "deep",
            "downsample": "avg",
        }
        for depth, (block, stages) in DEPTHS.items()
    },
}


def _help(text: str, **extra) -> dict:
    return {"help": text, **extra}


@dataclasses.dataclass(frozen=True)
class ResNetConfig:
    """Every option of the ResNet builder. Invalid values raise `OptionError` (a ValueError)
    naming the option and the value received.

    `expansion=None` means the block's default (4 bottleneck, 1 basic); `input_shape=None` means
    224x224x3 in `data_format` order; `data_format=None` means `keras.config.image_data_format()`
    when the model is built.
    """

    stage_blocks: tuple[int, ...] = dataclasses.field(
        default=(2, 2, 2, 2), metadata=_help("blocks per stage, e.g. 3 4 6 3", cli=False)
    )
    block: str = dataclasses.field(
        default="basic",
        metadata=_help("'basic' (two 3x3) or 'bottleneck' (1x1, 3x3, 1x1)", choices=BLOCKS),
    )
    num_classes: int = dataclasses.field(
        default=1000, metadata=_help("classifier outputs", from_data=True)
    )
    input_shape: tuple[int | None, ...] | None = dataclasses.field(
        default=None,
        metadata=_help(
            "one image in data_format order (default 224x224x3)", cli=False, from_data=True
        ),
    )
    include_top: bool = dataclasses.field(
        default=True, metadata=_help("pooling, dropout and a dense classifier", cli=False)
    )
    pooling: str | None = dataclasses.field(
        default=POOLING_DEFAULT,
        metadata=_help(
            "'avg' or 'max'; without the top also None (the feature map); default: 'avg' with "
            "the top, None without (keras.applications)",
            cli=False,
        ),
    )
    classifier_activation: str | None = dataclasses.field(
        default="softmax",
        metadata=_help("'softmax', or None for logits; float32 under mixed precision", cli=False),
    )
    dropout_rate: float = dataclasses.field(
        default=0.0, metadata=_help("dropout before the classifier, in [0, 1)")
    )
    width: float = dataclasses.field(
        default=1.0, metadata=_help("multiplier on the stem's and every stage's width (default 1)")
    )
    expansion: int | None = dataclasses.field(
        default=None,
        metadata=_help("block output = expansion x inner width (default 4 bottleneck, 1 basic)"),
    )
    groups: int = dataclasses.field(
        default=1, metadata=_help("groups of the bottleneck's 3x3 convolution (ResNeXt)")
    )
    width_per_group: int = dataclasses.field(
        default=64, metadata=_help("inner width per group at width 1: 64 ResNet, 128 wide")
    )
    stem: str = dataclasses.field(
        default="imagenet",
        metadata=_help(
            "imagenet: 7x7/2 conv + 3x3/2 max-pool; cifar: 3x3/1 conv, no pool (28-64 px); "
            "deep: three 3x3 convs (ResNet-C/D) + 3x3/2 max-pool",
            choices=STEMS,
        ),
    )
    downsample: str = dataclasses.field(
        default="conv",
        metadata=_help(
            "projection shortcut: conv (strided 1x1) or avg (2x2 average pool + 1x1, ResNet-D)",
            choices=DOWNSAMPLES,
        ),
    )
    drop_path_rate: float = dataclasses.field(
        default=0.0,
        metadata=_help(
            "stochastic depth: block i of n drops its residual branch with probability "
            "rate * i / (n - 1) in training (timm's rule), in [0, 1)"
        ),
    )
    output_stride: int = dataclasses.field(
        default=32,
        metadata=_help(
            "8, 16 or 32: the last stages' stride becomes dilation beyond it (segmentation)",
            choices=OUTPUT_STRIDES,
        ),
    )
    stride_in: str = dataclasses.field(
        default="3x3",
        metadata=_help(
            "stride on the bottleneck's 3x3 (v1.5, default) or first 1x1 (v1)", choices=STRIDE_IN
        ),
    )
    zero_init_residual: bool = dataclasses.field(
        default=False, metadata=_help("start each block's last batch-norm gamma at 0")
    )
    data_format: str | None = dataclasses.field(
        default=None,
        metadata=_help(
            "channels_last or channels_first (default: Keras' setting)", cli=False, from_data=True
        ),
    )
    normalization: tuple[tuple[float, ...], tuple[float, ...]] | str | None = dataclasses.field(
        default=None,
        metadata=_help(
            "(mean, std) per channel in input units, or 'imagenet' (torchvision's statistics "
            "x 255, 3 channels); the model takes raw pixels",
            cli=False,
            from_data=True,
        ),
    )
    name: str = dataclasses.field(default="resnet", metadata=_help("model name", cli=False))

    def __post_init__(self):
        if self.pooling == POOLING_DEFAULT:
            object.__setattr__(self, "pooling", "avg" if self.include_top else None)
        _validate(self)

    # ---- derived values -------------------------------------------------------------------
    @property
    def block_expansion(self) -> int:
        """`expansion`, or the block's default when it is None."""
        if self.expansion is not None:
            return self.expansion
        return 4 if self.block == "bottleneck" else 1

    @property
    def resolved_data_format(self) -> str:
        import keras  # here: the command lines build their flags from this module without Keras

        return self.data_format or keras.config.image_data_format()

    @property
    def image_shape(self) -> tuple:
        """`input_shape`, or the 224x224x3 default in the data format's order."""
        if self.input_shape is not None:
            return tuple(self.input_shape)
        return (224, 224, 3) if self.resolved_data_format == "channels_last" else (3, 224, 224)

    @property
    def stage_widths(self) -> list[int]:
        """Channels of each stage's first convolution at this `width` (64w, 128w, 256w, 512w)."""
        return [int(round(BASE_WIDTH * self.width * 2**i)) for i in range(len(self.stage_blocks))]

    @property
    def total_stride(self) -> int:
        """How much the network downsamples, `output_stride` included."""
        return total_stride(self.stem, len(self.stage_blocks), self.output_stride)

    @property
    def stage_strides(self) -> list[tuple[int, int]]:
        """(stride, dilation) of each stage's first block; later blocks have stride 1 and the same
        dilation. A stage whose stride would take the network past `output_stride` gets stride 1
        and doubles the dilation instead (timm's `make_blocks`, torchvision's
        `replace_stride_with_dilation`)."""
        net_stride, dilation, result = stem_stride(self.stem), 1, []
        for stage in range(len(self.stage_blocks)):
            stride = 1 if stage == 0 else 2
            if net_stride >= self.output_stride and stride > 1:
                dilation, stride = dilation * stride, 1
            net_stride *= stride
            result.append((stride, dilation))
        return result

    @property
    def mean_std(self) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        """`normalization` as (mean, std) numbers ('imagenet' resolved), or None."""
        if self.normalization == "imagenet":
            return IMAGENET_MEAN, IMAGENET_STD
        return self.normalization

    # ---- construction and serialization ---------------------------------------------------
    @classmethod
    def named(cls, architecture: str, **overrides) -> ResNetConfig:
        """The configuration of a named architecture ('resnet18' ... 'resnet152',
        'resnet18d' ... 'resnet152d', 'wide_resnet50_2', 'resnext50_32x4d'), with `overrides`
        applied. Its `name` is the architecture's unless overridden."""
        key = str(architecture).lower().replace("-", "")
        if key not in ARCHITECTURES:
            raise OptionError(
                "model",
                f"model must be one of {sorted(ARCHITECTURES)} (or a depth in {sorted(DEPTHS)}), "
                f"received model={architecture!r}",
            )
        options = {**ARCHITECTURES[key], "name": key}
        options.update({k: v for k, v in overrides.items() if k != "block" or v is not None})
        return cls(**options)

    def replace(self, **changes) -> ResNetConfig:
        """A copy with `changes` applied (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types (tuples become lists); `from_dict` reverses it."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ResNetConfig:
        """The configuration `to_dict` wrote. Unknown keys raise an OptionError naming them."""
        if not isinstance(values, Mapping):
            raise OptionError(
                "config", f"config must be a mapping of options, received {type(values).__name__}"
            )
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise OptionError(
                unknown[0],
                f"unknown model option(s) {unknown}; known: {sorted(known)}",
            )
        return cls(**values)


def _as_tuple(value):
    return tuple(value) if isinstance(value, list) else value


def _validate(c: ResNetConfig) -> None:
    """Every check of the builder's options, before any layer exists."""
    # JSON gives lists: store tuples, so that the frozen config stays hashable and comparable.
    for name in ("stage_blocks", "input_shape"):
        object.__setattr__(c, name, _as_tuple(getattr(c, name)))
    if isinstance(c.normalization, (list, tuple)) and len(c.normalization) == 2:
        object.__setattr__(c, "normalization", tuple(_as_tuple(v) for v in c.normalization))

    check_choice("block", c.block, BLOCKS)
    check_choice("stem", c.stem, STEMS)
    check_choice("stride_in", c.stride_in, STRIDE_IN)
    check_choice("downsample", c.downsample, DOWNSAMPLES)
    check_choice("output_stride", c.output_stride, OUTPUT_STRIDES)
    check_number("drop_path_rate", c.drop_path_rate, 0.0, 1.0, high_open=True)
    check_choice("pooling", c.pooling, POOLINGS)
    if c.include_top and c.pooling is None:
        raise OptionError(
            "pooling", "pooling must be 'avg' or 'max' when include_top=True, received pooling=None"
        )
    if (
        not isinstance(c.stage_blocks, Sequence)
        or len(c.stage_blocks) == 0
        or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in c.stage_blocks)
    ):
        raise OptionError(
            "stage_blocks",
            "stage_blocks must be a non-empty sequence of integers >= 1, "
            f"received stage_blocks={c.stage_blocks!r}",
        )
    check_number("width", c.width, 0, low_open=True)
    if c.expansion is not None:
        check_int("expansion", c.expansion, 1)
    check_int("num_classes", c.num_classes, 1)
    check_int("groups", c.groups, 1)
    check_int("width_per_group", c.width_per_group, 1)
    check_number("dropout_rate", c.dropout_rate, 0.0, 1.0, high_open=True)
    if c.block == "basic" and (c.groups != 1 or c.width_per_group != 64):
        raise OptionError(
            "groups",
            "groups and width_per_group apply to bottleneck blocks only; basic blocks need "
            f"groups=1 and width_per_group=64, received groups={c.groups}, "
            f"width_per_group={c.width_per_group}",
        )
    if c.data_format is not None and c.data_format not in DATA_FORMATS:
        raise OptionError(
            "data_format",
            "data_format must be 'channels_last' or 'channels_first', "
            f"received data_format={c.data_format!r}",
        )
    if not isinstance(c.name, str) or not c.name:
        raise OptionError("name", f"name must be a non-empty string, received name={c.name!r}")
    _validate_shape(c)
    _validate_widths(c)


def _validate_shape(c: ResNetConfig) -> None:
    shape = c.image_shape
    if len(shape) != 3 or any(
        d is not None and (isinstance(d, bool) or not isinstance(d, int) or d < 1) for d in shape
    ):
        raise OptionError(
            "input_shape",
            "input_shape must be 3 positive integers (height, width, channels) in data_format "
            f"order, received input_shape={c.input_shape!r}",
        )
    channels_last = c.resolved_data_format == "channels_last"
    spatial = shape[:2] if channels_last else shape[1:]
    channels = shape[2] if channels_last else shape[0]
    if channels is None:
        raise OptionError(
            "input_shape",
            f"input_shape must give the channel count, received input_shape={c.input_shape!r}",
        )
    if any(d is not None and d < c.total_stride for d in spatial):
        raise OptionError(
            "input_shape",
            f"input_shape is too small: the network downsamples by {c.total_stride} "
            f"(stem={c.stem!r}, {len(c.stage_blocks)} stages), so height and width must be >= "
            f"{c.total_stride}, received input_shape={c.input_shape!r}",
        )
    if c.normalization == "imagenet" and channels != 3:
        raise OptionError(
            "normalization",
            "normalization='imagenet' needs 3 input channels (RGB), received input_shape="
            f"{c.input_shape!r}; give (mean, std) with {channels} values each instead",
        )
    if c.normalization is not None:
        try:
            mean, std = ([float(v) for v in values] for values in c.mean_std)
        except (TypeError, ValueError):
            mean = std = []
        if len(mean) != channels or len(std) != channels or min(std) <= 0:
            raise OptionError(
                "normalization",
                f"normalization must be (mean, std) with {channels} values each and std > 0, "
                f"received normalization={c.normalization!r}",
            )


def _validate_widths(c: ResNetConfig) -> None:
    widths = c.stage_widths
    if c.block == "bottleneck":
        for filters in widths:
            inner = inner_width(filters, c.groups, c.width_per_group)
            if inner < c.groups:
                raise OptionError(
                    "groups",
                    f"groups must divide the bottleneck's inner width, received groups={c.groups} "
                    f"for an inner width of {inner} (width={c.width}, "
                    f"width_per_group={c.width_per_group}): raise width or width_per_group",
                )
    if widths[0] < 1:  # the narrowest: the stem's and the first stage's
        raise OptionError(
            "width",
            f"width is too small to leave one channel per layer, received width={c.width!r}",
        )


def stem_stride(stem: str) -> int:
    """The stem's downsampling: 4 for 'imagenet' and 'deep', 1 for 'cifar'."""
    return 1 if stem == "cifar" else 4


def total_stride(stem: str, num_stages: int, output_stride: int = 32) -> int:
    """How much the network downsamples: the stem (4 for 'imagenet' and 'deep', 1 for 'cifar'),
    then 2 at the start of every stage after the first while that stays <= `output_stride`.
    Images must be at least this large."""
    stride = stem_stride(stem)
    for _ in range(num_stages - 1):
        if stride < output_stride:
            stride *= 2
    return stride


def inner_width(filters: int, groups: int, width_per_group: int) -> int:
    """The bottleneck's 3x3 width: torchvision's `int(planes * base_width / 64) * groups`."""
    return int(filters * (width_per_group / 64.0)) * groups
