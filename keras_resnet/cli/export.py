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
import os

from keras_resnet.cli.options import OneLineParser

# The formats, without importing the exporter (and Keras) for --help.
FORMATS = ("saved_model", "onnx", "keras", "litert")
FORMAT_ALIASES = ("tf_saved_model", "tflite")


def make_parser(prog: str = "keras-resnet export") -> OneLineParser:
    parser = OneLineParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "source",
        help="a .keras file, or a training run directory holding "
        "model.keras (and metrics.json with the class names)",
    )
    parser.add_argument(
        "--format",
        default="saved_model",
        choices=(*FORMATS, *FORMAT_ALIASES),
        help="default saved_model; litert: a .tflite of the network on the preprocessing "
        "record's crops",
    )
    parser.add_argument(
        "--output-dir",
        default="saved_models",
        help="parent of the <name>/<version>/ folders (default saved_models)",
    )
    parser.add_argument(
        "--name",
        help="model name (default: <run>-<format>, e.g. resnet18_fashion_mnist-saved_model)",
    )
    parser.add_argument(
        "--version",
        type=int,
        help="version number (default: the next one); an existing version is "
        "an error, never overwritten",
    )
    parser.add_argument(
        "--class-names",
        help="file with one class name per line (default: those stored with the source)",
    )
    parser.add_argument("--opset", type=int, help="ONNX opset (default: tf2onnx's)")
    parser.add_argument(
        "--float32",
        action="store_true",
        help="SavedModel of a mixed-precision model: compute in float32",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="reload the export and print its max |difference| from the Keras "
        "model (this backend) on random images, batch sizes 1 and 7",
    )
    parser.add_argument(
        "--backend", choices=("tensorflow", "jax", "torch"), help="Keras backend (any works)"
    )
    return parser


def read_class_names_file(path: str) -> list[str]:
    """One class name per non-empty line of `path` (the --class-names file)."""
    try:
        with open(path, encoding="utf-8") as file:
            return [line.rstrip("\n") for line in file if line.strip()]
    except OSError as error:
        raise ValueError(f"cannot read --class-names {path!r}: {error.strerror}") from None


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    # The backend is chosen before Keras is imported (KERAS_BACKEND); any works.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from keras_resnet.serving.export import check_parity, export_model

    try:
        class_names = read_class_names_file(args.class_names) if args.class_names else None
        path = export_model(
            args.source,
            format=args.format,
            output_dir=args.output_dir,
            name=args.name,
            version=args.version,
            class_names=class_names,
            opset=args.opset,
            float32=args.float32,
        )
        parity = check_parity(path, args.source) if args.check else None
    except (ValueError, OSError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    print(path)
    if parity is not None:
        import keras

        diffs = ", ".join(f"batch {b}: {d:.2e}" for b, d in parity.items())
        print(
            f"max |export - Keras model ({keras.backend.backend()})| on random 0-255 images: "
            f"{diffs}"
        )
    return 0
