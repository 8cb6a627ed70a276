#!/usr/bin/env python
"""Training and inference throughput of keras_resnet models, and of their peers, in one run.

    KERAS_BACKEND=jax python benchmarks/run.py --models resnet50 --batch-size 256 \\
        --precision mixed_bfloat16 --peers keras-fit,torch,torch-compile --json bench.json

Prints a table (img/s, step ms, MFU, peak device memory) and the ratios ours / peer, and writes
the same as JSON. docs/PERFORMANCE.md says what each path measures. Run it from the repository
root (`python benchmarks/run.py`, `python -m benchmarks.run`, or `keras-resnet benchmark --suite`);
`keras-resnet benchmark` without `--suite` is the installed package's small benchmark of one
model.

Exit status: 0; 2 for a bad option (one line naming the flag, before anything runs).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import sys
from pathlib import Path

# Nothing at the top imports Keras: `--backend` must be applied first, and on the TensorFlow
# backend torchvision must be imported before Keras (the other order segfaults); only `main`
# knows whether a torch peer runs.

PROG = "benchmarks/run.py"
# The comma-separated flags (the suite's tuple fields that are not plain lists on the CLI).
CSV_FIELDS = ("paths", "peers", "variants")


def _csv(choices: tuple[str, ...] | None):
    def parse(text: str) -> list[str]:
        items = [t for t in text.split(",") if t and t != "none"]
        for item in items:
            if choices is not None and item not in choices:
                raise argparse.ArgumentTypeError(f"{item!r} is not one of {', '.join(choices)}")
        return items

    return parse


def _import_torchvision_first(argv: list[str]) -> None:
    """torchvision must be imported before TensorFlow (the other order segfaults): before the
    parser, which imports Keras. Only `--peers` is read here; its default has torch peers."""
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("--peers", default=None)
    peers = first.parse_known_args(argv)[0].peers
    if (peers is None or "torch" in peers) and importlib.util.find_spec("torchvision"):
        import torchvision  # noqa: F401


def make_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The command line: one flag per `SuiteOptions` field, and the model flags generated from
    `ResNetConfig` (applied to every model of `--models`). Imports Keras."""
    from benchmarks.suite import PATHS, PEERS, SuiteOptions
    from benchmarks.variants import VARIANTS
    from keras_resnet.cli import BACKENDS
    from keras_resnet.cli.options import OneLineParser, add_arguments
    from keras_resnet.config import ResNetConfig

    parser = OneLineParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser, SuiteOptions)
    fields = {f.name: f for f in dataclasses.fields(SuiteOptions)}
    for name, choices in (("paths", PATHS), ("peers", PEERS), ("variants", VARIANTS)):
        parser.add_argument(
            "--" + name,
            type=_csv(choices),
            default=None,
            help=fields[name].metadata["help"] + "; comma-separated",
        )
    parser.add_argument("--backend", choices=BACKENDS, help="Keras backend (sets KERAS_BACKEND)")
    model = parser.add_argument_group("model options (every model of --models)")
    add_arguments(model, ResNetConfig, exclude=("num_classes",))
    return parser


def options_from_args(args: argparse.Namespace):
    """The `SuiteOptions` of parsed arguments: what was typed, the dataclass's defaults for the
    rest. Raises OptionError for a bad value."""
    from benchmarks.suite import SuiteOptions
    from keras_resnet.cli.options import given
    from keras_resnet.config import ResNetConfig

    suite_fields = [f.name for f in dataclasses.fields(SuiteOptions)]
    model_fields = [f.name for f in dataclasses.fields(ResNetConfig) if f.name != "num_classes"]
    values = given(args, [f for f in suite_fields if f != "model_options"])
    return SuiteOptions(**values, model_options=given(args, model_fields))


def main(argv: list[str] | None = None) -> int:
    """Runs the suite of `argv` (default: sys.argv[1:]); returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    from keras_resnet.cli import select_backend

    select_backend(argv)
    _import_torchvision_first(argv)
    parser = make_parser()
    args = parser.parse_args(argv)
    from benchmarks import report, suite
    from keras_resnet.cli.benchmark import check_writable
    from keras_resnet.cli.options import error_message
    from keras_resnet.utils import one_line, write_text_atomic

    try:
        options = options_from_args(args)
        suite.validate(options)
    except ValueError as error:
        parser.exit(2, f"{parser.prog}: error: {error_message(error)}\n")
    if options.json:
        try:
            check_writable(options.json)
        except OSError as error:
            parser.exit(
                2, f"{parser.prog}: error: argument --json: cannot write there: {one_line(error)}\n"
            )
    try:
        results, info, ratio_rows = suite.run_suite(options)
    except ValueError as error:
        parser.exit(2, f"{parser.prog}: error: {error_message(error)}\n")
    print(report.format_table(results, ratio_rows))
    if options.json:
        record = report.to_json(results, info, ratio_rows, {"argv": argv})
        write_text_atomic(options.json, json.dumps(record, indent=1, default=str))
    return 0


if __name__ == "__main__":
    if not __package__:
        # `python benchmarks/run.py`: the repository root, not this folder, first on the path, so
        # that `benchmarks` (and the checkout's keras_resnet) import from there.
        sys.path[0] = str(Path(__file__).resolve().parent.parent)
    sys.exit(main())
