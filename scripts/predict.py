"""Classify images with a trained or exported model and print the top-k classes.

    python scripts/predict.py saved_models/<name>/1 shoe.png shirt.jpg
    python scripts/predict.py saved_models/<run>/model.keras --dataset fashion_mnist --limit 20
    python scripts/predict.py saved_models/<name> photo.jpg --top-k 3 --json

The model: a SavedModel directory (or a TF Serving base directory: its latest version), a
.keras file or training run directory (loaded with safe_mode on), or an .onnx file. Images are
PNG or JPEG (any Pillow format, or .npy arrays) of any size: converted to the model's channels
(grayscale <-> RGB) and resized to its input size (bilinear).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

# Runnable from a checkout without installing the package (as scripts/train.py).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/predict.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", help="SavedModel directory, .keras/.onnx file or run directory")
    parser.add_argument("images", nargs="*", help="image files (PNG, JPEG, ...; .npy arrays)")
    parser.add_argument(
        "--dataset",
        help="classify a tensorflow-datasets split instead, e.g. "
        "fashion_mnist (read offline, as scripts/train.py does)",
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
    args = parser.parse_args(argv)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from keras_resnet.inference import (
        load_predictor,
        predict_images,
        read_image,
        top_k,
    )

    try:
        if bool(args.images) == bool(args.dataset):
            raise ValueError(
                "give image files or --dataset, not both or neither, received "
                f"{len(args.images)} image(s) and --dataset={args.dataset!r}"
            )
        if args.limit < 0:
            raise ValueError(f"--limit must be >= 0, received --limit={args.limit}")
        if args.top_k < 1:
            raise ValueError(f"--top-k must be >= 1, received --top-k={args.top_k}")
        predictor = load_predictor(args.model)
        labels = None
        if args.dataset:
            from keras_resnet.data import load_dataset

            data = load_dataset(args.dataset)
            x, y = (
                (data.x_test, data.y_test) if args.split == "test" else (data.x_train, data.y_train)
            )
            if args.limit:
                x, y = x[: args.limit], y[: args.limit]
            images = list(x)
            labels = [int(label) for label in y]
            sources = [f"{args.dataset}/{args.split}[{i}]" for i in range(len(images))]
        else:
            images = [read_image(path) for path in args.images]
            sources = list(args.images)
        probabilities = predict_images(predictor, images, batch_size=args.batch_size)
        ranked = top_k(probabilities, predictor.class_names, args.top_k)
    except (ValueError, OSError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")

    results = []
    for i, (source, best) in enumerate(zip(sources, ranked, strict=True)):
        entry = {"source": source, "top_k": best}
        if labels is not None:
            entry["label"] = {"index": labels[i], "class": predictor.class_names[labels[i]]}
        results.append(entry)
    correct = None
    if labels is not None:
        correct = sum(r["top_k"][0]["index"] == r["label"]["index"] for r in results)
    if args.json:
        document = {"model": os.fspath(predictor.path), "kind": predictor.kind, "results": results}
        if correct is not None:
            document["accuracy"] = correct / max(len(results), 1)
        print(json.dumps(document, indent=2))
        return 0
    for entry in results:
        guesses = ", ".join(f"{g['class']} {g['probability']:.3f}" for g in entry["top_k"])
        truth = f"  (label: {entry['label']['class']})" if "label" in entry else ""
        print(f"{entry['source']}: {guesses}{truth}")
    if correct is not None:
        print(f"top-1 accuracy: {correct}/{len(results)} = {correct / max(len(results), 1):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
