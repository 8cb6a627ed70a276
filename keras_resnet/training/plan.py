"""`plan_run(config) -> RunPlan`: a run's options resolved once, checked once, with its data.

The options as typed (`TrainConfig`, where None means "the default") become a frozen `RunPlan`:
every default filled in (`TrainConfig.resolve`, called here and nowhere else), the data opened
(`open_data`, which the search calls too, so that every data flag means the same to both), the
architecture completed from the data (classes, input shape, normalization, stem), the starting
weights found (a registered name is downloaded or taken from the cache), the preprocessing
record that evaluation, export and predict share (`keras_resnet.preprocessing`), and every
check that needs the data done before anything is written. Training, the recipe, the inputs,
the callbacks and the search's trials read the plan; none of them resolves an option again.

    >>> plan = plan_run(TrainConfig.create(width=0.25, epochs=1, train_size=512))  # doctest: +SKIP
    >>> plan.model.num_classes, plan.preprocessing.crop_mode, plan.steps_per_epoch  # doctest: +SKIP
    (10, 'squash', 1)
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from keras_resnet import data as data_lib
from keras_resnet import preprocessing as prep
from keras_resnet.config import IMAGENET_MEAN, IMAGENET_STD, ResNetConfig
from keras_resnet.data.streamed import StreamedSource
from keras_resnet.preprocessing import Preprocessing
from keras_resnet.training import distributed, inputs
from keras_resnet.training.config import SMALL_IMAGE_MAX, TrainConfig
from keras_resnet.training.devices import process_count
from keras_resnet.training.outputs import (
    check_output_dir,
    check_same_run,
    from_data_fields,
    remove_unstarted_folder,
)
from keras_resnet.training.run_folder import RunFolder
from keras_resnet.utils import OptionError


@dataclasses.dataclass(frozen=True)
class RunPlan:
    """A run, resolved: what every step of training reads.

    Attributes:
        config: the options with every default filled in and `config.model` the architecture
            as built (completed from the data); what config.json records.
        data: the dataset: arrays in memory (`keras_resnet.data.Dataset`) or a streamed source
            (a folder's `inputs.FolderData`, a large TFDS dataset's `TfdsStream`).
        preprocessing: how an image file becomes the model's input, for evaluation, export and
            predict alike.
        output_dir: the run folder (created, writable).
        weights: the starting weights' file (a registered name resolved to its cached file),
            or None to start from random weights.
        counts: images per part as the run uses them: 'train', 'val' (0: none), 'test'.
        steps_per_epoch: training batches an epoch (the last partial batch is dropped).
        num_devices: devices the batch is split over.
        new_folder: this plan made the run folder (a run that fails before it saves an epoch
            removes it again: `outputs.remove_unstarted_folder`).
    """

    config: TrainConfig
    data: Any
    preprocessing: Preprocessing
    output_dir: Path
    weights: Path | None
    counts: dict[str, int]
    steps_per_epoch: int
    num_devices: int
    new_folder: bool = False

    @property
    def model(self) -> ResNetConfig:
        return self.config.model

    @property
    def folder(self) -> RunFolder:
        """The run folder's layout (`output_dir`)."""
        return RunFolder(self.output_dir)

    @property
    def streamed(self) -> bool:
        """The data is streamed batch by batch (a folder, a TFDS stream), not held as arrays."""
        return isinstance(self.data, StreamedSource)

    @property
    def pipeline_augments(self) -> bool:
        """The stream draws the training crops (ImageNet recipe) and the model has no
        augmentation layers; else the model's layers augment whole images."""
        return self.streamed and not self.data.small_images

    @property
    def evaluated_on(self) -> str:
        """'test', or 'val' for a folder without test/ (its figures are validation's)."""
        return getattr(self.data, "test_split", "test")

    def record(self) -> dict[str, Any]:
        """config.json's content: the options and the preprocessing record."""
        return {
            **dataclasses.replace(self.config, restart=False).to_dict(),
            "preprocessing": self.preprocessing.to_dict(),
        }

    def for_trial(self, config: TrainConfig, data=None) -> RunPlan:
        """This plan with a search trial's options (architecture and recipe over the same
        data, or over `data`, the trial's part of it); resolves nothing again."""
        data = self.data if data is None else data
        counts = dict(self.counts, train=inputs.train_count(data))
        model = complete_model(config, data, self.preprocessing)
        return dataclasses.replace(
            self,
            config=dataclasses.replace(config, model=model),
            data=data,
            counts=counts,
            steps_per_epoch=max(1, counts["train"] // config.batch_size),
        )


@dataclasses.dataclass(frozen=True)
class FinishedRun:
    """A run folder that holds a finished run of the same options: nothing to do.

    Attributes:
        config: the options, resolved.
        metrics: its metrics.json.
    """

    config: TrainConfig
    metrics: dict[str, Any]

    def message(self) -> str:
        metrics = self.metrics
        accuracy = metrics.get("accuracy", metrics.get("test_accuracy"))
        accuracy = f"{100 * accuracy:.2f}%" if isinstance(accuracy, (int, float)) else "unknown"
        label = metrics.get("evaluated_on_label", "test accuracy")
        return (
            f"run in {self.config.output_dir} already finished: {label} {accuracy}, "
            f"{metrics.get('epochs')} epochs; pass --restart to train it again"
        )


def plan_run(
    config: TrainConfig, dataset: data_lib.Dataset | None = None, *, folder: bool = True
) -> RunPlan | FinishedRun:
    """Resolves and checks a run: the one place a `TrainConfig` is resolved.

    Args:
        config: the options as given.
        dataset: arrays to train on instead of loading `config.dataset` (tests, custom data).
        folder: False plans without making or reading a run folder (a search's base, a check).

    Returns:
        The `RunPlan`; or, when the run folder holds a finished run of the same options (and
        `config.restart` is off), a `FinishedRun`, after reading only its files.

    Raises:
        OptionError: a bad option or one the data refuses (`field` names it).
        DataNotFoundError: no local copy of the dataset.
    """
    options = config.resolve()
    # Several processes (Keras' KERAS_DISTRIBUTION_* variables): join them before JAX starts.
    distributed.initialize()
    if not folder:
        weights, weights_record = resolve_weights(options)
        data = open_data(options, dataset)
        return make_plan(
            options, data, options.output_dir, weights=weights, weights_record=weights_record
        )
    if not options.restart:
        finished = _finished_run(options)
        if finished is not None:
            return finished
    # Process 0 alone writes the run folder (over several processes).
    writer = distributed.is_writer()
    new_folder = writer and not Path(options.output_dir).exists()
    out = check_output_dir(options.output_dir) if writer else Path(options.output_dir)
    try:
        weights, weights_record = resolve_weights(options)
        data = open_data(options, dataset, log_dir=out if writer else None)
        plan = make_plan(options, data, out, weights=weights, weights_record=weights_record)
    except BaseException:
        if new_folder:  # a refused start leaves no folder behind
            remove_unstarted_folder(out)
        raise
    return dataclasses.replace(plan, new_folder=new_folder)


def make_plan(
    options: TrainConfig,
    data,
    output_dir: str | os.PathLike,
    *,
    weights: Path | None = None,
    weights_record: Preprocessing | None = None,
) -> RunPlan:
    """The plan of resolved `options` over opened `data` (`plan_run`'s last step; the search
    calls it for its own data)."""
    record = preprocessing_record(options, data, weights_record)
    if isinstance(data, inputs.FolderData):
        data = dataclasses.replace(
            data, folder=dataclasses.replace(data.folder, preprocessing=record)
        )
    elif hasattr(data, "preprocessing") and isinstance(data, StreamedSource):
        data = dataclasses.replace(data, preprocessing=record)
    if isinstance(data, StreamedSource):
        data.check_options(options)
    if isinstance(data, StreamedSource) and not isinstance(data, inputs.FolderData):
        if process_count() > 1:
            # Folders and arrays give each process its share of every batch; a TFDS stream
            # would feed every process the whole stream. Refused rather than trained wrongly.
            raise OptionError(
                "dataset",
                f"{data.kind} are not trained over several processes "
                f"(KERAS_DISTRIBUTION_NUM_PROCESSES={process_count()}): train on one host, "
                f"which uses all of its GPUs; received dataset={options.dataset!r}",
            )
    counts = inputs.split_counts(options, data)
    if options.batch_size > counts["train"]:
        raise OptionError(
            "batch_size",
            f"batch_size must be at most the {counts['train']} training images, "
            f"received batch_size={options.batch_size}",
        )
    _, num_devices = distributed.distribution_scope(options.distribute)
    if options.batch_size % num_devices:
        raise OptionError(
            "batch_size",
            f"batch_size must be a multiple of the {num_devices} devices, "
            f"received batch_size={options.batch_size}",
        )
    if getattr(data, "test_split", "test") != "test" and options.track_test:
        # No test split: the validation split is evaluated every epoch already, and a
        # per-epoch "test" column would be the same figure under a false name.
        options = dataclasses.replace(options, track_test=False)
    model = complete_model(options, data, record)
    return RunPlan(
        config=dataclasses.replace(options, model=model),
        data=data,
        preprocessing=record,
        output_dir=Path(output_dir),
        weights=weights,
        counts=counts,
        steps_per_epoch=counts["train"] // options.batch_size,
        num_devices=num_devices,
    )


def open_data(options: TrainConfig, dataset: data_lib.Dataset | None = None, *, log_dir=None):
    """The run's data, as training and the search both open it: `dataset` (arrays given),
    else `options.dataset` loaded into memory, opened as a folder (streamed; `log_dir` keeps
    its skipped-files log) or as a streamed TFDS dataset; reduced to `train_size` and
    `test_size`. `options` must be resolved."""
    return inputs.load_data(options, dataset, log_dir=log_dir)


def resolve_weights(options: TrainConfig) -> tuple[Path | None, Preprocessing | None]:
    """The starting weights' file and, for registered weights, the preprocessing they were
    trained with. A registered name ('imagenet', or one of `keras_resnet.list_weights`) is
    downloaded once into the Keras cache (`keras_resnet.pretrained`)."""
    if not options.weights:
        return None, None
    from keras_resnet import pretrained

    try:
        path, entry = pretrained.resolve_weights(options.weights, options.model)
    except ValueError as error:
        raise OptionError("weights", str(error)) from None
    if entry is None:
        return Path(path), _file_record(Path(path))
    return Path(path), Preprocessing.from_data_config(entry.data_config)


def _file_record(path: Path) -> Preprocessing | None:
    """The record a weights file was trained with, when it says: a run's `.keras` (its run
    folder's config.json). torchvision and timm state dicts carry none: ImageNet's."""
    if path.suffix.lower() == ".keras":
        try:
            return prep.data_config(path)
        except ValueError:
            return None
    return None


def preprocessing_record(
    options: TrainConfig, data, weights_record: Preprocessing | None = None
) -> Preprocessing:
    """The run's preprocessing record: the geometry of its data (whole images for arrays in
    memory and images up to 64 px; the ImageNet recipe's centre crop above), and the statistics
    and evaluation crop that `options.normalization` names."""
    height, width, channels = (int(d) for d in data.image_shape)
    mean, std = _statistics(options, data, weights_record, channels)
    interpolation, crop_pct = "bilinear", None
    if options.normalization == "weights" and weights_record is not None:
        interpolation = weights_record.interpolation
        if weights_record.crop_mode == "center":
            crop_pct = weights_record.crop_pct
    if not isinstance(data, StreamedSource):  # arrays: the whole image, as they train
        return Preprocessing((height, width), channels, "squash", 1.0, interpolation, mean, std)
    return Preprocessing.for_images(
        (height, width),
        channels,
        mean=mean,
        std=std,
        crop_pct=crop_pct,
        interpolation=interpolation,
    )


def _statistics(options, data, weights_record, channels: int):
    if options.normalization == "imagenet" or (
        options.normalization == "weights" and weights_record is None
    ):
        # torchvision's and timm's state dicts are trained on ImageNet with its statistics.
        mean, std = IMAGENET_MEAN, IMAGENET_STD
        return _to_channels(mean, channels), _to_channels(std, channels)
    if options.normalization == "weights":
        if weights_record.mean is None:
            raise OptionError(
                "normalization",
                f"the weights {options.weights!r} record no input statistics; pass "
                "--normalization data or imagenet, received normalization='weights'",
            )
        return _to_channels(weights_record.mean, channels), _to_channels(
            weights_record.std, channels
        )
    if isinstance(data, StreamedSource):
        return tuple(data.mean), tuple(data.std)
    mean, std = data_lib.channel_stats(data.x_train)
    return tuple(mean), tuple(std)


def _to_channels(values, channels: int) -> tuple[float, ...]:
    values = tuple(float(v) for v in values)
    if len(values) == channels:
        return values
    if channels == 1:  # RGB statistics for a grayscale model: their mean
        return (sum(values) / len(values),)
    if len(values) == 1:
        return values * channels
    raise OptionError(
        "normalization",
        f"statistics of {len(values)} channels do not fit a model of {channels} channels",
    )


def complete_model(options: TrainConfig, data, record: Preprocessing) -> ResNetConfig:
    """`options.model` completed from the data: classes, image shape (NHWC), the record's
    statistics as the model's input normalization; for a streamed dataset, unless a stem was
    chosen (`options.auto_stem`), the stem follows the image size (cifar up to 64 px)."""
    changes = {}
    if isinstance(data, StreamedSource) and options.auto_stem:
        changes["stem"] = "cifar" if data.image_shape[0] <= SMALL_IMAGE_MAX else "imagenet"
    return options.model.replace(
        num_classes=data.num_classes,
        input_shape=tuple(int(d) for d in data.image_shape),
        normalization=(record.mean, record.std),
        data_format="channels_last",  # the arrays are NHWC whatever Keras' global setting
        **changes,
    )


def _finished_run(options: TrainConfig) -> FinishedRun | None:
    """The finished run in `options.output_dir` once its options are checked against its
    config.json (OptionError naming a changed option); None when the run is not finished.
    Reads only: the data is not loaded, so the model's fields it decides are the run's own
    (the options they follow from are compared)."""
    folder = RunFolder(options.output_dir)
    metrics = folder.finished()
    if metrics is None:
        return None
    compared = options
    try:
        old = TrainConfig.from_dict(folder.read_config()).model
        derived = {name: getattr(old, name) for name in from_data_fields()}
        if options.is_folder and options.auto_stem:
            derived["stem"] = old.stem
        compared = dataclasses.replace(options, model=options.model.replace(**derived))
    except (OSError, ValueError, TypeError):
        pass  # check_same_run says that config.json cannot be read
    check_same_run(folder.config, compared.to_dict())
    return FinishedRun(options, metrics)


__all__ = [
    "FinishedRun",
    "RunPlan",
    "complete_model",
    "make_plan",
    "open_data",
    "plan_run",
    "preprocessing_record",
    "resolve_weights",
]
