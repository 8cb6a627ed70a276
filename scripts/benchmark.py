"""Training and inference throughput of keras_resnet models, and of their peers, in one run.

    KERAS_BACKEND=jax python scripts/benchmark.py --models resnet50 --batch-size 256 \
        --precision mixed_bfloat16 --peers keras-fit,torch,torch-compile --json bench.json

Prints a table (img/s, step ms, MFU, peak device memory) and the ratios ours / peer, and writes
the same as JSON. See keras_resnet/benchmark.py for what each path measures.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PEERS = ("keras-fit", "keras-compiled", "torch", "torch-compile")
DEFAULT_PEERS = ["keras-fit", "torch", "torch-compile"]
PATHS = ("compiled", "fit", "pipeline")


def _csv(choices):
    def parse(text: str) -> list[str]:
        items = [t for t in text.split(",") if t and t != "none"]
        for item in items:
            if item not in choices:
                raise argparse.ArgumentTypeError(f"{item!r} is not one of {', '.join(choices)}")
        return items

    return parse


def build_parser() -> argparse.ArgumentParser:
    # Imports Keras (and so TensorFlow on its backend): torchvision must be imported before.
    from keras_resnet.benchmark import VARIANTS
    from keras_resnet.cli import add_model_arguments

    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--models",
        nargs="+",
        default=["resnet50"],
        help="keras_resnet model names, each optionally with builder options: "
        "resnet50:stride_in=1x1,width=0.5",
    )
    p.add_argument("--batch-size", type=int, default=256, help="per device")
    p.add_argument("--image-size", type=int, default=224, help="height = width of the input")
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--precision", choices=("mixed_bfloat16", "float32"), default="mixed_bfloat16")
    p.add_argument("--steps", type=int, default=20, help="timed steps")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls before timing")
    p.add_argument(
        "--paths",
        type=_csv(PATHS),
        default=["compiled"],
        help=f"training paths for our models, comma-separated: {', '.join(PATHS)}",
    )
    p.add_argument("--steps-per-execution", type=int, default=1)
    p.add_argument(
        "--variants",
        type=_csv(VARIANTS),
        default=[],
        help=f"experimental layers in our models, comma-separated: {', '.join(VARIANTS)}",
    )
    p.add_argument("--no-inference", action="store_true", help="skip inference throughput")
    p.add_argument(
        "--peers",
        type=_csv(PEERS),
        default=DEFAULT_PEERS,
        help=f"comma-separated, or 'none': {', '.join(PEERS)}",
    )
    p.add_argument("--data", choices=("synthetic", "real", "both"), default="synthetic")
    p.add_argument("--dataset", default="fashion_mnist", help="for --data real/both")
    p.add_argument(
        "--real-limit",
        type=int,
        help="use the first N training images (e.g. to resize fewer to 224 px)",
    )
    p.add_argument(
        "--pipeline-epochs",
        type=int,
        default=3,
        help="epochs of the 'pipeline' path (the first one compiles)",
    )
    p.add_argument(
        "--pipeline-no-augment",
        action="store_true",
        help="the 'pipeline' path without its augmentation layers (to cost them)",
    )
    p.add_argument("--devices", type=int, default=1, help="data parallel over this many devices")
    p.add_argument(
        "--sync-batch-norm",
        action="store_true",
        help="with --devices > 1: batch norm over the global batch (SPMD)",
    )
    p.add_argument(
        "--interleave-rounds",
        type=int,
        default=0,
        help="instead of the above: inference of each model and "
        "keras.applications.ResNet50 in alternation, this many rounds",
    )
    p.add_argument("--peak-tflops", type=float, help="device peak for MFU (default: datasheet)")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--profile", help="JAX: trace a few compiled training steps into this folder")
    add_model_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    # torchvision before TensorFlow (the other order segfaults), so before build_parser, which
    # imports Keras: --peers is read first on its own.
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("--peers", default=",".join(DEFAULT_PEERS))
    if "torch" in first.parse_known_args(argv)[0].peers and importlib.util.find_spec("torchvision"):
        import torchvision  # noqa: F401
    parser = build_parser()
    args = parser.parse_args(argv)
    from keras_resnet import benchmark

    try:
        results, info, ratio_rows = benchmark.run_suite(args)
    except ValueError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    print(benchmark.format_table(results, ratio_rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                benchmark.to_json(results, info, ratio_rows, {"argv": sys.argv[1:]}),
                f,
                indent=1,
                default=str,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
