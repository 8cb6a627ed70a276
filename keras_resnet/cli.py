"""Command lines of the package: `python -m keras_resnet summary ...`."""

from __future__ import annotations

import argparse
import sys

from keras_resnet.models import BLOCKS, MODELS, STEMS, STRIDE_IN


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The builder's options as flags; shared by every command that builds a model."""
    parser.add_argument("--block", choices=BLOCKS, help="override the depth's block")
    parser.add_argument("--width", type=float, help="multiplier on every stage's width (default 1)")
    parser.add_argument("--expansion", type=int, help="output channels per inner channel")
    parser.add_argument("--stem", choices=STEMS, help="default imagenet")
    parser.add_argument("--stride-in", choices=STRIDE_IN, help="v1.5 (3x3, default) or v1 (1x1)")
    parser.add_argument("--groups", type=int, help="groups of the bottleneck 3x3 (ResNeXt)")
    parser.add_argument("--width-per-group", type=int, help="64 for ResNet, 128 for wide")


def model_overrides(args: argparse.Namespace) -> dict:
    """The builder keyword arguments given on the command line (those left unset are omitted)."""
    names = ("block", "width", "expansion", "stem", "stride_in", "groups", "width_per_group")
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m keras_resnet", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    summary = commands.add_parser("summary", help="print the walkthrough table of a model")
    summary.add_argument("model", choices=sorted(MODELS))
    summary.add_argument(
        "--input-shape", type=int, nargs=3, default=(224, 224, 3), metavar=("H", "W", "C")
    )
    summary.add_argument("--num-classes", type=int, default=1000)
    add_model_arguments(summary)
    args = parser.parse_args(argv)

    from keras_resnet.analysis import format_table
    from keras_resnet.models import get_model

    try:
        model = get_model(
            args.model,
            input_shape=tuple(args.input_shape),
            num_classes=args.num_classes,
            **model_overrides(args),
        )
    except ValueError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    print(format_table(model))
    return 0


if __name__ == "__main__":
    sys.exit(main())
