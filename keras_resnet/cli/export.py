"""`keras-resnet export SOURCE`: export a trained model for serving (SavedModel, ONNX, .keras,
LiteRT).

    keras-resnet export saved_models/<run>               # saved_models/<run>-saved_model/1/
    keras-resnet export saved_models/<run> --format onnx # saved_models/<run>-onnx/1/
    keras-resnet export model.keras --name fmnist --version 3

The SavedModel's `serve` signature (and the ONNX graph) takes float32 images of raw 0-255
pixels, shape (batch, height, width, channels), any batch size and image size, crops them as the
run evaluated (the preprocessing record, in export.json too) and returns float32 class
probabilities. See keras_resnet/serving/export.py and docs/EXPORT.md.
"""

from __future__ import annotations

import argparse
import dataclasses

from keras_resnet.cli.options import (
    REPORTED,
    OneLineParser,
    add_arguments,
    add_backend,
    fail,
    given,
    option,
)
from keras_resnet.serving.formats import FORMAT_ALIASES, FORMATS
from keras_resnet.utils import OptionError, check_choice, check_int, one_line


@dataclasses.dataclass(frozen=True)
class ExportOptions:
    """What `keras-resnet export` does; its flags are these fields. Invalid values raise
    `OptionError` naming the field."""

    source: str = dataclasses.field(
        metadata={
            "help": "a .keras file, or a training run directory holding model.keras (and "
            "metrics.json with the class names)",
            "positional": True,
        }
    )
    format: str = option(
        "saved_model",
        "default saved_model; litert: a .tflite of the network on the preprocessing record's crops",
        choices=(*FORMATS, *FORMAT_ALIASES),
    )
    output_dir: str = option(
        "saved_models",
        "parent of the <name>/<version>/ folders (default saved_models)",
        metavar="DIR",
    )
    name: str | None = option(
        None, "model name (default: <run>-<format>, e.g. resnet18_fashion_mnist-saved_model)"
    )
    version: int | None = option(
        None,
        "version number (default: the next one); an existing version is an error, never "
        "overwritten",
        metavar="N",
    )
    class_names: str | None = option(
        None,
        "file with one class name per line (default: those stored with the source)",
        metavar="FILE",
    )
    opset: int | None = option(None, "ONNX opset (default: tf2onnx's)", metavar="N")
    float32: bool = option(False, "SavedModel of a mixed-precision model: compute in float32")
    check: bool = option(
        False,
        "reload the export and print its max |difference| from the Keras model (this backend) "
        "on random images, batch sizes 1 and 7",
    )

    def __post_init__(self):
        check_choice("format", self.format, (*FORMATS, *FORMAT_ALIASES))
        for name in ("version", "opset"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name), 1)


def make_parser(prog: str = "keras-resnet export") -> OneLineParser:
    parser = OneLineParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser, ExportOptions)
    add_backend(parser)
    return parser


def options_from_args(args: argparse.Namespace) -> ExportOptions:
    """The `ExportOptions` typed (raises OptionError naming the flag)."""
    return ExportOptions(**given(args, [f.name for f in dataclasses.fields(ExportOptions)]))


def read_class_names_file(path: str) -> list[str]:
    """One class name per non-empty line of `path` (the --class-names file); OptionError naming
    the flag when it cannot be read."""
    try:
        with open(path, encoding="utf-8") as file:
            return [line.rstrip("\n") for line in file if line.strip()]
    except OSError as error:
        reason = error.strerror or one_line(error)
        raise OptionError("class_names", f"cannot read {path!r}: {reason}") from None


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    try:
        options = options_from_args(args)
    except ValueError as error:
        fail(parser, error)
    # The backend was chosen before Keras is first imported (KERAS_BACKEND); any works.
    from keras_resnet.serving.export import check_parity, export_model

    try:
        class_names = read_class_names_file(options.class_names) if options.class_names else None
        path = export_model(
            options.source,
            format=options.format,
            output_dir=options.output_dir,
            name=options.name,
            version=options.version,
            class_names=class_names,
            opset=options.opset,
            float32=options.float32,
        )
        parity = check_parity(path, options.source) if options.check else None
    except REPORTED as error:  # a bad source or option: 2; a failed export: 1
        fail(parser, error)
    print(path)
    if parity is not None:
        import keras

        diffs = ", ".join(f"batch {b}: {d:.2e}" for b, d in parity.items())
        print(
            f"max |export - Keras model ({keras.backend.backend()})| on random 0-255 images: "
            f"{diffs}"
        )
    return 0
