"""`keras-resnet predict MODEL IMAGE...`: classify images with a trained or exported model and
print the top-k classes.

    keras-resnet predict saved_models/<name>/1 shoe.png shirt.jpg
    keras-resnet predict saved_models/<run>/model.keras --dataset fashion_mnist --limit 20
    keras-resnet predict saved_models/<name> photo.jpg --top-k 3 --json

The model: a SavedModel directory (or a TF Serving base directory: its latest version), a
.keras file or training run directory (loaded with safe_mode on), or an .onnx file. A SavedModel
is a program: one holding ops that reach the file system or run Python is refused unless
--trust-model is given. Images are PNG or JPEG (any Pillow format, 8 to 32 bits, or .npy arrays)
of any size: they become the pixels the run evaluated on, by the model's preprocessing record
(mapped to 0-255, converted to the model's channels, cropped as the run's evaluation crops).
"""

from __future__ import annotations

import argparse
import json
import os

from keras_resnet.cli.options import OneLineParser


def make_parser(prog: str = "keras-resnet predict") -> OneLineParser:
    parser = OneLineParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", help="SavedModel directory, .keras/.onnx file or run directory")
    parser.add_argument("images", nargs="*", help="image files (PNG, JPEG, ...; .npy arrays)")
    parser.add_argument(
        "--dataset",
        help="classify a tensorflow-datasets split instead, e.g. "
        "fashion_mnist (read offline, as training does)",
    )
    parser.add_argument(
        "--split",
        default="test",
        choices=("train", "test"),
        help="split of --dataset (default test)",
    )
    parser.add_argument(
        "--limit", type=int, default=10, help="first N images of the split (default 10; 0: all)"
    )
    parser.add_argument("--top-k", type=int, default=3, help="classes to print (default 3)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument(
        "--trust-model",
        action="store_true",
        help="load a SavedModel without refusing file-system or Python ops (it runs its "
        "program: only for a model from a source you trust)",
    )
    parser.add_argument(
        "--allow-large-images",
        action="store_true",
        help="decode images over Pillow's decompression-bomb limit (default: refused)",
    )
    parser.add_argument(
        "--backend", choices=("tensorflow", "jax", "torch"), help="Keras backend (any works)"
    )
    return parser


def check_args(args: argparse.Namespace) -> None:
    """Raises a one-line ValueError for a combination argparse cannot check."""
    if bool(args.images) == bool(args.dataset):
        raise ValueError(
            "give image files or --dataset, not both or neither, received "
            f"{len(args.images)} image(s) and --dataset={args.dataset!r}"
        )
    if args.limit < 0:
        raise ValueError(f"--limit must be >= 0, received --limit={args.limit}")
    if args.top_k < 1:
        raise ValueError(f"--top-k must be >= 1, received --top-k={args.top_k}")


def load_inputs(args: argparse.Namespace, predictor) -> tuple[list, list[str], list | None]:
    """(images, sources, labels or None) from the image files or the --dataset split."""
    if args.dataset:
        from keras_resnet.data import load_dataset

        data = load_dataset(args.dataset)
        x, y = (data.x_test, data.y_test) if args.split == "test" else (data.x_train, data.y_train)
        if args.limit:
            x, y = x[: args.limit], y[: args.limit]
        sources = [f"{args.dataset}/{args.split}[{i}]" for i in range(len(x))]
        return list(x), sources, [int(label) for label in y]
    from keras_resnet.serving.predict import read_image

    images = [
        read_image(path, predictor.record, allow_large=args.allow_large_images)
        for path in args.images
    ]
    return images, list(args.images), None


def results_of(ranked, sources, labels, class_names) -> list[dict]:
    results = []
    for i, (source, best) in enumerate(zip(sources, ranked, strict=True)):
        entry = {"source": source, "top_k": best}
        if labels is not None:
            entry["label"] = {"index": labels[i], "class": class_names[labels[i]]}
        results.append(entry)
    return results


def print_results(results: list[dict], predictor, as_json: bool) -> None:
    labelled = bool(results) and "label" in results[0]
    correct = sum(r["top_k"][0]["index"] == r["label"]["index"] for r in results if labelled)
    if as_json:
        document = {"model": os.fspath(predictor.path), "kind": predictor.kind, "results": results}
        if labelled:
            document["accuracy"] = correct / max(len(results), 1)
        print(json.dumps(document, indent=2))
        return
    for entry in results:
        guesses = ", ".join(f"{g['class']} {g['probability']:.3f}" for g in entry["top_k"])
        truth = f"  (label: {entry['label']['class']})" if "label" in entry else ""
        print(f"{entry['source']}: {guesses}{truth}")
    if labelled:
        print(f"top-1 accuracy: {correct}/{len(results)} = {correct / max(len(results), 1):.4f}")


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from keras_resnet.serving.predict import load_predictor, predict_images, top_k

    try:
        check_args(args)
        predictor = load_predictor(args.model, trust=args.trust_model)
        images, sources, labels = load_inputs(args, predictor)
        probabilities = predict_images(predictor, images, batch_size=args.batch_size)
        ranked = top_k(probabilities, predictor.class_names, args.top_k)
    except (ValueError, OSError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    print_results(results_of(ranked, sources, labels, predictor.class_names), predictor, args.json)
    return 0
