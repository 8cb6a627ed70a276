"""`keras-resnet benchmark`: training and inference throughput of one keras_resnet model, on the
current Keras backend and device, with synthetic data.

    keras-resnet benchmark                                   # ResNet-50, 224 px, batch 64
    KERAS_BACKEND=jax keras-resnet benchmark --model resnet18 --batch-size 256 \\
        --precision mixed_bfloat16 --training fit --json bench.json

Training: `--training step` times `model.train_on_batch`, the train step that `fit` compiles, one
call at a time (each returns host values, so each is timed to its end); `--training fit` times
one `model.fit` epoch of `--steps` batches, after a compiling epoch of `--warmup` batches.
Inference: `model.predict_on_batch`. img/s is the batch size over the median step; SGD with
momentum 0.9 and sparse cross-entropy; random normal float32 images and random labels, copied from
host memory every step as a user's arrays are (on a GPU that copy can cost as much as the step).

The full harness (several training paths, keras.applications and torchvision peers, MFU, several
GPUs, real data) lives in a source checkout, not in the package: from the repository root,
`keras-resnet benchmark --suite [its flags]` runs `python benchmarks/run.py [its flags]`
(docs/PERFORMANCE.md).

Exit status (every command's, `keras_resnet.cli.options.exit_status`): 0; 2 for a bad option
(one line naming the flag, before anything runs; a ValueError while measuring, such as an image
too small for the model, counts as one too); 1 when the measurement fails (one line: the error's
type and message).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

# Nothing at the top imports Keras: `--suite` hands the command line to the harness without it,
# and the backend is chosen before Keras is first imported (keras_resnet.cli).

PROG = "keras-resnet benchmark"
SUITE_FLAG = "--suite"
HARNESS = Path("benchmarks") / "run.py"
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
TRAINING = ("step", "fit", "none")


def _opt(default, text: str, **extra):
    return dataclasses.field(default=default, metadata={"help": text, **extra})


@dataclasses.dataclass(frozen=True)
class BenchmarkOptions:
    """What `keras-resnet benchmark` measures. Invalid values raise `OptionError` naming the
    field; the model's own options (width, stem, ...) are `ResNetConfig`'s."""

    model: str = _opt("resnet50", "a keras_resnet architecture: resnet18 ... resnet152, ...")
    batch_size: int = _opt(64, "images per step")
    image_size: int = _opt(224, "height = width of the input")
    channels: int = _opt(3, "image channels")
    num_classes: int = _opt(1000, "classifier outputs")
    precision: str = _opt("float32", "Keras dtype policy", choices=PRECISIONS)
    training: str = _opt(
        "step",
        "step: train_on_batch, timed per call; fit: one model.fit epoch; none: no training",
        choices=TRAINING,
    )
    inference: bool = _opt(True, "time predict_on_batch too (--no-inference: skip it)")
    steps: int = _opt(10, "timed steps")
    warmup: int = _opt(2, "untimed steps first (compilation)")
    json: str | None = _opt(None, "write the results here (checked before anything runs)")

    def __post_init__(self):
        from keras_resnet.utils import OptionError, check_choice, check_int

        for name in ("batch_size", "image_size", "channels", "num_classes", "steps"):
            check_int(name, getattr(self, name), 1)
        check_int("warmup", self.warmup, 0)
        check_choice("precision", self.precision, PRECISIONS)
        check_choice("training", self.training, TRAINING)
        if self.training == "none" and not self.inference:
            raise OptionError(
                "inference", "nothing to measure: --training none with --no-inference"
            )


def find_harness(start: Path) -> Path | None:
    """benchmarks/run.py of the keras_resnet checkout that holds `start`, else None."""
    for folder in (start, *start.parents):
        if (folder / HARNESS).is_file() and (folder / "keras_resnet").is_dir():
            return folder / HARNESS
    return None


def run_harness(argv: list[str]) -> int:
    """`--suite`: the checkout's `python benchmarks/run.py ARGV`, in a process of its own."""
    harness = find_harness(Path.cwd())
    if harness is None:
        sys.stderr.write(
            f"{PROG}: error: argument {SUITE_FLAG}: the full benchmark is benchmarks/run.py of a "
            "source checkout of keras_resnet: run this from the checkout (or python "
            "benchmarks/run.py there)\n"
        )
        return 2
    code = subprocess.run([sys.executable, str(harness), *argv]).returncode
    return code if code >= 0 else 128 - code  # killed by a signal: as a shell reports it


def make_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """One flag per `BenchmarkOptions` field, and the model flags generated from `ResNetConfig`
    (without importing Keras)."""
    from keras_resnet.cli.options import OneLineParser, add_arguments, add_backend
    from keras_resnet.config import ResNetConfig

    parser = OneLineParser(
        prog=prog,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,  # --suite is recognized before parsing, by its full name only
    )
    add_arguments(parser, BenchmarkOptions)
    add_backend(parser)
    parser.add_argument(
        SUITE_FLAG,
        action="store_true",
        help="run the full harness of a source checkout (python benchmarks/run.py) with the other "
        "flags: its --help lists them",
    )
    add_arguments(
        parser.add_argument_group("model options"), ResNetConfig, exclude=("num_classes",)
    )
    return parser


def config_from_args(args: argparse.Namespace):
    """(`BenchmarkOptions`, the model's `ResNetConfig`) of parsed arguments: what was typed, the
    defaults for the rest. Raises OptionError for a bad value."""
    from keras_resnet.cli.options import given
    from keras_resnet.config import ResNetConfig

    options = BenchmarkOptions(
        **given(args, [f.name for f in dataclasses.fields(BenchmarkOptions)])
    )
    model_fields = [f.name for f in dataclasses.fields(ResNetConfig) if f.name != "num_classes"]
    config = ResNetConfig.named(
        options.model,
        input_shape=(options.image_size, options.image_size, options.channels),
        num_classes=options.num_classes,
        **given(args, model_fields),
    )
    return options, config


def _figure(task: str, path: str, times: list[float], batch_size: int, per_time: int = 1):
    """img/s and step milliseconds from the seconds of each timed call of `per_time` steps."""
    step = max(statistics.median(times) / per_time, 1e-9)
    return {
        "task": task,
        "path": path,
        "img_per_s": batch_size / step,
        "step_ms": 1e3 * step,
        "step_ms_spread": [1e3 * min(times) / per_time, 1e3 * max(times) / per_time],
        "timed_steps": len(times) * per_time,
    }


def _timed_calls(call: Callable[[], object], *, steps: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def _fit_epoch_seconds(model, x, y, *, steps: int, warmup: int) -> float:
    """Seconds of one `fit` epoch of `steps` batches (the same batch each step), after an
    untimed epoch of `warmup` batches (at least one: it compiles)."""
    import keras

    class Batches(keras.utils.PyDataset):
        def __init__(self, length: int):
            super().__init__()
            self.length = length

        def __len__(self):
            return self.length

        def __getitem__(self, index):
            return x, y

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            # The epoch's logs are host floats by now: the device has finished the epoch.
            self.seconds = time.perf_counter() - self.start

    model.fit(Batches(max(warmup, 1)), epochs=1, verbose=0)
    timer = EpochTimer()
    model.fit(Batches(steps), epochs=1, verbose=0, callbacks=[timer])
    return timer.seconds


def measure(options: BenchmarkOptions, config) -> dict:
    """Builds the model of `config` under `options.precision` and times what `options` asks.

    Returns:
        The JSON record: `info` (backend, device, versions), `model` (name, parameters, FLOPs
        per image, configuration), `options` and `results` (one row per task: `img_per_s`,
        `step_ms`, `step_ms_spread`, `timed_steps`, `batch_size`, `precision`, ...).
    """
    import keras
    import numpy as np

    import keras_resnet
    from keras_resnet.training.devices import device_description
    from keras_resnet.utils import dtype_policy

    batch = options.batch_size
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, *config.image_shape), dtype=np.float32)
    y = rng.integers(0, options.num_classes, size=(batch,), dtype=np.int32)
    results = []
    with dtype_policy(options.precision):
        model = keras_resnet.build_model(config)
        model.compile(
            optimizer=keras.optimizers.SGD(learning_rate=0.01, momentum=0.9),
            loss="sparse_categorical_crossentropy",
        )
        if options.training == "step":
            times = _timed_calls(
                lambda: model.train_on_batch(x, y), steps=options.steps, warmup=options.warmup
            )
            results.append(_figure("train", "train_on_batch", times, batch))
        elif options.training == "fit":
            seconds = _fit_epoch_seconds(model, x, y, steps=options.steps, warmup=options.warmup)
            results.append(_figure("train", "fit", [seconds], batch, per_time=options.steps))
        if options.inference:
            times = _timed_calls(
                lambda: model.predict_on_batch(x), steps=options.steps, warmup=options.warmup
            )
            results.append(_figure("infer", "predict_on_batch", times, batch))
    for row in results:
        row.update(batch_size=batch, input_shape=list(config.image_shape))
        row.update(precision=options.precision)
    return {
        "info": {
            "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "backend": keras.backend.backend(),
            "device": device_description(),
            "keras": keras.__version__,
            "keras_resnet": keras_resnet.__version__,
            "python": platform.python_version(),
        },
        "model": {
            "name": config.name,
            "params": keras_resnet.count_params(model),
            "flops_per_image": keras_resnet.count_flops(model),
            "config": config.to_dict(),
        },
        "options": dataclasses.asdict(options),
        "results": results,
    }


def format_record(record: dict) -> str:
    """The record as a header line and a table."""
    model, info = record["model"], record["info"]
    lines = [
        f"{model['name']}: {model['params'] / 1e6:.2f} M parameters, "
        f"{model['flops_per_image'] / 1e9:.3g} GFLOP per image; {info['device']}, "
        f"Keras {info['keras']} on {info['backend']}",
        f"{'task':<6} {'path':<17} {'precision':<15} {'batch':>5} {'img/s':>10} {'step ms':>9}",
    ]
    for r in record["results"]:
        lines.append(
            f"{r['task']:<6} {r['path']:<17} {r['precision']:<15} {r['batch_size']:>5} "
            f"{r['img_per_s']:>10.1f} {r['step_ms']:>9.2f}"
        )
    return "\n".join(lines)


def check_writable(path: str) -> None:
    """Raises OSError unless a file can be created at `path` (its folder is created)."""
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(f"{path} is a folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=target.parent):
        pass


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if SUITE_FLAG in argv:
        return run_harness([a for a in argv if a != SUITE_FLAG])
    parser = make_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        parser.error(
            f"unrecognized arguments: {' '.join(unknown)} (the full harness's flags, such as "
            f"--models and --peers: {PROG} {SUITE_FLAG} --help, from a source checkout)"
        )
    from keras_resnet.cli.options import fail
    from keras_resnet.utils import OptionError, one_line, write_text_atomic

    try:
        options, config = config_from_args(args)
    except ValueError as error:
        fail(parser, error)
    if options.json:
        try:
            check_writable(options.json)
        except OSError as error:  # refused before anything runs: a bad option
            fail(parser, OptionError("json", f"cannot write there: {one_line(error)}"))
    try:
        record = measure(options, config)
    except Exception as error:  # noqa: BLE001 - any failure of the run: one line, no traceback
        fail(parser, error)
    record["argv"] = argv
    print(format_record(record))
    if options.json:
        write_text_atomic(options.json, json.dumps(record, indent=1))
    return 0
