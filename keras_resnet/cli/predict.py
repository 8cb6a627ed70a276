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
import dataclasses
import json
import os

from keras_resnet.cli.options import (
    REPORTED,
    OneLineParser,
    add_arguments,
    add_backend,
    fail,
    given,
    option,
)
from keras_resnet.utils import OptionError, check_choice, check_int

SPLITS = ("train", "test")


@dataclasses.dataclass(frozen=True)
class PredictOptions:
    """What `keras-resnet predict` classifies, and how; its flags are these fields. Invalid
    values raise `OptionError` naming the field."""

    model: str = dataclasses.field(
        metadata={
            "help": "SavedModel directory, .keras/.onnx file or run directory",
            "positional": True,
        }
    )
    images: tuple[str, ...] = option(
        (), "image files (PNG, JPEG, ...; .npy arrays)", positional=True
    )
    dataset: str | None = option(
        None,
        "classify a tensorflow-datasets split instead, e.g. fashion_mnist (read offline, as "
        "training does)",
        metavar="NAME",
    )
    split: str = option("test", "split of --dataset (default test)", choices=SPLITS)
    limit: int = option(10, "first N images of the split (default 10; 0: all)", metavar="N")
    top_k: int = option(3, "classes to print (default 3)", metavar="K")
    batch_size: int = option(64, "images per predict call (default 64)", metavar="N")
    json: bool = option(False, "print one JSON document")
    trust_model: bool = option(
        False,
        "load a SavedModel without refusing file-system or Python ops (it runs its program: "
        "only for a model from a source you trust)",
    )
    allow_large_images: bool = option(
        False, "decode images over Pillow's decompression-bomb limit (default: refused)"
    )

    def __post_init__(self):
        if bool(self.images) == bool(self.dataset):
            raise OptionError(
                "dataset",
                "give image files or --dataset, not both or neither, received "
                f"{len(self.images)} image(s) and --dataset={self.dataset!r}",
            )
        check_choice("split", self.split, SPLITS)
        check_int("limit", self.limit, 0)
        check_int("top_k", self.top_k, 1)
        check_int("batch_size", self.batch_size, 1)


def make_parser(prog: str = "keras-resnet predict") -> OneLineParser:
    parser = OneLineParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser, PredictOptions)
    add_backend(parser)
    return parser


def options_from_args(args: argparse.Namespace) -> PredictOptions:
    """The `PredictOptions` typed (raises OptionError naming the flag)."""
    return PredictOptions(**given(args, [f.name for f in dataclasses.fields(PredictOptions)]))


def load_inputs(options: PredictOptions, predictor) -> tuple[list, list[str], list | None]:
    """(images, sources, labels or None) from the image files or the --dataset split."""
    if options.dataset:
        from keras_resnet.data import load_dataset

        data = load_dataset(options.dataset)
        x, y = (
            (data.x_test, data.y_test) if options.split == "test" else (data.x_train, data.y_train)
        )
        if options.limit:
            x, y = x[: options.limit], y[: options.limit]
        sources = [f"{options.dataset}/{options.split}[{i}]" for i in range(len(x))]
        return list(x), sources, [int(label) for label in y]
    from keras_resnet.serving.predict import read_image

    images = [
        read_image(path, predictor.record, allow_large=options.allow_large_images)
        for path in options.images
    ]
    return images, list(options.images), None


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
    try:
        options = options_from_args(parser.parse_args(argv))
    except ValueError as error:
        fail(parser, error)
    from keras_resnet.serving.predict import load_predictor, predict_images, top_k

    try:
        predictor = load_predictor(options.model, trust=options.trust_model)
        images, sources, labels = load_inputs(options, predictor)
        probabilities = predict_images(predictor, images, batch_size=options.batch_size)
        ranked = top_k(probabilities, predictor.class_names, options.top_k)
    except REPORTED as error:  # a bad model, image or option: 2; a failed run: 1
        fail(parser, error)
    results = results_of(ranked, sources, labels, predictor.class_names)
    print_results(results, predictor, options.json)
    return 0
