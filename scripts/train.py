#!/usr/bin/env python
"""Train a keras_resnet model with model.fit on a tensorflow-datasets dataset (Fashion-MNIST by
default), evaluate it on the test split and write saved_models/<run>/.

Examples:
    python scripts/train.py --preset quick          # CPU quick start (a few minutes)
    python scripts/train.py                         # the ResNet-18 recipe (GPU)
    KERAS_BACKEND=jax python scripts/train.py --precision mixed_bfloat16 --batch-size 512

Running the same command again after a crash resumes from the last completed epoch.
Options left unset take the preset's value, then the recipe's default (keras_resnet.training).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys

# Runnable from a checkout without installing the package.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


BACKENDS = ("tensorflow", "jax", "torch")


def _select_backend(argv: list[str]) -> None:
    """--backend must take effect before anything imports keras (keras_resnet does)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--backend", choices=BACKENDS)
    known, _ = pre.parse_known_args(argv)
    if known.backend:
        os.environ["KERAS_BACKEND"] = known.backend


_select_backend(sys.argv[1:])
from keras_resnet.cli import add_model_arguments  # noqa: E402
from keras_resnet.data import LOADERS  # noqa: E402
from keras_resnet.models import MODELS  # noqa: E402
from keras_resnet.training import (  # noqa: E402
    DISTRIBUTE_MODES,
    OPTIMIZERS,
    PRECISIONS,
    PRESETS,
    XLA_MODES,
)


def _int_at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, received {text!r}")
        return value

    return parse


def _float_in(low: float, high: float | None = None, *, open_low: bool = False):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = None
        if (
            value is None
            or value != value
            or value < low
            or (open_low and value == low)
            or (high is not None and value > high)
        ):
            bounds = f"{'>' if open_low else '>='} {low}" + (f" and <= {high}" if high else "")
            raise argparse.ArgumentTypeError(f"must be a number {bounds}, received {text!r}")
        return value

    return parse


class _OneLineParser(argparse.ArgumentParser):
    """Errors as one line on stderr (no usage block), exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def make_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="train.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--preset",
        choices=PRESETS,
        default="default",
        help="'quick': width 0.25, 3 epochs, no augmentation (CPU quick start)",
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        help="Keras backend (default: $KERAS_BACKEND, else tensorflow)",
    )
    model = parser.add_argument_group("model")
    model.add_argument("--model", choices=tuple(MODELS), help="default resnet18")
    add_model_arguments(model)
    for action in model._group_actions:  # the shared flag's help names the builder's default
        if action.dest == "stem":
            action.help = "default cifar here (3x3 stride-1 convolution, no pool: small images)"
    model.add_argument(
        "--zero-init-residual",
        action="store_true",
        default=None,
        help="start each block's last BN gamma at 0",
    )
    model.add_argument("--dropout-rate", type=_float_in(0, 0.99), help="before the classifier")
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", help="a tensorflow-datasets name (default fashion_mnist)")
    data.add_argument(
        "--source-dir",
        help="folder of the IDX files of fashion_mnist/mnist "
        "(default: $KERAS_RESNET_DATA_DIR, /usr/share/datasets/<name>)",
    )
    data.add_argument(
        "--data-dir",
        help="TFDS data folder, cache of prepared datasets (default ~/tensorflow_datasets)",
    )
    data.add_argument(
        "--loader",
        choices=LOADERS,
        help="auto: TFDS when TensorFlow is installed, else read the IDX files",
    )
    data.add_argument(
        "--train-size", type=_int_at_least(1), help="random subset of the train split"
    )
    data.add_argument("--test-size", type=_int_at_least(1), help="random subset of the test split")
    data.add_argument(
        "--val-size",
        type=_int_at_least(0),
        help="held out of the training split for the best checkpoint (default 5000)",
    )
    data.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="random crop with padding, flip, erasing (default on)",
    )
    data.add_argument("--crop-padding", type=_int_at_least(0), help="default 4")
    data.add_argument(
        "--flip",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="horizontal flips (default on, off for mnist)",
    )
    data.add_argument("--erasing", type=_float_in(0, 1), help="random-erasing probability (0.5)")
    opt = parser.add_argument_group("optimization")
    opt.add_argument("--epochs", type=_int_at_least(1), help="default 100")
    opt.add_argument("--batch-size", type=_int_at_least(1), help="global batch (default 256)")
    opt.add_argument("--optimizer", choices=OPTIMIZERS, help="sgd: Nesterov momentum")
    opt.add_argument(
        "--learning-rate",
        type=_float_in(0, open_low=True),
        help="peak rate (default 0.1 per 128 images for sgd, 2e-3 for adamw)",
    )
    opt.add_argument("--momentum", type=_float_in(0, 0.999))
    opt.add_argument(
        "--weight-decay",
        type=_float_in(0),
        help="decoupled, not on BN/bias (default 5e-3 sgd = L2 5e-4; 0.05 adamw)",
    )
    opt.add_argument("--warmup-epochs", type=_float_in(0), help="linear warmup (default 2)")
    opt.add_argument("--label-smoothing", type=_float_in(0, 0.99), help="default 0.1")
    run = parser.add_argument_group("execution and output")
    run.add_argument("--precision", choices=PRECISIONS)
    run.add_argument("--xla", choices=XLA_MODES, help="jit_compile (default auto)")
    run.add_argument("--steps-per-execution", type=_int_at_least(1))
    run.add_argument(
        "--distribute", choices=DISTRIBUTE_MODES, help="auto: data parallel over every visible GPU"
    )
    run.add_argument("--seed", type=int)
    run.add_argument("--output-dir", help="run folder (default saved_models/<run-name>)")
    run.add_argument("--run-name", help="default <model>_<dataset>")
    run.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, default=None)
    run.add_argument(
        "--checkpoint",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="keep checkpoints/best.keras, the best monitored accuracy (default on)",
    )
    run.add_argument(
        "--backup",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="back up every epoch so that a rerun resumes (default on)",
    )
    run.add_argument(
        "--track-test",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="evaluate the test split after every epoch (curves, time to accuracy)",
    )
    run.add_argument(
        "--verbose",
        type=int,
        choices=(0, 1, 2),
        help="1: progress bar (default), 2: one line per epoch",
    )
    return parser


def _flag_of(message: str, fields) -> str:
    """'batch_size must be ...' -> '--batch-size'; the flag a ValueError is about."""
    match = re.match(r"\s*(\w+)", message)
    name = match.group(1) if match else ""
    if name == "depth":
        name = "model"
    return f"--{name.replace('_', '-')}" if name in fields else ""


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)

    from keras_resnet.data import DataNotFoundError
    from keras_resnet.training import TrainConfig, TrainingDiverged, preset, train

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    options = preset(args.preset)
    options.update({k: v for k, v in vars(args).items() if k in fields and v is not None})
    try:
        config = TrainConfig(**options)
        metrics = train(config)
    except (ValueError, DataNotFoundError) as error:
        message = str(error).splitlines()[0]
        flag = _flag_of(message, fields)
        parser.exit(
            2, f"{parser.prog}: error: {'argument ' + flag + ': ' if flag else ''}{message}\n"
        )
    except TrainingDiverged as error:
        parser.exit(1, f"{parser.prog}: error: {error}\n")
    times = metrics.get("time_to_test_accuracy") or {}
    to_95 = times.get("0.950")
    reached = f"; 95% at epoch {to_95['epoch']} ({to_95['elapsed_s']:.0f} s)" if to_95 else ""
    print(
        f"test accuracy: {100 * metrics['test_accuracy']:.2f}% (loss {metrics['test_loss']:.4f}) "
        f"after {metrics['epochs']} epochs, {metrics['wall_time_s']:.0f} s{reached}; "
        f"{metrics['images_per_s']:.0f} images/s on {metrics['device']} ({metrics['backend']})"
    )
    print(f"saved: {metrics['run_dir']}/model.keras, metrics.json, curves.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
