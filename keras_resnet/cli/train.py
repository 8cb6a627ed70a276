"""Train a keras_resnet model with model.fit on a tensorflow-datasets dataset (Fashion-MNIST by
default) or a folder of class folders (streamed), evaluate it on the test split and write
saved_models/<run>/.

Examples:
    keras-resnet train --preset quick           # CPU quick start (a few minutes)
    keras-resnet train                          # the ResNet-18 recipe (GPU)
    KERAS_BACKEND=jax keras-resnet train --precision mixed_bfloat16 --batch-size 512
    keras-resnet train --config saved_models/resnet18_fashion_mnist/config.json --epochs 200
    keras-resnet train --dataset ~/photos --model resnet50 --val-size 0.1   # a folder, 224 px
    keras-resnet train --dataset ~/photos --weights resnet50.pth --freeze-stages 2 --head-epochs 1

(`python scripts/train.py` is the same command.) Running the same command again after a crash
resumes from the last completed epoch; on a finished run it says so in one line and changes
nothing. --restart trains from epoch 0 again.

Where a value comes from, lowest first: the recipe's defaults (keras_resnet.training), then
--preset, then --config FILE, then the flags typed. --model NAME replaces the architecture (depth,
block, groups, width per group, expansion) and keeps the other model options (width, stem, ...).
A run's config.json names its own run folder, so `--config RUN/config.json` alone continues or
repeats that run; give --output-dir (or --run-name) for a new one.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from keras_resnet.cli.options import (
    REPORTED,
    OneLineParser,
    add_arguments,
    add_backend,
    fail,
    given,
)
from keras_resnet.config import ARCHITECTURES, ResNetConfig
from keras_resnet.training.config import (
    GROUPS,
    MODEL_OPTIONS,
    PRESETS,
    TrainConfig,
    field_names,
    preset,
)
from keras_resnet.utils import OptionError


def groups() -> dict[str, tuple[str, ...]]:
    """TrainConfig's flags by help group, as the fields declare them (the model's come from
    ResNetConfig)."""
    return {title: field_names("group", title) for title in GROUPS}


def make_parser(prog: str | None = None) -> OneLineParser:
    if prog is None:  # scripts/train.py's errors have always read 'train.py: error: ...'
        script = os.path.basename(sys.argv[0]) if sys.argv else ""
        prog = "train.py" if script == "train.py" else "keras-resnet train"
    parser = OneLineParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--preset",
        choices=PRESETS,
        default="default",
        help="'quick': width 0.25, 3 epochs, no augmentation (CPU quick start)",
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="a run's config.json (or any JSON of its form): values over the preset's, under "
        "the flags typed",
    )
    add_backend(parser)
    model = parser.add_argument_group("model")
    model.add_argument("--model", choices=tuple(ARCHITECTURES), help="default resnet18")
    add_arguments(
        model,
        ResNetConfig,
        only=MODEL_OPTIONS,
        help_overrides={
            "stem": "default cifar here (3x3 stride-1 convolution, no pool: small images); "
            "imagenet for a folder trained over 64 px"
        },
    )
    for title, fields in groups().items():
        add_arguments(parser.add_argument_group(title), TrainConfig, only=fields)
    return parser


def read_config_file(path: str) -> dict:
    """The JSON object in `path`; OptionError naming --config when it cannot be read."""
    try:
        with open(path) as f:
            values = json.load(f)
    except (OSError, ValueError) as error:
        reason = getattr(error, "strerror", None) or error
        raise OptionError(
            "config", f"config must be a readable JSON file, received config={path!r} ({reason})"
        ) from None
    if not isinstance(values, dict):
        raise OptionError("config", f"config must hold a JSON object, received config={path!r}")
    return values


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Defaults < --preset < --config FILE < the flags typed."""
    config = TrainConfig.create(**preset(args.preset))
    if args.config:
        values = read_config_file(args.config)
        try:
            config = TrainConfig.from_dict(values, base=config)
        except (OptionError, TypeError) as error:
            # Name the file: the bad value is in it, not on the command line.
            raise OptionError("config", f"{args.config}: {error}") from None
    fields = [name for names in groups().values() for name in names]
    typed = given(args, fields)
    if getattr(args, "stem", None) is not None:
        typed["auto_stem"] = False  # a stem typed is kept whatever a folder's image size
    return TrainConfig.create(base=config, model=args.model, **given(args, MODEL_OPTIONS), **typed)


def check_dataset_path(config: TrainConfig) -> None:
    """A `--dataset` that reads as a path must be a folder: refused before the run folder is
    made (the message is `keras_resnet.data.open_dataset`'s)."""
    if config.is_folder and not os.path.isdir(os.path.expanduser(config.dataset)):
        raise OptionError(
            "dataset",
            "dataset must be a folder of images or a dataset name, received "
            f"dataset={config.dataset!r} (no such folder)",
        )


def _summary(metrics: dict) -> str:
    times = metrics.get("time_to_test_accuracy") or {}
    to_95 = times.get("0.950")
    reached = f"; 95% at epoch {to_95['epoch']} ({to_95['elapsed_s']:.0f} s)" if to_95 else ""
    label = metrics.get("evaluated_on_label", "test accuracy")
    loss = metrics.get("test_loss", metrics.get("validation_loss"))
    return (
        f"{label}: {100 * metrics['accuracy']:.2f}% (loss {loss:.4f}) "
        f"after {metrics['epochs']} epochs, {metrics['wall_time_s']:.0f} s{reached}; "
        f"{metrics['images_per_s']:.0f} images/s on {metrics['device']} ({metrics['backend']})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)

    try:  # the options first: a bad one is refused before the training modules load
        config = config_from_args(args)
        check_dataset_path(config)
    except REPORTED as error:
        fail(parser, error)

    from keras_resnet.training import FinishedRun, plan_run, train_plan
    from keras_resnet.utils import keras_globals

    try:
        with keras_globals():
            plan = plan_run(config)
            if isinstance(plan, FinishedRun):  # one line, and nothing changes
                print(plan.message())
                return 0
            metrics = train_plan(plan)
    except REPORTED as error:  # bad options or data: 2; a diverged or failed run: 1
        fail(parser, error)
    print(_summary(metrics))
    curves = (
        ", curves.png" if os.path.exists(os.path.join(metrics["run_dir"], "curves.png")) else ""
    )
    print(f"saved: {metrics['run_dir']}/model.keras, metrics.json{curves}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
