"""The fields of `TrainConfig` and of its model: the metadata each option declares (its help,
command-line group, choices, bounds, and roles on resume and in a stored search), what is read
back from it (`declared_names`, `check_declared`), and the model fields a run takes from its
options (`MODEL_OPTIONS`, `merge_model`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from keras_resnet.config import ResNetConfig
from keras_resnet.utils import check_choice, check_int, check_number

# The ResNetConfig fields a training run takes from its options (and its command line its flags
# from): every field offered on a command line, except what the data decides.
MODEL_OPTIONS = tuple(
    f.name
    for f in dataclasses.fields(ResNetConfig)
    if f.metadata.get("cli") is not False and f.name != "num_classes"
)
# What a named architecture sets; choosing another name replaces these and keeps the rest
# (width, stem, dropout, ...).
ARCHITECTURE_FIELDS = ("stage_blocks", "block", "expansion", "groups", "width_per_group", "name")

# Field metadata keys (one declaration per option; read by `declared_names`):
#   help     the flag's help text;            group    its help group on the command line;
#   choices  allowed values;                  bounds   (low, high, integer) for `validate`;
#   resume   "safe": may change when a run resumes (how it is watched, where data is read);
#   search   "unchecked": may differ between a search and its resumption; "off_when_zero": left
#            out of a stored search's definition while off (searches stored before it existed).
GROUPS = ("data", "fine-tuning", "optimization", "execution and output")


def option(default, text: str, group: str | None = None, **extra):
    """A dataclass field of `default` whose metadata holds its help `text`, its command-line
    `group` and the `extra` roles above."""
    metadata = {"help": text, **extra}
    if group is not None:
        metadata["group"] = group
    return dataclasses.field(default=default, metadata=metadata)


def declared_names(cls, role: str, value=True) -> tuple[str, ...]:
    """The names of dataclass `cls`'s fields whose metadata `role` equals `value` (True: any
    value), in declaration order (`config.field_names` for `TrainConfig`)."""
    return tuple(
        f.name
        for f in dataclasses.fields(cls)
        if role in f.metadata and (value is True or f.metadata[role] == value)
    )


def check_declared(config) -> None:
    """Raises OptionError naming the first field of `config` (a dataclass) whose value is not
    among its declared `choices` or outside its declared `bounds`; None values are not checked."""
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if "choices" in field.metadata and value is not None:
            check_choice(field.name, value, field.metadata["choices"])
        if "bounds" in field.metadata and value is not None:
            _check_bounds(field.name, value, *field.metadata["bounds"])


def _check_bounds(name: str, value, low, high, integer: bool, openness: str = "") -> None:
    if integer:
        check_int(name, value, low, high)
        return
    check_number(
        name,
        value,
        low,
        high,
        low_open=openness == "open",
        high_open=openness in ("open", "high_open"),
    )


def merge_model(base: ResNetConfig, model=None, **options) -> ResNetConfig:
    """`base` with another architecture and/or model options (None values: not given).

    Args:
        base: the model the changes apply to.
        model: None, an architecture name (replaces `ARCHITECTURE_FIELDS`), a `ResNetConfig`
            (replaces `base`), or a mapping of fields (updates `base`; a full
            `ResNetConfig.to_dict()` replaces it).
        **options: `ResNetConfig` fields.
    """
    if isinstance(model, ResNetConfig):
        base = model
    elif isinstance(model, Mapping):
        base = ResNetConfig.from_dict({**base.to_dict(), **model})
    elif model is not None:
        named = ResNetConfig.named(model)
        base = base.replace(**{k: getattr(named, k) for k in ARCHITECTURE_FIELDS})
    options = {k: v for k, v in options.items() if v is not None}
    return base.replace(**options) if options else base
