"""The search space: what is searched, its KerasTuner hyperparameters, and how a trial's values
map onto a `ResNetConfig` (the architecture) and the training recipe.

    depth           18, 34, 50, 101, 152: the blocks per stage of `keras_resnet.DEPTHS`; with
                    `custom_stages`, also blocks per stage written '4-4-4' (any number of
                    stages: a 3-stage WRN-like net), and then a Choice of strings
    block           'basic' or 'bottleneck' (overrides the depth's own block kind)
    expansion       output channels per inner channel; bottleneck only (a conditional
                    hyperparameter: basic blocks keep the paper's 1)
    width           multiplier on every stage's width
    stem            'cifar', 'imagenet' or 'deep' (three 3x3 convolutions, ResNet-C/D)
    downsample      'conv' or 'avg' (ResNet-D's average-pool shortcut; searched when given)
    drop_path_rate  stochastic depth, linear per block (searched when its range is given)
    learning_rate   peak of the warmup + cosine schedule
    weight_decay    decoupled weight decay of the optimizer
    label_smoothing the loss' label smoothing (searched only when its range is given)
    erasing         random-erasing probability of the augmentation (likewise)
    ema             decay of the weights' moving average, 0: off (searched when its choices are
                    given; validation scores the averaged weights)
    mixup, cutmix   Beta alphas of mixup and CutMix, 0: off (searched when their ranges are
                    given; both on: one of the two per batch)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from keras_resnet.config import (
    BASE_WIDTH,
    BLOCKS,
    DEPTHS,
    DOWNSAMPLES,
    STEMS,
    ResNetConfig,
    total_stride,
)
from keras_resnet.utils import OptionError, check_int, check_number

if TYPE_CHECKING:  # annotations only: `keras-resnet tune --help` imports this module
    import keras_tuner

# Recipe values a trial may set on the TrainConfig, besides the architecture.
RECIPE_KEYS = (
    "learning_rate",
    "weight_decay",
    "label_smoothing",
    "erasing",
    "ema",
    "mixup",
    "cutmix",
)
# Recipe values searched over a range when its min and max are given, and their upper bounds
# (value, open): label smoothing < 1, probabilities <= 1, keras.layers.CutMix's alpha <= 1.
OPTIONAL_RANGES = {
    "label_smoothing": (1.0, True),
    "erasing": (1.0, False),
    "mixup": (None, False),
    "cutmix": (1.0, False),
}
# ResNetConfig fields every trial sets (the rest comes from the base configuration).
ARCHITECTURE_KEYS = ("stage_blocks", "block", "expansion", "width", "stem", "name")
# ResNetConfig fields a trial sets only when the space searches them.
OPTIONAL_MODEL_KEYS = ("downsample", "drop_path_rate")
# Every depth of DEPTHS has 4 stages.
NAMED_STAGES = 4


class SearchSpaceError(OptionError):
    """An invalid search space or option; `field` is its name (the flag without `--`)."""


def _help(text: str, **extra) -> dict:
    return {"help": text, **extra}


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """The ranges searched. Ranges are inclusive; a range whose min equals its max is fixed, and
    so is a list of one value. A recipe range left at None is not searched: trials take the
    training configuration's value.

    The learning-rate and weight-decay defaults bracket the training recipe's (SGD, 0.2 at batch
    256, weight decay 5e-3) by a factor of about 2 either way.
    """

    depths: tuple[int, ...] = dataclasses.field(
        default=(18, 34), metadata=_help("depths to choose from (default 18 34)")
    )
    block_kinds: tuple[str, ...] = dataclasses.field(
        default=BLOCKS, metadata=_help("block kinds to choose from (default both)", choices=BLOCKS)
    )
    expansion_min: int = dataclasses.field(
        default=2, metadata=_help("smallest bottleneck expansion (default 2)")
    )
    expansion_max: int = dataclasses.field(
        default=4, metadata=_help("largest bottleneck expansion (default 4)")
    )
    width_min: float = dataclasses.field(
        default=0.25, metadata=_help("smallest width multiplier (default 0.25)")
    )
    width_max: float = dataclasses.field(
        default=1.0, metadata=_help("largest width multiplier (default 1.0)")
    )
    width_step: float = dataclasses.field(
        default=0.25, metadata=_help("grid step of the width (default 0.25)")
    )
    stems: tuple[str, ...] = dataclasses.field(
        default=("cifar",), metadata=_help("stems to choose from (default cifar)", choices=STEMS)
    )
    custom_stages: tuple[str, ...] | None = dataclasses.field(
        default=None,
        metadata=_help(
            "more depth choices as blocks per stage, e.g. 4-4-4 (a 3-stage WRN-like net) "
            "(default: none)",
            metavar="N-N-N",
        ),
    )
    downsamples: tuple[str, ...] | None = dataclasses.field(
        default=None,
        metadata=_help(
            "shortcut downsampling to choose from: conv, avg (ResNet-D) (default: not "
            "searched, the base model's conv)",
            choices=DOWNSAMPLES,
        ),
    )
    drop_path_rate_min: float | None = dataclasses.field(
        default=None,
        metadata=_help("smallest stochastic-depth rate, 0 allowed (default: not searched)"),
    )
    drop_path_rate_max: float | None = dataclasses.field(
        default=None, metadata=_help("largest stochastic-depth rate, < 1")
    )
    lr_min: float = dataclasses.field(
        default=0.1, metadata=_help("smallest peak learning rate, log scale (default 0.1)")
    )
    lr_max: float = dataclasses.field(
        default=0.4, metadata=_help("largest peak learning rate (default 0.4)")
    )
    weight_decay_min: float = dataclasses.field(
        default=2e-3, metadata=_help("smallest weight decay, log scale (default 2e-3)")
    )
    weight_decay_max: float = dataclasses.field(
        default=1e-2, metadata=_help("largest weight decay (default 1e-2)")
    )
    label_smoothing_min: float | None = dataclasses.field(
        default=None, metadata=_help("smallest label smoothing (default: not searched)")
    )
    label_smoothing_max: float | None = dataclasses.field(
        default=None, metadata=_help("largest label smoothing, < 1")
    )
    erasing_min: float | None = dataclasses.field(
        default=None, metadata=_help("smallest random-erasing probability (default: not searched)")
    )
    erasing_max: float | None = dataclasses.field(
        default=None, metadata=_help("largest random-erasing probability, <= 1")
    )
    emas: tuple[float, ...] | None = dataclasses.field(
        default=None,
        metadata=_help(
            "decays of the weights' moving average to choose from, 0: off, e.g. 0 0.999 0.9995 "
            "(default: not searched)",
            metavar="DECAY",
        ),
    )
    mixup_min: float | None = dataclasses.field(
        default=None,
        metadata=_help("smallest mixup alpha, 0 (off) allowed (default: not searched)"),
    )
    mixup_max: float | None = dataclasses.field(default=None, metadata=_help("largest mixup alpha"))
    cutmix_min: float | None = dataclasses.field(
        default=None,
        metadata=_help("smallest CutMix alpha, 0 (off) allowed (default: not searched)"),
    )
    cutmix_max: float | None = dataclasses.field(
        default=None, metadata=_help("largest CutMix alpha, <= 1")
    )

    def __post_init__(self):
        for name in ("depths", "block_kinds", "stems", "custom_stages", "downsamples", "emas"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, tuple(getattr(self, name)))
        self.validate()

    # ---- validation -----------------------------------------------------------------------
    def validate(self) -> None:
        """Raises `SearchSpaceError` naming the first invalid field and its value."""
        try:
            _check_choices(self, "depths", sorted(DEPTHS), empty=bool(self.custom_stages))
            _check_custom_stages(self)
            _check_choices(self, "block_kinds", BLOCKS)
            check_int("expansion_min", self.expansion_min, 1)
            check_int("expansion_max", self.expansion_max, 1)
            _check_order(self, "expansion_min", "expansion_max")
            for name in ("width_min", "width_max", "width_step", "lr_min", "lr_max"):
                check_number(name, getattr(self, name), 0, low_open=True)
            _check_order(self, "width_min", "width_max")
            # The narrowest network must keep at least one channel in the stem (64 * width).
            if round(BASE_WIDTH * self.width_min) < 1:
                raise OptionError(
                    "width_min",
                    "width_min must leave one channel per layer (>= 1/64), "
                    f"received width_min={self.width_min!r}",
                )
            _check_choices(self, "stems", STEMS)
            if self.downsamples is not None:
                _check_choices(self, "downsamples", DOWNSAMPLES)
            _check_order(self, "lr_min", "lr_max")
            check_number("weight_decay_min", self.weight_decay_min, 0)
            check_number("weight_decay_max", self.weight_decay_max, 0)
            _check_order(self, "weight_decay_min", "weight_decay_max")
            if self.weight_decay_min == 0 and self.weight_decay_max > 0:
                raise OptionError(
                    "weight_decay_min",
                    "weight_decay_min must be > 0 when weight_decay_max > 0 "
                    "(it is sampled on a log scale), received weight_decay_min=0",
                )
            for name, (high, high_open) in OPTIONAL_RANGES.items():
                _check_optional_range(self, name, high=high, high_open=high_open)
            _check_emas(self)
            _check_optional_range(self, "drop_path_rate", high=1.0, high_open=True)
        except OptionError as error:
            if isinstance(error, SearchSpaceError):
                raise
            raise SearchSpaceError(error.field, str(error)) from None

    def check_input(self, image_shape: Sequence[int]) -> None:
        """Raises `SearchSpaceError` when a stem cannot take images of `image_shape` (HWC) with
        one of the depth choices (every combination must build: a trial never fails on it)."""
        stage_counts = ({NAMED_STAGES} if self.depths else set()) | {
            len(parse_stages(text)) for text in self.custom_stages or ()
        }
        for stem in self.stems:
            downsampling = max(total_stride(stem, n) for n in stage_counts)
            if min(image_shape[:2]) < downsampling:
                raise SearchSpaceError(
                    "stems",
                    f"stems: {stem!r} needs images of at least {downsampling} px, the "
                    f"data's are {tuple(image_shape)}, received stems={list(self.stems)!r}",
                )

    def searched_fields(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """`(model_fields, recipe_fields)`: the `ResNetConfig` and `TrainConfig` fields a trial
        sets; the base configuration's values of these do not matter to the search."""
        model = ARCHITECTURE_KEYS
        if self.downsamples is not None:
            model += ("downsample",)
        if self.drop_path_rate_min is not None:
            model += ("drop_path_rate",)
        recipe = ("learning_rate", "weight_decay") + tuple(
            key for key in OPTIONAL_RANGES if getattr(self, f"{key}_min") is not None
        )
        if self.emas is not None:
            recipe += ("ema",)
        return model, recipe

    # ---- hyperparameters -------------------------------------------------------------------
    def widths(self) -> list[float]:
        """The width grid: width_min, width_min + step, ... up to width_max."""
        count = int(math.floor((self.width_max - self.width_min) / self.width_step + 1e-9)) + 1
        return [round(self.width_min + i * self.width_step, 6) for i in range(count)]

    def declare(self, hp: keras_tuner.HyperParameters) -> dict:
        """Declares the hyperparameters on a KerasTuner `HyperParameters` and returns their
        values (`config_from_values` maps them onto a configuration)."""
        if self.custom_stages:
            # One Choice holds one type: the named depths become strings beside '4-4-4'.
            depths = [str(d) for d in self.depths] + list(self.custom_stages)
            choice_or_fixed(hp, "depth", depths)
        else:
            choice_or_fixed(hp, "depth", list(self.depths), ordered=True)
        choice_or_fixed(hp, "block", list(self.block_kinds))
        if "bottleneck" in self.block_kinds:
            with hp.conditional_scope("block", ["bottleneck"]):
                int_or_fixed(hp, "expansion", self.expansion_min, self.expansion_max)
        # A Choice rather than a Float with a step: its values are exact (no 0.7500000000000001),
        # and the Bayesian oracle treats an ordered Choice as a number.
        choice_or_fixed(hp, "width", self.widths(), ordered=True)
        choice_or_fixed(hp, "stem", list(self.stems))
        if self.downsamples is not None:
            choice_or_fixed(hp, "downsample", list(self.downsamples))
        if self.drop_path_rate_min is not None:
            float_or_fixed(
                hp, "drop_path_rate", self.drop_path_rate_min, self.drop_path_rate_max, log=False
            )
        float_or_fixed(hp, "learning_rate", self.lr_min, self.lr_max, log=True)
        float_or_fixed(hp, "weight_decay", self.weight_decay_min, self.weight_decay_max, log=True)
        for name in OPTIONAL_RANGES:
            low, high = getattr(self, f"{name}_min"), getattr(self, f"{name}_max")
            if low is not None:
                float_or_fixed(hp, name, low, high, log=False)
        if self.emas is not None:
            choice_or_fixed(hp, "ema", [float(v) for v in self.emas], ordered=True)
        return dict(hp.values)

    def to_dict(self) -> dict:
        """JSON types; unsearched (None) recipe ranges are left out, so that a search stored
        before they existed has the same definition."""
        return {
            key: list(value) if isinstance(value, tuple) else value
            for key, value in dataclasses.asdict(self).items()
            if value is not None
        }


def _check_choices(space: SearchSpace, field: str, allowed: Sequence, empty=False) -> None:
    value = getattr(space, field)
    unknown = any(v not in allowed for v in value)
    if (not value and not empty) or unknown or len(set(value)) != len(value):
        raise SearchSpaceError(
            field,
            f"{field} must be distinct values from {tuple(allowed)}, "
            f"received {field}={list(value)!r}",
        )


def parse_stages(text) -> tuple[int, ...]:
    """Blocks per stage from '4-4-4' (ValueError when it is not integers >= 1 joined by '-')."""
    parts = str(text).split("-")
    if not all(part.isdigit() and int(part) >= 1 for part in parts):
        raise ValueError(f"not blocks per stage: {text!r}")
    return tuple(int(part) for part in parts)


def _check_custom_stages(space: SearchSpace) -> None:
    if space.custom_stages is None:
        return
    try:
        parsed = [parse_stages(text) for text in space.custom_stages]
    except ValueError:
        parsed = []
    if not parsed or len(set(parsed)) != len(parsed):
        raise SearchSpaceError(
            "custom_stages",
            "custom_stages must be distinct blocks per stage such as 4-4-4 (integers >= 1 "
            f"joined by '-'), received custom_stages={list(space.custom_stages)!r}",
        )
    # Stored normalized, so that '04-4' and '4-4' are not two searches.
    object.__setattr__(space, "custom_stages", tuple("-".join(map(str, p)) for p in parsed))


def _check_emas(space: SearchSpace) -> None:
    if space.emas is None:
        return
    ok = bool(space.emas) and len(set(space.emas)) == len(space.emas)
    ok = ok and all(
        not isinstance(v, bool) and isinstance(v, (int, float)) and 0 <= v < 1 for v in space.emas
    )
    if not ok:
        raise SearchSpaceError(
            "emas",
            "emas must be distinct decays in [0, 1) (0: no average), "
            f"received emas={list(space.emas)!r}",
        )


def _check_order(space: SearchSpace, low: str, high: str) -> None:
    if getattr(space, low) > getattr(space, high):
        raise SearchSpaceError(
            low,
            f"{low} must be <= {high}, received {low}={getattr(space, low)!r} and "
            f"{high}={getattr(space, high)!r}",
        )


def _check_optional_range(
    space: SearchSpace, name: str, high: float | None, high_open=False
) -> None:
    low_field, high_field = f"{name}_min", f"{name}_max"
    low_value, high_value = getattr(space, low_field), getattr(space, high_field)
    if (low_value is None) != (high_value is None):
        missing, other = (low_field, high_field) if low_value is None else (high_field, low_field)
        raise SearchSpaceError(
            missing,
            f"{missing} must be given together with {other}, received {missing}=None and "
            f"{other}={getattr(space, other)!r}",
        )
    if low_value is None:
        return
    for field in (low_field, high_field):
        check_number(field, getattr(space, field), 0, high, high_open=high_open)
    _check_order(space, low_field, high_field)


def choice_or_fixed(hp, name: str, values: list, ordered: bool = False):
    if len(values) == 1:
        return hp.Fixed(name, values[0])
    return hp.Choice(name, values, ordered=ordered)


def int_or_fixed(hp, name: str, low: int, high: int):
    return hp.Fixed(name, low) if low == high else hp.Int(name, low, high)


def float_or_fixed(hp, name: str, low: float, high: float, *, log: bool):
    if low == high:
        return hp.Fixed(name, float(low))
    return hp.Float(name, low, high, sampling="log" if log else "linear")


# --------------------------------------------------------------------------------------------
# A trial's values -> a configuration
# --------------------------------------------------------------------------------------------


def config_from_values(values: dict, base: ResNetConfig | None = None) -> tuple[ResNetConfig, dict]:
    """A trial's configuration from its hyperparameter values.

    Args:
        values: the trial's values (`hp.values`, or a trial.json's).
        base: the model configuration the trial starts from (its other options, such as
            dropout or zero-init, are kept); default `ResNetConfig()`.

    Returns:
        `(model, recipe)`: the `ResNetConfig` (e.g. resnet34's stage blocks, bottleneck,
        expansion 2, width 0.5, 'cifar' stem, named 'resnet34'; expansion None for basic
        blocks) and the recipe values searched (`learning_rate`, `weight_decay`, and
        `label_smoothing`, `erasing`, `ema`, `mixup`, `cutmix` when searched).
    """
    stage_blocks, name = stages_of(values["depth"])
    block = values["block"]
    changes = dict(
        stage_blocks=stage_blocks,
        block=block,
        expansion=int(values["expansion"]) if block == "bottleneck" else None,
        width=float(values["width"]),
        stem=values["stem"],
        name=name,
    )
    if "downsample" in values:
        changes["downsample"] = values["downsample"]
    if "drop_path_rate" in values:
        changes["drop_path_rate"] = float(values["drop_path_rate"])
    model = (base or ResNetConfig()).replace(**changes)
    recipe = {key: float(values[key]) for key in RECIPE_KEYS if key in values}
    return model, recipe


def stages_of(depth) -> tuple[tuple[int, ...], str]:
    """`(stage_blocks, model name)` of a 'depth' value: 34 or '34' (resnet34's), or blocks per
    stage such as '4-4-4' (named 'resnet_4-4-4')."""
    text = str(depth)
    if text.isdigit() and int(text) in DEPTHS:
        return DEPTHS[int(text)][1], f"resnet{int(text)}"
    stages = parse_stages(text)
    return stages, "resnet_" + "-".join(map(str, stages))


def describe(model: ResNetConfig) -> str:
    """A short name for a trial's architecture, e.g. 'resnet34 bottleneck e2 w0.5 cifar', with
    ' avg-down' and ' dp0.1' when the shortcut averages or blocks are dropped."""
    text = f"{model.name} {model.block}"
    if model.block == "bottleneck":
        text += f" e{model.block_expansion}"
    text += f" w{model.width:g} {model.stem}"
    if model.downsample != "conv":
        text += f" {model.downsample}-down"
    if model.drop_path_rate:
        text += f" dp{model.drop_path_rate:.3g}"
    return text


__all__ = [
    "ARCHITECTURE_KEYS",
    "OPTIONAL_MODEL_KEYS",
    "RECIPE_KEYS",
    "SearchSpace",
    "SearchSpaceError",
    "config_from_values",
    "describe",
    "parse_stages",
    "stages_of",
]
