"""Searches keras_resnet's width, expansion, depth, block, stem, learning rate and weight decay
with KerasTuner, then reports the trials and retrains the best configuration.

    python scripts/tune.py                                   # hyperband on Fashion-MNIST
    python scripts/tune.py --tuner bayesian --max-trials 30 --max-epochs 5 --train-fraction 0.2
    python scripts/tune.py --report-only --directory runs/tuning --project-name search

Running the same command again resumes the search: completed trials are kept, an interrupted
trial runs again. Distributed: start one chief and any number of workers with the same command
and KERASTUNER_TUNER_ID=chief|tuner0|tuner1..., KERASTUNER_ORACLE_IP, KERASTUNER_ORACLE_PORT, and
a --directory they all share. See docs/TUNING.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

# Runnable from a checkout without installing the package.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))


def build_parser() -> argparse.ArgumentParser:
    from keras_resnet.models import BLOCKS, STEMS
    from keras_resnet.tuning import TUNERS, SearchOptions, SearchSpace

    opts = SearchOptions()
    defaults = {f.name: f.default for f in SearchSpace.__dataclass_fields__.values()}
    parser = argparse.ArgumentParser(
        prog="tune.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    search = parser.add_argument_group("search")
    search.add_argument(
        "--tuner",
        choices=TUNERS,
        default=opts.tuner,
        help="KerasTuner algorithm (default %(default)s)",
    )
    search.add_argument(
        "--max-trials", type=int, default=opts.max_trials, help="most trials (default %(default)s)"
    )
    search.add_argument(
        "--max-epochs",
        type=int,
        default=opts.max_epochs,
        help="epochs of the longest trial (default %(default)s)",
    )
    search.add_argument(
        "--train-fraction",
        type=float,
        default=opts.train_fraction,
        help="fraction of the train set the trials train on (default %(default)s)",
    )
    search.add_argument(
        "--validation-fraction",
        type=float,
        default=opts.validation_fraction,
        help="fraction of the train set held out to score trials (default %(default)s)",
    )
    search.add_argument("--batch-size", type=int, default=opts.batch_size)
    search.add_argument(
        "--steps-per-execution",
        type=int,
        default=opts.steps_per_execution,
        help="training steps per compiled call (default %(default)s)",
    )
    search.add_argument(
        "--max-search-seconds",
        type=float,
        default=opts.max_search_seconds,
        help="start no trial after this many seconds (0: no limit)",
    )
    search.add_argument(
        "--precision",
        default=opts.precision,
        help="float32, mixed_bfloat16 or mixed_float16 (default %(default)s)",
    )
    search.add_argument("--seed", type=int, default=opts.seed)
    search.add_argument(
        "--directory",
        default=opts.directory,
        help="folder of search projects (default %(default)s)",
    )
    search.add_argument(
        "--project-name",
        default=opts.project_name,
        help="the search's folder in --directory (default %(default)s)",
    )
    search.add_argument(
        "--report-only", action="store_true", help="write the report of an existing search and exit"
    )
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", default=opts.dataset)
    data.add_argument(
        "--source-dir", help="folder of the dataset's IDX files (mnist, fashion_mnist)"
    )
    data.add_argument(
        "--loader",
        choices=("auto", "tfds", "idx"),
        default=opts.loader,
        help="auto: tensorflow-datasets when installed, else the IDX files",
    )
    final = parser.add_argument_group("final training of the best configuration")
    final.add_argument(
        "--final-epochs",
        type=int,
        default=opts.final_epochs,
        help="epochs on the full train set, saved to --output-dir (0: skip; default %(default)s)",
    )
    final.add_argument("--output-dir", default=opts.output_dir)
    final.add_argument(
        "--run-name", help="the run's folder in --output-dir (default tuned_<project-name>)"
    )
    space = parser.add_argument_group("search space (ranges are inclusive; min == max fixes it)")
    for name, kind, help_text in (
        ("width_min", float, "smallest width multiplier"),
        ("width_max", float, "largest width multiplier"),
        ("width_step", float, "grid step of the width"),
        ("expansion_min", int, "smallest bottleneck expansion"),
        ("expansion_max", int, "largest bottleneck expansion"),
        ("lr_min", float, "smallest peak learning rate (log scale)"),
        ("lr_max", float, "largest peak learning rate"),
        ("weight_decay_min", float, "smallest weight decay (log scale)"),
        ("weight_decay_max", float, "largest weight decay"),
    ):
        space.add_argument(
            "--" + name.replace("_", "-"),
            type=kind,
            default=defaults[name],
            help=f"{help_text} (default %(default)s)",
        )
    space.add_argument(
        "--depths",
        nargs="+",
        type=int,
        default=list(defaults["depths"]),
        help="depths to choose from (their blocks per stage; default %(default)s)",
    )
    space.add_argument("--block-kinds", nargs="+", choices=BLOCKS, default=list(BLOCKS))
    space.add_argument("--stems", nargs="+", choices=STEMS, default=list(defaults["stems"]))
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="run trials in this process instead of one process per trial "
        "(faster start, but memory grows with every trial)",
    )
    parser.add_argument("--quiet", action="store_true", help="no per-epoch progress")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)

    from keras_resnet import tuning
    from keras_resnet.training import TrainingDiverged

    def fail(field: str | None, message: str) -> int:
        flag = f"argument --{field.replace('_', '-')}: " if field else ""
        parser.exit(2, f"{parser.prog}: error: {flag}{message}\n")

    project_dir = tuning.project_path(args.directory, args.project_name)
    if args.report_only:
        try:
            summary = tuning.write_report(project_dir)
        except FileNotFoundError as error:
            return fail("directory", str(error))
        print(open(os.path.join(summary["report_dir"], "trials.md")).read())
        return 0
    space_fields = [f for f in tuning.SearchSpace.__dataclass_fields__]
    option_fields = [
        f
        for f in tuning.SearchOptions.__dataclass_fields__
        if f not in ("verbose", "process_per_trial")
    ]
    try:
        space = tuning.SearchSpace(**{f: getattr(args, f) for f in space_fields})
        options = tuning.SearchOptions(
            **{f: getattr(args, f) for f in option_fields},
            process_per_trial=not args.in_process,
            verbose=0 if args.quiet else 1,
        )
        summary = tuning.run_search(space, options)
    except tuning.SearchSpaceError as error:
        return fail(error.field, str(error))
    except (ValueError, FileNotFoundError, TrainingDiverged) as error:
        return fail(None, str(error))
    print(json.dumps(summary, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
