"""The suite of `python benchmarks/run.py`: our models on each training path, then the peers,
from one `SuiteOptions`.

`SuiteOptions` is the suite's whole input (the command line builds it; its fields' metadata are
the flags' help). Model specs `name:key=value,...` set `ResNetConfig` fields for one model.
"""

from __future__ import annotations

import dataclasses
import importlib
import tempfile
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from benchmarks import keras_paths, peers, variants
from benchmarks.report import format_table, inference_ratios, ratios
from benchmarks.timing import Result, device_info, peak_flops_for
from keras_resnet import data as data_lib
from keras_resnet.analysis import count_flops
from keras_resnet.config import ResNetConfig
from keras_resnet.models import build_model
from keras_resnet.utils import (
    OptionError,
    check_choice,
    check_int,
    check_number,
    dtype_policy,
    installed,
)

PATHS = ("compiled", "fit", "pipeline")
PEERS = ("keras-fit", "keras-compiled", "torch", "torch-compile")
DEFAULT_PEERS = ("keras-fit", "torch", "torch-compile")
PRECISIONS = ("mixed_bfloat16", "float32")
DATA = ("synthetic", "real", "both")
FOLDER_PREFIX = "folder:"
POSITIVE_INTS = (
    "batch_size",
    "image_size",
    "channels",
    "num_classes",
    "steps",
    "steps_per_execution",
    "devices",
    "pipeline_epochs",
)
# The image-folder pipeline of `--data folder:PATH`: module and function, looked up when asked.
FOLDER_SOURCE = ("keras_resnet.data.folders", "folder_dataset")


def _opt(default, text: str, **extra):
    """A field with its help text (and `cli`, `choices`, `metavar`) as metadata."""
    factory = {"default_factory": lambda: default} if isinstance(default, dict) else {}
    value = {} if factory else {"default": default}
    return dataclasses.field(**value, **factory, metadata={"help": text, **extra})


@dataclasses.dataclass(frozen=True)
class SuiteOptions:
    """Everything the suite measures and how. Invalid values raise `OptionError` naming the
    field. `paths`, `peers` and `variants` are comma-separated on the command line."""

    models: tuple[str, ...] = _opt(
        ("resnet50",),
        "keras_resnet model names, each optionally with builder options: "
        "resnet50:stride_in=1x1,width=0.5",
    )
    batch_size: int = _opt(256, "per device")
    image_size: int = _opt(224, "height = width of the input")
    channels: int = _opt(3, "image channels")
    num_classes: int = _opt(1000, "classifier outputs")
    precision: str = _opt("mixed_bfloat16", "Keras dtype policy", choices=PRECISIONS)
    steps: int = _opt(20, "timed steps")
    warmup: int = _opt(3, "untimed calls before timing")
    paths: tuple[str, ...] = _opt(
        ("compiled",), f"training paths for our models: {', '.join(PATHS)}", cli=False
    )
    steps_per_execution: int = _opt(1, "training steps per compiled program")
    variants: tuple[str, ...] = _opt(
        (), f"experimental layers in our models: {', '.join(variants.VARIANTS)}", cli=False
    )
    inference: bool = _opt(True, "measure inference throughput too (--no-inference: skip it)")
    peers: tuple[str, ...] = _opt(
        DEFAULT_PEERS, f"the peers ('none' for none): {', '.join(PEERS)}", cli=False
    )
    data: str = _opt(
        "synthetic",
        "synthetic; real (--dataset); both; or folder:PATH, an image folder measured as "
        "'both' (keras_resnet.data.folders.folder_dataset)",
        metavar="DATA",
    )
    dataset: str = _opt("fashion_mnist", "for --data real/both")
    real_limit: int | None = _opt(
        None, "use the first N training images (e.g. to resize fewer to 224 px)"
    )
    pipeline_epochs: int = _opt(3, "epochs of the 'pipeline' path (the first one compiles)")
    pipeline_no_augment: bool = _opt(
        False, "the 'pipeline' path without its augmentation layers (to cost them)"
    )
    devices: int = _opt(1, "data parallel over this many devices")
    sync_batch_norm: bool = _opt(
        False, "with --devices > 1: batch norm over the global batch (SPMD)"
    )
    interleave_rounds: int = _opt(
        0,
        "instead of the above: inference of each model and keras.applications.ResNet50 in "
        "alternation, this many rounds",
    )
    peak_tflops: float | None = _opt(None, "device peak for MFU (default: datasheet)")
    json: str | None = _opt(None, "write the results here (checked before anything runs)")
    profile: str | None = _opt(None, "JAX: trace a few compiled training steps into this folder")
    model_options: Mapping[str, Any] = _opt(
        {}, "ResNetConfig fields for every model (a spec's own options win)", cli=False
    )

    def __post_init__(self):
        for name in POSITIVE_INTS:
            check_int(name, getattr(self, name), 1)
        check_int("warmup", self.warmup, 0)
        check_int("interleave_rounds", self.interleave_rounds, 0)
        if self.real_limit is not None:
            check_int("real_limit", self.real_limit, 1)
        if self.peak_tflops is not None:
            check_number("peak_tflops", self.peak_tflops, low=0, low_open=True)
        check_choice("precision", self.precision, PRECISIONS)
        for name, choices in (("paths", PATHS), ("peers", PEERS)):
            for item in getattr(self, name):
                check_choice(name, item, choices)
        if not self.models:
            raise OptionError("models", "models must name at least one model, received models=()")
        if self.data not in DATA and not (
            self.data.startswith(FOLDER_PREFIX) and self.data[len(FOLDER_PREFIX) :]
        ):
            raise OptionError(
                "data",
                f"data must be one of {DATA} or folder:PATH, received data={self.data!r}",
            )
        if "pipeline" in self.paths and self.data == "synthetic":
            raise OptionError(
                "paths", "the 'pipeline' path needs real data, received --data synthetic"
            )
        if self.peers and self.devices != 1:
            raise OptionError(
                "peers", f"peers run on one device; pass --peers none with devices={self.devices}"
            )

    @property
    def folder(self) -> str | None:
        """The image folder of `--data folder:PATH`, else None."""
        return self.data[len(FOLDER_PREFIX) :] if self.data.startswith(FOLDER_PREFIX) else None

    @property
    def real_data(self) -> bool:
        """Whether our models also run on real data (`real`, `both` or an image folder)."""
        return self.data in ("real", "both") or self.folder is not None

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.image_size, self.image_size, self.channels)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One model of the suite: its architecture with overrides, and the label of its results."""

    name: str
    overrides: Mapping[str, Any]
    label: str


# Fields the suite sets itself, not a model spec.
_SUITE_SET = ("input_shape", "num_classes", "normalization", "name")
_PARSERS = {"int": int, "float": float, "str": str}


def _spec_value(field: dataclasses.Field, text: str, spec: str):
    """`text` parsed by the field's annotation ('int | None' -> int; 'none' -> None)."""
    annotation = str(field.type).replace(" ", "")
    if text.lower() == "none" and "None" in annotation.split("|"):
        return None
    base = annotation.split("|")[0]
    if base == "bool":
        if text.lower() not in ("true", "false", "1", "0"):
            raise OptionError(
                "models", f"{field.name} must be true or false, received {field.name}={text!r}"
            )
        return text.lower() in ("true", "1")
    try:
        return _PARSERS[base](text)
    except ValueError:
        raise OptionError(
            "models", f"{field.name} must be {base}, received {field.name}={text!r} in {spec!r}"
        ) from None


def parse_model_spec(spec: str) -> ModelSpec:
    """'resnet50:stride_in=1x1,width=0.5' -> the architecture, its `ResNetConfig` overrides
    (each value parsed by its field's type) and the label 'resnet50[stride_in=1x1,width=0.5]'.

    Raises:
        OptionError: an item that is not key=value, or a key that is no settable field.
    """
    name, _, text = spec.partition(":")
    fields = {
        f.name: f
        for f in dataclasses.fields(ResNetConfig)
        if f.name not in _SUITE_SET and str(f.type).split("|")[0].strip() in (*_PARSERS, "bool")
    }
    overrides = {}
    for item in filter(None, text.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise OptionError("models", f"model options must be key=value, received {spec!r}")
        if key not in fields:
            raise OptionError(
                "models",
                f"unknown model option {key!r} in {spec!r}; known: {', '.join(sorted(fields))}",
            )
        overrides[key] = _spec_value(fields[key], value, spec)
    return ModelSpec(name, overrides, f"{name}[{text}]" if text else name)


def model_config(spec: ModelSpec, options: SuiteOptions, **changes) -> ResNetConfig:
    """The `ResNetConfig` of one model of the suite (validated): the architecture, the suite's
    shape and classes, `options.model_options`, the spec's overrides, then `changes`."""
    suite_set = {"input_shape": options.input_shape, "num_classes": options.num_classes}
    return ResNetConfig.named(
        spec.name, **{**suite_set, **options.model_options, **spec.overrides, **changes}
    )


def _folder_source() -> Callable:
    """The image-folder pipeline's entry point, or a one-line OptionError when it is missing."""
    module_name, function = FOLDER_SOURCE
    try:
        source = getattr(importlib.import_module(module_name), function, None)
    except ImportError:
        source = None
    if source is None:
        raise OptionError(
            "data",
            f"--data folder:PATH is not available: this keras_resnet has no "
            f"{module_name}.{function} (the image-folder pipeline)",
        )
    return source


def _variant_transform(names: Sequence[str]) -> Callable | None:
    """`model -> model` with the experimental layers swapped in, or None for no variants."""
    if not names:
        return None
    try:
        variants.check_variants(names)
    except ValueError as error:
        raise OptionError("variants", str(error)) from None
    return lambda model: variants.with_variants(model, names)


def validate(options: SuiteOptions) -> list[ModelSpec]:
    """Everything checkable before a measurement: each model's configuration, the variants and
    the folder pipeline's presence. Returns the parsed model specs; raises OptionError."""
    specs = [parse_model_spec(spec) for spec in options.models]
    for spec in specs:
        model_config(spec, options)
    _variant_transform(options.variants)
    if options.folder is not None:
        _folder_source()
    return specs


def print_row(result: Result) -> None:
    """The default `on_result`: the result's table row, as soon as it is measured."""
    print(format_table([result]), flush=True)


def _interleaved_suite(specs, options: SuiteOptions, on_result) -> tuple[list[Result], list]:
    models = {spec.label: build_model(model_config(spec, options)) for spec in specs}
    models[peers.KERAS_APPLICATIONS_NAME] = peers.keras_applications_resnet50(
        options.input_shape, options.num_classes
    )
    results = keras_paths.interleaved_inference(
        models,
        batch_size=options.batch_size,
        rounds=options.interleave_rounds,
        steps=options.steps,
        warmup=options.warmup,
        precision=options.precision,
    )
    for result in results:
        on_result(result)
    return results, inference_ratios(results, results[-1])


def _load_data(options: SuiteOptions, info: dict):
    """The real dataset of `--data real/both/folder:PATH` (None for synthetic), recorded in
    `info`."""
    size = (options.image_size, options.image_size)
    if options.folder is not None:
        dataset = _folder_source()(
            options.folder, image_size=size, limit=options.real_limit, channels=options.channels
        )
    elif options.real_data:
        dataset = keras_paths.load_real_data(options.dataset, size, limit=options.real_limit)
    else:
        return None
    info["dataset"] = {
        "name": dataset.name,
        "source": dataset.source,
        "train_images": len(dataset.x_train),
    }
    return dataset


def _pipeline(spec, model, options, dataset, peak) -> Result:
    overrides = {"stem": "imagenet", **options.model_options, **spec.overrides}
    if options.pipeline_no_augment:
        overrides["augment"] = False
    return keras_paths.bench_pipeline(
        spec.name,
        dataset,
        label=spec.label,
        batch_size=options.batch_size,
        epochs=options.pipeline_epochs,
        precision=options.precision,
        steps_per_execution=options.steps_per_execution,
        output_dir=tempfile.mkdtemp(prefix="bench_pipeline_"),
        overrides=overrides,
        peak_flops=peak,
        flops_per_image=count_flops(model),
    )


def _one_model(spec, options: SuiteOptions, dataset, peak, on_result) -> None:
    """Every path of `options.paths` (and inference) for one of our models."""
    changes = {}
    if dataset is not None:
        # Raw uint8 pixels in; the model normalizes them (its 'normalize' layer).
        changes = {
            "input_shape": dataset.image_shape,
            "normalization": data_lib.channel_stats(dataset.x_train),
        }
    config = model_config(spec, options, **changes)
    model, label = build_model(config), spec.label
    transform = _variant_transform(options.variants)
    if transform is not None:
        model, label = transform(model), label + "+" + "+".join(options.variants)
    common = dict(
        steps=options.steps, warmup=options.warmup, precision=options.precision, peak_flops=peak
    )
    if "compiled" in options.paths:
        train = dict(
            name=label,
            batch_size=options.batch_size,
            steps_per_execution=options.steps_per_execution,
            devices=options.devices,
            sync_batch_norm=options.sync_batch_norm,
            **common,
        )
        if options.data in ("synthetic", "both") or options.folder is not None:
            on_result(keras_paths.bench_keras_train(model, profile_dir=options.profile, **train))
        if options.real_data:
            real = (dataset.x_train, dataset.y_train.astype("int32"))
            on_result(
                keras_paths.bench_keras_train(model, real=real, dataset=dataset.name, **train)
            )
    if "pipeline" in options.paths:
        on_result(_pipeline(spec, model, options, dataset, peak))
    if "fit" in options.paths:
        on_result(
            keras_paths.bench_keras_fit(
                model,
                name=label,
                batch_size=options.batch_size,
                steps_per_execution=options.steps_per_execution,
                steps=options.steps,
                precision=options.precision,
                peak_flops=peak,
            )
        )
    if options.inference:
        on_result(
            keras_paths.bench_keras_infer(
                model, name=label, batch_size=options.batch_size, **common
            )
        )


def _our_models_suite(specs, options: SuiteOptions, info: dict, peak, on_result) -> None:
    dataset = _load_data(options, info)
    for spec in specs:
        _one_model(spec, options, dataset, peak, on_result)


def _peer_suite(options: SuiteOptions, peak, on_result) -> None:
    """keras.applications.ResNet50 (fit, compiled) and torchvision's resnet50 (eager, compiled)."""
    shape, size = options.input_shape, (options.image_size, options.image_size)
    if any(p.startswith("keras") for p in options.peers):
        app = peers.keras_applications_resnet50(shape, options.num_classes)
        name = peers.KERAS_APPLICATIONS_NAME
        if "keras-fit" in options.peers:
            on_result(
                keras_paths.bench_keras_fit(
                    app,
                    name=name,
                    batch_size=options.batch_size,
                    steps=options.steps,
                    precision=options.precision,
                    peak_flops=peak,
                )
            )
        if "keras-compiled" in options.peers:
            on_result(
                keras_paths.bench_keras_train(
                    app,
                    name=name,
                    batch_size=options.batch_size,
                    steps=options.steps,
                    warmup=options.warmup,
                    precision=options.precision,
                    peak_flops=peak,
                )
            )
    torch_peers = [p for p in options.peers if p.startswith("torch")]
    if not torch_peers:
        return
    if not installed("torchvision"):
        print("torchvision is not installed: torch peers skipped", flush=True)
        return
    # torchvision's resnet50 is v1.5, as ours (keras.applications' is v1, 6% fewer FLOPs).
    flops = count_flops(
        build_model(
            ResNetConfig.named("resnet50", input_shape=shape, num_classes=options.num_classes)
        )
    )
    for peer in torch_peers:
        on_result(
            peers.bench_torchvision(
                "resnet50",
                batch_size=options.batch_size,
                image_size=size,
                compile=peer == "torch-compile",
                num_classes=options.num_classes,
                in_channels=options.channels,
                flops_per_image=flops,
                steps=options.steps,
                warmup=options.warmup,
                precision=options.precision,
                peak_flops=peak,
            )
        )


def run_suite(
    options: SuiteOptions, *, on_result: Callable[[Result], None] = print_row
) -> tuple[list[Result], dict, list[dict]]:
    """Everything `benchmarks/run.py` measures, in its order: our models on each path, then
    the peers. Keras' global dtype policy is `options.precision` meanwhile, and restored after,
    also on error.

    Args:
        options: what to measure.
        on_result: called with each result as it is measured (default: print its table row).

    Returns:
        (results, device info, ratio rows).

    Raises:
        OptionError: the first bad option, before anything is measured.
    """
    specs = validate(options)
    with dtype_policy(options.precision):
        info = device_info()
        peak = (
            options.peak_tflops * 1e12
            if options.peak_tflops
            else peak_flops_for(info["accelerator"])
        )
        info["peak_flops"] = peak
        if options.interleave_rounds:
            results, ratio_rows = _interleaved_suite(specs, options, on_result)
            return results, info, ratio_rows
        results: list[Result] = []

        def record(result: Result) -> None:
            results.append(result)
            on_result(result)

        _our_models_suite(specs, options, info, peak, record)
        _peer_suite(options, peak, record)
    return results, info, ratios(results)
