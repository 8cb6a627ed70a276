"""`keras-resnet summary MODEL`: the walkthrough table of a model (rows, parameters, FLOPs)."""

from __future__ import annotations

from keras_resnet.cli.options import (
    REPORTED,
    OneLineParser,
    add_arguments,
    add_backend,
    fail,
    given,
)
from keras_resnet.config import ARCHITECTURES, ResNetConfig

NOT_MODEL_OPTIONS = ("model", "input_shape", "backend")


def make_parser(prog: str = "keras-resnet summary") -> OneLineParser:
    parser = OneLineParser(prog=prog, description=__doc__)
    parser.add_argument("model", choices=sorted(ARCHITECTURES))
    parser.add_argument(
        "--input-shape", type=int, nargs=3, default=(224, 224, 3), metavar=("H", "W", "C")
    )
    add_arguments(parser, ResNetConfig, help_overrides={"num_classes": "default 1000"})
    add_backend(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    options = given(args, [f for f in vars(args) if f not in NOT_MODEL_OPTIONS])
    try:
        config = ResNetConfig.named(args.model, input_shape=tuple(args.input_shape), **options)
    except ValueError as error:
        fail(parser, error)

    from keras_resnet.analysis import format_table
    from keras_resnet.models import build_model

    try:
        table = format_table(build_model(config))
    except REPORTED as error:
        fail(parser, error)
    print(table)
    return 0
