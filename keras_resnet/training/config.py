"""`TrainConfig`: every option of a training run, with the model as an embedded `ResNetConfig`.

The data, optimization, execution and output options are fields here; the architecture is one
field, `model`, so that a model option is declared once (in `keras_resnet.config`). Field metadata
holds the help texts from which `keras-resnet train` generates its flags.

    >>> config = TrainConfig.create(model="resnet18", width=0.25, epochs=1)
    >>> config.model.width, config.model.stem, config.epochs
    (0.25, 'cifar', 1)
    >>> TrainConfig.from_dict(config.to_dict()) == config
    True
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from typing import Any

from keras_resnet.config import ResNetConfig
from keras_resnet.data import IDX_DATASETS, LOADERS
from keras_resnet.data.source import looks_like_path
from keras_resnet.utils import OptionError, check_choice, check_int, check_number

OPTIMIZERS = ("sgd", "adamw")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
XLA_MODES = ("auto", "on", "off")
DISTRIBUTE_MODES = ("auto", "off")
PRESETS = ("default", "quick")

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
DEFAULT_ARCHITECTURE = "resnet18"
DEFAULT_STEM = "cifar"  # 3x3 stride-1 convolution, no pool: small images
# Folders: images up to this side train with the small-image recipe (cifar stem, pad-crop, flip,
# erasing); larger ones with the ImageNet recipe (imagenet stem, random-resized crops).
SMALL_IMAGE_MAX = 64
DEFAULT_FOLDER_IMAGE_SIZE = 224
DEFAULT_VAL_SIZE = 5000  # named datasets
DEFAULT_FOLDER_VAL_FRACTION = 0.1  # folders without val/


def default_model() -> ResNetConfig:
    """ResNet-18 with the CIFAR stem, the recipe's model."""
    return ResNetConfig.named(DEFAULT_ARCHITECTURE, stem=DEFAULT_STEM)


def _opt(default, text: str, **extra):
    return dataclasses.field(default=default, metadata={"help": text, **extra})


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; training stopped and the best checkpoint was kept."""


@dataclasses.dataclass
class TrainConfig:
    """Every option of `keras-resnet train` (its flags are these names with dashes; the model's
    flags are `MODEL_OPTIONS` of `ResNetConfig`, plus `--model NAME`).

    `None` means "the default for this setting", resolved by `resolve()` and written resolved to
    the run's config.json. Invalid values raise `OptionError` naming the option.
    """

    model: ResNetConfig = dataclasses.field(
        default_factory=default_model,
        metadata={
            "help": "the architecture (a ResNetConfig; a name: that architecture, CIFAR stem)",
            "cli": False,
        },
    )
    # data
    dataset: str = _opt(
        "fashion_mnist",
        "a tensorflow-datasets name (default fashion_mnist) or a folder of class folders "
        "(PATH/<class>/* or PATH/train/<class>/* with optional val/ and test/; docs/DATA.md)",
    )
    image_size: int | None = _opt(
        None,
        "folders and streamed TFDS datasets: side of the square training crops (default 224); "
        "datasets loaded into memory keep their size",
    )
    cache: str | None = _opt(
        None,
        "folders: a folder for a one-time preprocessed cache of the images (uint8, decoded "
        "once; built on first use, checked against the folder after): training then only "
        "gathers rows, and the random-resized crop runs on the accelerator inside the model "
        "(docs/DATA.md). For images trained over 64 px",
    )
    source_dir: str | None = _opt(
        None,
        "folder of the IDX files of fashion_mnist/mnist "
        "(default: $KERAS_RESNET_DATA_DIR, /usr/share/datasets/<name>)",
    )
    data_dir: str | None = _opt(
        None, "TFDS data folder, cache of prepared datasets (default ~/tensorflow_datasets)"
    )
    loader: str = _opt(
        "auto", "auto: TFDS when TensorFlow is installed, else read the IDX files", choices=LOADERS
    )
    train_size: int | None = _opt(None, "random subset of the train split")
    test_size: int | None = _opt(None, "random subset of the test split")
    val_size: float | int | None = _opt(
        None,
        "held out of the training split for the best checkpoint: a count or a fraction in "
        "(0, 1) (default 5000; 0.1 for a folder without val/)",
    )
    augment: bool = _opt(
        True,
        "random crop with padding, flip, erasing (default on); folders over 64 px: the "
        "pipeline's random-resized crop and flip instead",
    )
    crop_padding: int = _opt(4, "default 4")
    flip: bool | None = _opt(None, "horizontal flips (default on, off for mnist)")
    erasing: float = _opt(0.5, "random-erasing probability (0.5)")
    # fine-tuning
    weights: str | None = _opt(
        None,
        "start from these weights: a torchvision/timm state dict (.pth, .pt, .safetensors), a "
        "Keras .weights.h5 or a run's model.keras (a classifier of another size is replaced by a "
        "new one)",
    )
    freeze_stages: int | None = _opt(
        None, "freeze the stem and the first K stages, batch norm in inference mode (0: stem)"
    )
    head_epochs: int = _opt(
        0, "epochs training the classifier alone before the rest is unfrozen (default 0)"
    )
    # optimization
    epochs: int = _opt(100, "default 100")
    batch_size: int = _opt(256, "global batch (default 256)")
    optimizer: str = _opt("sgd", "sgd: Nesterov momentum", choices=OPTIMIZERS)
    learning_rate: float | None = _opt(
        None, "peak rate (default 0.1 per 128 images for sgd, 2e-3 for adamw)"
    )
    momentum: float = _opt(0.9, "SGD momentum (default 0.9)")
    weight_decay: float | None = _opt(
        None, "decoupled, not on BN/bias (default 5e-3 sgd = L2 5e-4; 0.05 adamw)"
    )
    warmup_epochs: float = _opt(2.0, "linear warmup (default 2)")
    label_smoothing: float = _opt(0.1, "default 0.1")
    ema: float = _opt(
        0.0,
        "decay of an exponential moving average of the weights, evaluated and saved instead "
        "of the raw weights (0: off; e.g. 0.999)",
    )
    mixup: float = _opt(
        0.0, "mixup Beta alpha, in-memory data (0: off; e.g. 0.8); with cutmix, one per batch"
    )
    cutmix: float = _opt(0.0, "CutMix Beta alpha in [0, 1], in-memory data (0: off; e.g. 1.0)")
    # execution
    precision: str = _opt("float32", "dtype policy (default float32)", choices=PRECISIONS)
    xla: str = _opt("auto", "jit_compile (default auto)", choices=XLA_MODES)
    steps_per_execution: int = _opt(1, "training steps per compiled call (default 1)")
    distribute: str = _opt(
        "auto", "auto: data parallel over every visible GPU", choices=DISTRIBUTE_MODES
    )
    seed: int = _opt(0, "seed of the weights, the split, the shuffling (default 0)")
    # output
    output_dir: str | None = _opt(None, "run folder (default saved_models/<run-name>)")
    run_name: str | None = _opt(None, "default <model>_<dataset>")
    tensorboard: bool = _opt(True, "TensorBoard logs (default on when installed)")
    checkpoint: bool = _opt(
        True, "keep checkpoints/best.keras, the best monitored accuracy (default on)"
    )
    backup: bool = _opt(True, "back up every epoch so that a rerun resumes (default on)")
    restart: bool = _opt(
        False,
        "train from epoch 0 again, even where the run folder holds an unfinished or finished "
        "run (its files are replaced once the new run starts training); never written as true "
        "to config.json",
    )
    track_test: bool = _opt(
        True, "evaluate the test split after every epoch (curves, time to accuracy)"
    )
    verbose: int = _opt(1, "1: progress bar (default), 2: one line per epoch", choices=(0, 1, 2))
    auto_stem: bool = _opt(
        True,
        "folders: the cifar stem up to 64 px, the imagenet stem above (the command line sets "
        "False when --stem is typed)",
        cli=False,
    )

    def __post_init__(self):
        if isinstance(self.model, str):  # TrainConfig(model="resnet50"): the name, CIFAR stem
            self.model = ResNetConfig.named(self.model, stem=DEFAULT_STEM)
        # A flag's number arrives as a float: 5000.0 is the count 5000 (0.0: none).
        if isinstance(self.val_size, float) and self.val_size.is_integer():
            self.val_size = int(self.val_size)
        self.validate()

    @property
    def is_folder(self) -> bool:
        """Whether `dataset` names a folder rather than a dataset."""
        return looks_like_path(self.dataset)

    # ---- construction ---------------------------------------------------------------------
    @classmethod
    def create(cls, *, base: TrainConfig | None = None, model=None, **options) -> TrainConfig:
        """A config from flat options, as one writes them by hand: model options (`width`,
        `block`, ... see `MODEL_OPTIONS`) and training options side by side.

        Args:
            base: the config the options apply to (default `TrainConfig()`).
            model: an architecture name (its depth, block, groups and width per group replace
                the base's; width, stem and the other options stay), a `ResNetConfig`, or a
                mapping of `ResNetConfig` fields that update the base's model.
            **options: training fields and `ResNetConfig` fields; a None model option means
                "not given".

        Example:
            >>> TrainConfig.create(model="resnet50", width=0.5, epochs=10)
        """
        base = base if base is not None else cls()
        fields = {f.name for f in dataclasses.fields(cls)} - {"model"}
        known = fields | {f.name for f in dataclasses.fields(ResNetConfig)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise OptionError(unknown[0], f"unknown training option(s) {unknown}")
        model_options = {k: options.pop(k) for k in list(options) if k not in fields}
        new_model = merge_model(base.model, model, **model_options)
        return dataclasses.replace(base, model=new_model, **options)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types, the model as `ResNetConfig.to_dict()`; `from_dict` reverses it."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        values["model"] = self.model.to_dict()
        return json.loads(json.dumps(values))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], *, base: TrainConfig | None = None):
        """The config `to_dict` wrote, or any part of it over `base`. Also reads the flat form
        of config.json written before the model was a `ResNetConfig` (`"model": "resnet18"`
        beside `width`, `block`, `stem`, ...), so that older run folders still resume."""
        if not isinstance(values, Mapping):
            raise OptionError(
                "config", f"config must be a JSON object, received {type(values).__name__}"
            )
        values = dict(values)
        return cls.create(base=base, model=values.pop("model", None), **values)

    # ---- defaults and checks --------------------------------------------------------------
    def resolve(self) -> TrainConfig:
        """A copy with every `None` default filled in."""
        c = dataclasses.replace(self)
        if c.learning_rate is None:
            c.learning_rate = 0.1 * c.batch_size / 128 if c.optimizer == "sgd" else 2e-3
        if c.weight_decay is None:
            # Keras applies weight decay decoupled: w -= lr * wd * w each step. Under SGD with
            # momentum m, PyTorch-style L2 of 5e-4 acts as 5e-4 / (1 - m) = 5e-3 of this.
            c.weight_decay = 5e-3 if c.optimizer == "sgd" else 0.05
        if c.flip is None:
            c.flip = c.dataset not in ("mnist", "emnist", "kmnist")
        if c.val_size is None:
            c.val_size = DEFAULT_FOLDER_VAL_FRACTION if c.is_folder else DEFAULT_VAL_SIZE
        if c.image_size is None and c.is_folder:
            c.image_size = DEFAULT_FOLDER_IMAGE_SIZE
        if c.run_name is None:
            label = os.path.basename(os.path.normpath(c.dataset)) if c.is_folder else c.dataset
            c.run_name = f"{c.model.name}_{label}"
        if c.output_dir is None:
            c.output_dir = os.path.join("saved_models", c.run_name)
        return c

    def validate(self) -> None:
        """Raises OptionError naming the first bad option and the value received."""
        if not isinstance(self.model, ResNetConfig):
            raise OptionError(
                "model",
                f"model must be a ResNetConfig or an architecture name, received "
                f"model={self.model!r}",
            )
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_choice("precision", self.precision, PRECISIONS)
        check_choice("xla", self.xla, XLA_MODES)
        check_choice("distribute", self.distribute, DISTRIBUTE_MODES)
        check_choice("loader", self.loader, LOADERS)
        check_choice("verbose", self.verbose, (0, 1, 2))
        for name in ("epochs", "batch_size", "steps_per_execution"):
            check_int(name, getattr(self, name), 1)
        for name in ("train_size", "test_size"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise OptionError(
                    name,
                    f"{name} must be an integer >= 1 (or None for the whole split), "
                    f"received {name}={value!r}",
                )
        if self.val_size is not None and not (
            isinstance(self.val_size, float) and 0 < self.val_size < 1
        ):
            check_int("val_size", self.val_size, 0)
        if self.image_size is not None:
            check_int("image_size", self.image_size, 8)
            # Streamed TFDS datasets take it too: that is known once the dataset is opened.
            if not self.is_folder and self.dataset.lower() in IDX_DATASETS:
                raise OptionError(
                    "image_size",
                    f"image_size is for folders (dataset {self.dataset!r} keeps its size), "
                    f"received image_size={self.image_size}",
                )
        if self.cache is not None:
            if not self.is_folder:
                raise OptionError(
                    "cache",
                    f"cache is for folders (dataset {self.dataset!r} is a named dataset), "
                    f"received cache={self.cache!r}",
                )
            if self.image_size is not None and self.image_size <= SMALL_IMAGE_MAX:
                raise OptionError(
                    "cache",
                    f"cache is for the ImageNet recipe (image_size over {SMALL_IMAGE_MAX}); "
                    f"received cache={self.cache!r} with image_size={self.image_size}",
                )
            if self.head_epochs:
                raise OptionError(
                    "cache",
                    f"cache does not support a head-only warm-up yet (head_epochs="
                    f"{self.head_epochs}); received cache={self.cache!r}",
                )
        if self.freeze_stages is not None:
            check_int("freeze_stages", self.freeze_stages, 0)
        check_int("head_epochs", self.head_epochs, 0)
        check_int("crop_padding", self.crop_padding, 0)
        check_int("seed", self.seed, 0)
        if self.learning_rate is not None:
            check_number("learning_rate", self.learning_rate, 0, low_open=True)
        if self.weight_decay is not None:
            check_number("weight_decay", self.weight_decay, 0)
        check_number("momentum", self.momentum, 0, 1, high_open=True)
        check_number("warmup_epochs", self.warmup_epochs, 0)
        check_number("label_smoothing", self.label_smoothing, 0, 1, high_open=True)
        check_number("ema", self.ema, 0, 1, high_open=True)
        check_number("mixup", self.mixup, 0)
        # keras.layers.CutMix takes alphas in [0, 1] only.
        check_number("cutmix", self.cutmix, 0, 1)
        check_number("erasing", self.erasing, 0, 1)


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


def preset(name: str) -> dict[str, Any]:
    """Option sets by name, in `TrainConfig.create` form: 'default' (the accuracy recipe) and
    'quick' (a CPU quick start)."""
    if name == "default":
        return {}
    if name == "quick":
        # Measured on a shared 2-core CPU: see docs/TRAINING.md.
        return dict(
            width=0.25,
            epochs=3,
            batch_size=128,
            augment=False,
            label_smoothing=0.0,
            warmup_epochs=0.5,
            val_size=2000,
            track_test=False,
        )
    raise OptionError("preset", f"preset must be one of {PRESETS}, received preset={name!r}")
