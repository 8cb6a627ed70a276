"""`keras-resnet summary MODEL`: the walkthrough table of a model (rows, parameters, FLOPs)."""

from __future__ import annotations

from keras_resnet.cli.options import OneLineParser, add_arguments, error_message, given
from keras_resnet.config import ARCHITECTURES, ResNetConfig


def make_parser(prog: str = "keras-resnet summary") -> OneLineParser:
    parser = OneLineParser(prog=prog, description=__doc__)
    parser.add_argument("model", choices=sorted(ARCHITECTURES))
    parser.add_argument(
        "--input-shape", type=int, nargs=3, default=(224, 224, 3), metavar=("H", "W", "C")
    )
    add_arguments(parser, ResNetConfig, help_overrides={"num_classes": "default 1000"})
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)

    from keras_resnet.analysis import format_table
    from keras_resnet.models import build_model

    options = given(args, [f for f in vars(args) if f not in ("model", "input_shape")])
    try:
        config = ResNetConfig.named(args.model, input_shape=tuple(args.input_shape), **options)
    except ValueError as error:
        parser.exit(2, f"{parser.prog}: error: {error_message(error)}\n")
    print(format_table(build_model(config)))
    return 0
