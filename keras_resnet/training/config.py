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
from keras_resnet.training.fields import (  # noqa: F401 (also imported from here)
    ARCHITECTURE_FIELDS,
    GROUPS,
    MODEL_OPTIONS,
    check_declared,
    declared_names,
    merge_model,
)
from keras_resnet.training.fields import option as _opt
from keras_resnet.utils import OptionError, check_int

OPTIMIZERS = ("sgd", "adamw")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
XLA_MODES = ("auto", "on", "off")
DISTRIBUTE_MODES = ("auto", "off")
PRESETS = ("default", "quick")
NORMALIZATIONS = ("data", "weights", "imagenet")
# What a run writes into config.json beside its options (not options themselves).
RECORDS = ("preprocessing",)

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


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; training stopped and the best checkpoint was kept."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Every option of `keras-resnet train` (its flags are these names with dashes; the model's
    flags are `MODEL_OPTIONS` of `ResNetConfig`, plus `--model NAME`).

    `None` means "the default for this setting": `keras_resnet.training.plan_run` resolves
    every default once, with the data, and writes the result to the run's config.json. Invalid
    values raise `OptionError` naming the option. Frozen: change a copy with
    `dataclasses.replace` or `TrainConfig.create(base=...)`.

    Each field's metadata declares its roles (see `field_names`): its command-line group,
    whether it may change when a run resumes, how a stored search treats it, and its bounds.
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
        "data",
    )
    image_size: int | None = _opt(
        None,
        "folders and streamed TFDS datasets: side of the square training crops (default 224); "
        "datasets loaded into memory keep their size",
        "data",
        bounds=(8, None, True),
    )
    cache: str | None = _opt(
        None,
        "folders: a folder for a one-time preprocessed cache of the images (uint8, decoded "
        "once; built on first use, checked against the folder after): training then only "
        "gathers rows, and the random-resized crop runs on the accelerator inside the model "
        "(docs/DATA.md). For images trained over 64 px",
        "data",
        search="off_when_zero",
    )
    source_dir: str | None = _opt(
        None,
        "folder of the IDX files of fashion_mnist/mnist "
        "(default: $KERAS_RESNET_DATA_DIR, /usr/share/datasets/<name>)",
        "data",
        resume="safe",
        search="unchecked",
    )
    data_dir: str | None = _opt(
        None,
        "TFDS data folder, cache of prepared datasets (default ~/tensorflow_datasets)",
        "data",
        resume="safe",
        search="unchecked",
    )
    loader: str = _opt(
        "auto",
        "auto: TFDS when TensorFlow is installed, else read the IDX files",
        "data",
        choices=LOADERS,
        resume="safe",
        search="unchecked",
    )
    train_size: int | None = _opt(
        None, "random subset of the train split", "data", bounds=(1, None, True)
    )
    test_size: int | None = _opt(
        None, "random subset of the test split", "data", bounds=(1, None, True)
    )
    val_size: float | int | None = _opt(
        None,
        "held out of the training split for the best checkpoint: a count or a fraction in "
        "(0, 1) (default 5000; 0.1 for a folder without val/)",
        "data",
    )
    augment: bool = _opt(
        True,
        "random crop with padding, flip, erasing (default on); folders over 64 px: the "
        "pipeline's random-resized crop and flip instead",
        "data",
    )
    crop_padding: int = _opt(4, "default 4", "data", bounds=(0, None, True))
    flip: bool | None = _opt(None, "horizontal flips (default on, off for mnist)", "data")
    erasing: float = _opt(0.5, "random-erasing probability (0.5)", "data", bounds=(0, 1, False))
    mixup: float = _opt(
        0.0,
        "mixup Beta alpha, in-memory data (0: off; e.g. 0.8); with cutmix, one per batch",
        "data",
        bounds=(0, None, False),
        search="off_when_zero",
    )
    # keras.layers.CutMix takes alphas in [0, 1] only.
    cutmix: float = _opt(
        0.0,
        "CutMix Beta alpha in [0, 1], in-memory data (0: off; e.g. 1.0)",
        "data",
        bounds=(0, 1, False),
        search="off_when_zero",
    )
    normalization: str | None = _opt(
        None,
        "the input statistics (mean, std) and evaluation crop the model takes: 'data' (the "
        "training images'), 'weights' (those the --weights were trained with), 'imagenet' "
        "(torchvision's); default weights with --weights, else data",
        "data",
        choices=NORMALIZATIONS,
        search="off_when_zero",
    )
    # fine-tuning
    weights: str | None = _opt(
        None,
        "start from these weights: a registered name ('imagenet', see keras_resnet.list_weights), "
        "a torchvision/timm state dict (.pth, .pt, .safetensors), a Keras .weights.h5 or a "
        "run's model.keras (a classifier of another size is replaced by a new one)",
        "fine-tuning",
    )
    freeze_stages: int | None = _opt(
        None,
        "freeze the stem and the first K stages, batch norm in inference mode (0: stem)",
        "fine-tuning",
        bounds=(0, None, True),
    )
    head_epochs: int = _opt(
        0,
        "epochs training the classifier alone before the rest is unfrozen (default 0)",
        "fine-tuning",
        bounds=(0, None, True),
    )
    # optimization
    epochs: int = _opt(
        100, "default 100", "optimization", bounds=(1, None, True), search="unchecked"
    )
    batch_size: int = _opt(
        256, "global batch (default 256)", "optimization", bounds=(1, None, True)
    )
    optimizer: str = _opt("sgd", "sgd: Nesterov momentum", "optimization", choices=OPTIMIZERS)
    learning_rate: float | None = _opt(
        None,
        "peak rate (default 0.1 per 128 images for sgd, 2e-3 for adamw)",
        "optimization",
        bounds=(0, None, False, "open"),
    )
    momentum: float = _opt(
        0.9, "SGD momentum (default 0.9)", "optimization", bounds=(0, 1, False, "high_open")
    )
    weight_decay: float | None = _opt(
        None,
        "decoupled, not on BN/bias (default 5e-3 sgd = L2 5e-4; 0.05 adamw)",
        "optimization",
        bounds=(0, None, False),
    )
    warmup_epochs: float = _opt(
        2.0, "linear warmup (default 2)", "optimization", bounds=(0, None, False)
    )
    label_smoothing: float = _opt(
        0.1, "default 0.1", "optimization", bounds=(0, 1, False, "high_open")
    )
    ema: float = _opt(
        0.0,
        "decay of an exponential moving average of the weights, evaluated and saved instead "
        "of the raw weights (0: off; e.g. 0.999)",
        "optimization",
        bounds=(0, 1, False, "high_open"),
        search="off_when_zero",
    )
    # execution
    precision: str = _opt(
        "float32", "dtype policy (default float32)", "execution and output", choices=PRECISIONS
    )
    xla: str = _opt("auto", "jit_compile (default auto)", "execution and output", choices=XLA_MODES)
    steps_per_execution: int = _opt(
        1,
        "training steps per compiled call (default 1)",
        "execution and output",
        bounds=(1, None, True),
        search="unchecked",
    )
    distribute: str = _opt(
        "auto",
        "auto: data parallel over every visible GPU",
        "execution and output",
        choices=DISTRIBUTE_MODES,
    )
    compilation_cache: str = _opt(
        "auto",
        "a persistent cache of compiled programs, so that a new process skips most of the first "
        "epoch's compilation (JAX; TensorFlow's XLA): 'auto' ($KERAS_RESNET_CACHE_DIR/"
        "compilation, else ~/.cache/keras_resnet/compilation), a folder, or 'off'",
        "execution and output",
        resume="safe",
        search="unchecked",
    )
    seed: int = _opt(
        0,
        "seed of the weights, the split, the shuffling (default 0)",
        "execution and output",
        bounds=(0, None, True),
    )
    # output
    output_dir: str | None = _opt(
        None,
        "run folder (default saved_models/<run-name>)",
        "execution and output",
        resume="safe",
        search="unchecked",
    )
    run_name: str | None = _opt(
        None, "default <model>_<dataset>", "execution and output", resume="safe", search="unchecked"
    )
    tensorboard: bool = _opt(
        True, "TensorBoard logs (default on when installed)", "execution and output", resume="safe"
    )
    checkpoint: bool = _opt(
        True,
        "keep checkpoints/best.keras, the best monitored accuracy (default on)",
        "execution and output",
    )
    backup: bool = _opt(
        True, "back up every epoch so that a rerun resumes (default on)", "execution and output"
    )
    restart: bool = _opt(
        False,
        "train from epoch 0 again, even where the run folder holds an unfinished or finished "
        "run (its files are replaced once the new run starts training); never written as true "
        "to config.json",
        "execution and output",
        resume="safe",
        search="unchecked",
    )
    track_test: bool = _opt(
        True,
        "evaluate the test split after every epoch (curves, time to accuracy)",
        "execution and output",
    )
    verbose: int = _opt(
        1,
        "1: progress bar (default), 2: one line per epoch",
        "execution and output",
        choices=(0, 1, 2),
        resume="safe",
        search="unchecked",
    )
    auto_stem: bool = _opt(
        True,
        "folders: the cifar stem up to 64 px, the imagenet stem above (the command line sets "
        "False when --stem is typed)",
        cli=False,
    )

    def __post_init__(self):
        if isinstance(self.model, str):  # TrainConfig(model="resnet50"): the name, CIFAR stem
            object.__setattr__(self, "model", ResNetConfig.named(self.model, stem=DEFAULT_STEM))
        # A flag's number arrives as a float: 5000.0 is the count 5000 (0.0: none).
        if isinstance(self.val_size, float) and self.val_size.is_integer():
            object.__setattr__(self, "val_size", int(self.val_size))
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
        beside `width`, `block`, `stem`, ...), so that older run folders still resume. A run's
        `preprocessing` record (written beside the options) is not an option and is skipped."""
        if not isinstance(values, Mapping):
            raise OptionError(
                "config", f"config must be a JSON object, received {type(values).__name__}"
            )
        values = {k: v for k, v in values.items() if k not in RECORDS}
        return cls.create(base=base, model=values.pop("model", None), **values)

    # ---- defaults and checks --------------------------------------------------------------
    def resolve(self) -> TrainConfig:
        """A copy with every static `None` default filled in. Called once, by
        `keras_resnet.training.plan_run`, which also completes what the data decides."""
        changes: dict[str, Any] = {}
        if self.learning_rate is None:
            sgd = self.optimizer == "sgd"
            changes["learning_rate"] = 0.1 * self.batch_size / 128 if sgd else 2e-3
        if self.weight_decay is None:
            # Keras applies weight decay decoupled: w -= lr * wd * w each step. Under SGD with
            # momentum m, PyTorch-style L2 of 5e-4 acts as 5e-4 / (1 - m) = 5e-3 of this.
            changes["weight_decay"] = 5e-3 if self.optimizer == "sgd" else 0.05
        if self.flip is None:
            changes["flip"] = self.dataset not in ("mnist", "emnist", "kmnist")
        if self.val_size is None:
            changes["val_size"] = (
                DEFAULT_FOLDER_VAL_FRACTION if self.is_folder else DEFAULT_VAL_SIZE
            )
        if self.image_size is None and self.is_folder:
            changes["image_size"] = DEFAULT_FOLDER_IMAGE_SIZE
        if self.normalization is None:
            changes["normalization"] = "weights" if self.weights else "data"
        run_name = self.run_name
        if run_name is None:
            label = (
                os.path.basename(os.path.normpath(self.dataset)) if self.is_folder else self.dataset
            )
            run_name = changes["run_name"] = f"{self.model.name}_{label}"
        if self.output_dir is None:
            changes["output_dir"] = os.path.join("saved_models", run_name)
        return dataclasses.replace(self, **changes)

    def validate(self) -> None:
        """Raises OptionError naming the first bad option and the value received: each field's
        declared choices and bounds, then the checks between fields."""
        if not isinstance(self.model, ResNetConfig):
            raise OptionError(
                "model",
                f"model must be a ResNetConfig or an architecture name, received "
                f"model={self.model!r}",
            )
        check_declared(self)
        if self.val_size is not None and not (
            isinstance(self.val_size, float) and 0 < self.val_size < 1
        ):
            check_int("val_size", self.val_size, 0)
        if self.image_size is not None and not self.is_folder:
            # Streamed TFDS datasets take it too: that is known once the dataset is opened.
            if self.dataset.lower() in IDX_DATASETS:
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
        if self.is_folder:
            for name in ("train_size", "test_size"):
                if getattr(self, name) is not None:
                    raise OptionError(
                        name,
                        f"{name} is for named datasets, not folders (dataset={self.dataset!r}), "
                        f"received {name}={getattr(self, name)}",
                    )
        if self.normalization == "weights" and not self.weights:
            raise OptionError(
                "normalization",
                "normalization='weights' takes the statistics of --weights, and no weights "
                "were given: received normalization='weights'",
            )


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


def field_names(role: str, value=True, cls=None) -> tuple[str, ...]:
    """The names of `TrainConfig` fields (or `cls`'s) whose metadata `role` equals `value`
    (True: any value), in declaration order. E.g. `field_names("resume", "safe")`."""
    return declared_names(TrainConfig if cls is None else cls, role, value)
