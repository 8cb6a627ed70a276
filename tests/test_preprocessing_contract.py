"""What a run reports is what users serve: a folder of non-square photos (where a centre crop and
a squash of the whole image differ), trained for a few epochs, then classified by `predict`
through the run folder and through every export. Each gives the run's own accuracy on the same
files, and the probabilities of the run's own evaluation within 1e-4.

The images are vertical stripes whose period names the class: a model trained on centre crops
reads periods that a squashed image does not have (squashing 192x96 to 48 or 96 px shrinks the
width twice as much as the height), so serving squashed images misclassified most of them.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from keras_resnet import preprocessing as prep
from keras_resnet.data import pipelines
from keras_resnet.serving import predict as serving_predict
from keras_resnet.training import TrainConfig, train

REPO = Path(__file__).resolve().parents[1]
PERIODS = (6, 11, 19)  # pixels of the original 192 px width, one per class


def stripes(period: int, rng, size=(96, 192)) -> np.ndarray:
    height, width = size
    phase = rng.uniform(0, period)
    x = np.arange(width)
    row = 127.5 + 110 * np.sign(np.sin(2 * np.pi * (x + phase) / period))
    image = np.repeat(row[None, :], height, axis=0)[..., None].repeat(3, axis=-1)
    image = image + rng.normal(0, 12, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def write_folder(root: Path, per_class: int, test_per_class: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for split, count in (("train", per_class), ("test", test_per_class)):
        for label, period in enumerate(PERIODS):
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                if split == "test" and i % 3 == 2:  # some larger JPEGs: decoded at reduced scale
                    image = stripes(2 * period, rng, (192, 384))
                    Image.fromarray(image).save(folder / f"{i}.jpg", quality=95)
                else:
                    Image.fromarray(stripes(period, rng)).save(folder / f"{i}.png")
    return root


def run_evaluation(run: Path, folder: Path, record: prep.Preprocessing):
    """The test files and the probabilities the run's own evaluation gives them: the training
    pipeline's decoder (the evaluation crops) and the run's model.keras."""
    model = keras.saving.load_model(run / "model.keras", compile=False)
    files = sorted((folder / "test").glob("*/*"))
    decode = pipelines.Decoder(os.fspath(folder), record.image_size[0], 3, False, None, record)
    crops = np.stack([decode(os.fsencode(f.relative_to(folder)), 0) for f in files])
    probabilities = keras.ops.convert_to_numpy(model(crops.astype("float32"), training=False))
    labels = np.array([int(f.parent.name.removeprefix("class")) for f in files])
    return files, probabilities, labels


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A folder of stripes trained at 96 px (the ImageNet recipe's centre crop)."""
    root = tmp_path_factory.mktemp("contract")
    folder = write_folder(root / "stripes", per_class=24, test_per_class=6)
    config = TrainConfig.create(
        dataset=str(folder),
        image_size=96,
        width=0.25,
        epochs=6,
        batch_size=12,
        val_size=0.125,
        learning_rate=0.05,
        warmup_epochs=0.5,
        output_dir=str(root / "run"),
        verbose=0,
        tensorboard=False,
    )
    metrics = train(config)
    return folder, root / "run", metrics


def test_record_written_into_every_run_file(trained):
    _, run, metrics = trained
    record = json.loads((run / "config.json").read_text())["preprocessing"]
    assert record["crop_mode"] == "center" and record["image_size"] == [96, 96]
    assert record["crop_pct"] == 0.875 and record["resize_size"] == 109
    assert metrics["preprocessing"] == record
    assert prep.read_keras_record(run / "model.keras").to_dict() == record
    assert prep.data_config(run).to_dict() == record


def test_predict_on_the_run_folder_gives_the_runs_figure(trained):
    folder, run, metrics = trained
    record = prep.data_config(run)
    files, expected, labels = run_evaluation(run, folder, record)
    assert metrics["accuracy"] == pytest.approx(float((expected.argmax(-1) == labels).mean()))
    assert metrics["accuracy"] > 0.5  # it learned (chance: 1/3), so agreeing is not trivial
    predictor = serving_predict.load_predictor(run)
    images = [serving_predict.read_image(f, predictor.record) for f in files]
    got = serving_predict.predict_images(predictor, images)
    assert np.abs(got - expected).max() < 1e-4
    # Squashing the whole image (what serving did before the record) gives other pixels.
    squashed = [
        keras.ops.convert_to_numpy(keras.ops.image.resize(image, (96, 96))) for image in images
    ]
    model = keras.saving.load_model(run / "model.keras", compile=False)
    old = keras.ops.convert_to_numpy(model(np.stack(squashed), training=False))
    assert np.abs(old - expected).max() > 1e-2


@pytest.mark.one_backend("tensorflow")
def test_every_export_gives_the_runs_figure(trained, tmp_path):
    """SavedModel (TF Serving's signature, whole images in), ONNX (whole images), the portable
    .keras and LiteRT (crops): the same top-1 as the run's evaluation, probabilities within
    1e-4, through `keras-resnet predict --json` as a user runs it."""
    from keras_resnet.serving import export_model

    folder, run, metrics = trained
    record = prep.data_config(run)
    files, expected, labels = run_evaluation(run, folder, record)
    for fmt in ("saved_model", "onnx", "keras", "litert"):
        version = export_model(run, format=fmt, output_dir=tmp_path)
        info = json.loads((version / "assets" / "export.json").read_text())
        assert info["preprocessing"] == record.to_dict()
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "keras_resnet",
                "predict",
                os.fspath(version),
                *map(os.fspath, files),
                "--json",
                "--top-k",
                "3",
            ],
            capture_output=True,
            text=True,
            cwd=REPO,
            check=True,
        )
        results = json.loads(out.stdout)["results"]
        got = np.zeros_like(expected)
        for row, entry in enumerate(results):
            for guess in entry["top_k"]:
                got[row, guess["index"]] = guess["probability"]
        assert np.abs(got - expected).max() < 1e-4, fmt
        top1 = np.array([entry["top_k"][0]["index"] for entry in results])
        assert float((top1 == labels).mean()) == pytest.approx(metrics["accuracy"]), fmt
