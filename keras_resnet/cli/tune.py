"""Searches keras_resnet's depth (or blocks per stage), block, expansion, width, stem, and
optionally the shortcut downsampling and the stochastic-depth rate, and the training recipe
(learning rate, weight decay, and optionally label smoothing and random erasing) with KerasTuner,
then reports the trials (table, Pareto plot against parameters and FLOPs, best_config.json for
`keras-resnet train --config`) and retrains the best configuration.

    keras-resnet tune                                        # hyperband on Fashion-MNIST
    keras-resnet tune --tuner bayesian --max-trials 30 --max-epochs 5 --train-fraction 0.2
    keras-resnet tune --report-only --directory runs/tuning --project-name search

(`python scripts/tune.py ...` is the same command.) Running the same command again resumes the
search: completed trials are kept, an interrupted trial runs again. Distributed: start one chief
and any number of workers with the same command and KERASTUNER_TUNER_ID=chief|tuner0|tuner1...,
KERASTUNER_ORACLE_IP, KERASTUNER_ORACLE_PORT, and a --directory they all share. See
docs/TUNING.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from keras_resnet.cli.options import (
    REPORTED,
    OneLineParser,
    add_arguments,
    add_backend,
    fail,
    given,
)
from keras_resnet.training.config import TrainConfig
from keras_resnet.tuning import SearchOptions, SearchSpace, project_path
from keras_resnet.utils import OptionError, one_line

# The TrainConfig fields a search exposes as flags; the rest of the recipe is the training
# module's default.
TRAIN_FLAGS = (
    "dataset",
    "image_size",
    "cache",
    "source_dir",
    "loader",
    "batch_size",
    "precision",
    "seed",
    "steps_per_execution",
)
TRAIN_HELP = {
    "dataset": "a dataset name (default fashion_mnist) or a folder of class folders",
    "cache": "folders over 64 px: a folder for a one-time preprocessed cache of the images, "
    "built on first use (as train.py --cache): every trial and the final run read it",
    "source_dir": "folder of the dataset's IDX files (mnist, fashion_mnist)",
    "loader": "auto: tensorflow-datasets when installed, else the IDX files",
    "batch_size": "batch size of every trial and the final run (default 256)",
    "precision": "float32, mixed_bfloat16 or mixed_float16 (default float32)",
    "seed": "seed of the data split, the tuner and the training (default 0)",
    "steps_per_execution": "training steps per compiled call (default 1)",
}
FINAL_FLAGS = ("final_epochs", "output_dir", "run_name")


def make_parser(prog: str) -> OneLineParser:
    parser = OneLineParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_backend(parser)
    search = parser.add_argument_group("search")
    add_arguments(search, SearchOptions, exclude=FINAL_FLAGS)
    search.add_argument(
        "--report-only", action="store_true", help="write the report of an existing search and exit"
    )
    search.add_argument(
        "--in-process",
        action="store_true",
        help="run trials in this process instead of one process per trial "
        "(faster start, but memory grows with every trial)",
    )
    search.add_argument("--quiet", action="store_true", help="no per-epoch progress")
    data = parser.add_argument_group("data and training")
    add_arguments(data, TrainConfig, only=TRAIN_FLAGS, help_overrides=TRAIN_HELP)
    final = parser.add_argument_group("final training of the best configuration")
    add_arguments(final, SearchOptions, only=FINAL_FLAGS)
    space = parser.add_argument_group("search space (ranges are inclusive; min == max fixes it)")
    add_arguments(space, SearchSpace)
    return parser


def options_from_args(args: argparse.Namespace) -> tuple[SearchSpace, SearchOptions]:
    """The search's space and options from parsed flags (raises OptionError naming a flag)."""
    space = SearchSpace(**given(args, [f.name for f in dataclasses.fields(SearchSpace)]))
    train = TrainConfig(**given(args, TRAIN_FLAGS), verbose=0 if args.quiet else 1)
    option_fields = [f.name for f in dataclasses.fields(SearchOptions) if f.name != "train"]
    options = SearchOptions(
        **given(args, option_fields), process_per_trial=not args.in_process, train=train
    )
    options.validate()  # a bad option is refused before the search modules load
    return space, options


def main(argv: list[str] | None = None) -> int:
    prog = "tune.py" if Path(sys.argv[0]).name == "tune.py" else "keras-resnet tune"
    parser = make_parser(prog)
    args = parser.parse_args(argv)

    defaults = SearchOptions()
    if args.report_only:
        from keras_resnet.tuning import write_report

        project_dir = project_path(
            args.directory or defaults.directory, args.project_name or defaults.project_name
        )
        try:
            summary = write_report(project_dir)
        except FileNotFoundError as error:  # no search there: the flag is wrong
            fail(parser, OptionError("directory", one_line(error)))
        except REPORTED as error:
            fail(parser, error)
        print((Path(summary["report_dir"]) / "trials.md").read_text())
        if summary["best_config"]:
            print(f"best configuration: {summary['best_config']}")
        return 0
    try:
        space, options = options_from_args(args)
    except REPORTED as error:
        fail(parser, error)

    from keras_resnet.tuning import run_search

    try:
        summary = run_search(space, options)
    except REPORTED as error:  # bad options or data: 2; a diverged or failed run: 1
        fail(parser, error)
    print(json.dumps(summary, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

__all__ = ["main", "make_parser", "options_from_args"]
