"""Export and inference (keras_resnet.serving): reload parity per format, portable `.keras`, the
architecture in export.json, mixed precision, atomic and concurrent versions, a full disk, safe
mode, SavedModel scanning, image bit depths and sizes, one-line errors. Runs on every backend:
SavedModel and ONNX are written on the TensorFlow backend (in a subprocess from JAX and torch),
and read back here with TensorFlow and onnxruntime. The backend-agnostic tests (command-line
errors, version folders, image decoding, the process without TensorFlow) run on one backend
(`one_backend`, tests/conftest.py)."""

from __future__ import annotations

import errno
import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import keras
import numpy as np
import pytest

import keras_resnet
from keras_resnet.cli import export as export_cli
from keras_resnet.cli import predict as predict_cli
from keras_resnet.data.idx import IDX_DATASETS
from keras_resnet.preprocessing import Preprocessing
from keras_resnet.serving import convert, files
from keras_resnet.serving import export as export_lib
from keras_resnet.serving import predict as inference

REPO = Path(__file__).resolve().parents[1]
CLASS_NAMES = list(IDX_DATASETS["fashion_mnist"][1])
HAS_TF = importlib.util.find_spec("tensorflow") is not None
HAS_ONNX = all(importlib.util.find_spec(m) for m in ("tf2onnx", "onnx", "onnxruntime"))
needs_tf = pytest.mark.skipif(not HAS_TF, reason="SavedModel export needs TensorFlow")
needs_onnx = pytest.mark.skipif(
    not (HAS_TF and HAS_ONNX), reason="ONNX export needs TensorFlow, tf2onnx and onnxruntime"
)


CLI = {"export": export_cli, "predict": predict_cli}


def _script(name: str):
    """The command's module (`keras-resnet export|predict`; scripts/*.py are shims over it)."""
    return CLI[name]


def _stand_in(policy: str | None = None, erasing: bool = True) -> keras.Model:
    """A model made the way scripts/train.py makes one: raw 0-255 pixels, augmentation that is
    inactive at inference, a 'normalize' layer, a tiny ResNet-18."""
    previous = keras.config.dtype_policy()
    if policy:
        keras.config.set_dtype_policy(policy)
    try:
        steps = [keras.layers.RandomFlip("horizontal", seed=1)]
        if erasing:
            steps.append(keras.layers.RandomErasing(value_range=(0, 255), seed=1))
        x = keras.Sequential(steps, name="augment")(keras.Input((32, 32, 1)))
        model = keras_resnet.ResNet18(
            input_tensor=x,
            stem="cifar",
            width=0.125,
            num_classes=10,
            normalization=([72.9], [90.0]),
        )
    finally:
        keras.config.set_dtype_policy(previous)
    # Non-trivial batch-norm statistics, so that parity is tested on a model that is not
    # freshly initialized.
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            mean, variance = layer.moving_mean, layer.moving_variance
            mean.assign(rng.normal(0, 0.1, mean.shape).astype("float32"))
            variance.assign(rng.uniform(0.5, 1.5, variance.shape).astype("float32"))
    return model


def _predict(model, x):
    return keras.ops.convert_to_numpy(model(x, training=False)).astype(np.float32)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A training run directory: model.keras and metrics.json, as scripts/train.py writes."""
    folder = tmp_path_factory.mktemp("runs") / "fmnist_resnet18"
    folder.mkdir()
    model = _stand_in()
    model.save(folder / "model.keras")
    (folder / "metrics.json").write_text(
        json.dumps(
            {"class_names": CLASS_NAMES, "dataset": "fashion_mnist", "image_shape": [32, 32, 1]}
        )
    )
    return folder


@pytest.fixture(scope="module")
def model(run_dir) -> keras.Model:
    return files.load_keras_model(run_dir / "model.keras")


@pytest.fixture(scope="module")
def images() -> dict[int, np.ndarray]:
    # Whole pixel values, as decoded images have: the serving signature takes pixels the way
    # Pillow does (rounded to integers) and the parity checks compare against the Keras model.
    rng = np.random.default_rng(7)
    return {b: rng.integers(0, 256, (b, 32, 32, 1)).astype("float32") for b in (1, 7)}


@pytest.fixture(scope="module")
def saved_model_dir(run_dir, tmp_path_factory) -> Path:
    if not HAS_TF:
        pytest.skip("SavedModel export needs TensorFlow")
    return export_lib.export_model(run_dir, output_dir=tmp_path_factory.mktemp("exports"))


# --- parity -------------------------------------------------------------------------------------


@needs_tf
def test_saved_model_layout_signature_and_parity(saved_model_dir, model, images):
    import tensorflow as tf

    assert saved_model_dir.name == "1"
    assert saved_model_dir.parent.name == "fmnist_resnet18-saved_model"
    assert {"saved_model.pb", "variables", "assets"} <= set(os.listdir(saved_model_dir))
    assert (saved_model_dir / "assets" / "class_names.txt").read_text().splitlines() == CLASS_NAMES
    metadata = json.loads((saved_model_dir / "assets" / "export.json").read_text())
    assert metadata["format"] == "saved_model" and metadata["image_shape"] == [32, 32, 1]
    assert not [p for p in saved_model_dir.parent.iterdir() if p.name.startswith(".tmp")]

    loaded = tf.saved_model.load(os.fspath(saved_model_dir))
    signature = loaded.signatures["serving_default"]
    (spec,) = signature.structured_input_signature[1].values()
    assert spec.dtype == tf.float32 and spec.shape.as_list() == [None, None, None, 1]
    (output,) = signature.structured_outputs.values()
    assert output.dtype == tf.float32
    for batch, x in images.items():
        got = loaded.serve(tf.constant(x)).numpy()
        assert got.shape == (batch, 10) and got.dtype == np.float32
        assert np.abs(got - _predict(model, x)).max() <= 1e-5
        assert np.allclose(got.sum(axis=1), 1.0, atol=1e-5)


@needs_tf
def test_saved_model_crops_other_sizes_inside_the_signature(saved_model_dir, model):
    """The signature takes whole images of any size and crops them by the model's record: the
    same pixels as the Pillow crop a run evaluates on (`preprocessing.crop_array`)."""
    import tensorflow as tf

    from keras_resnet import preprocessing as prep

    record = prep.data_config(saved_model_dir)
    x = np.random.default_rng(3).integers(0, 256, (3, 45, 20, 1)).astype("float32")
    crops = np.stack([prep.crop_array(image, record) for image in x]).astype("float32")
    expected = _predict(model, crops)
    loaded = tf.saved_model.load(os.fspath(saved_model_dir))  # keep it: it owns the variables
    got = loaded.serve(tf.constant(x)).numpy()
    assert np.abs(got - expected).max() <= 1e-5
    # predict sends the whole image and gets the same answer.
    predictor = inference.load_predictor(saved_model_dir.parent)  # base dir: latest version
    assert predictor.path == saved_model_dir and predictor.class_names == CLASS_NAMES
    assert predictor.whole_images and predictor.record == record
    assert np.abs(inference.predict_images(predictor, list(x)) - expected).max() <= 1e-5


@needs_onnx
def test_onnx_parity_and_metadata(run_dir, model, images, tmp_path):
    import onnx
    import onnxruntime

    path = export_lib.export_model(run_dir, format="onnx", output_dir=tmp_path)
    assert path == tmp_path / "fmnist_resnet18-onnx" / "1"
    proto = onnx.load(os.fspath(path / "model.onnx"))
    assert json.loads({p.key: p.value for p in proto.metadata_props}["class_names"]) == CLASS_NAMES
    session = onnxruntime.InferenceSession(
        os.fspath(path / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    (onnx_input,) = session.get_inputs()  # no captured constants turned into extra inputs
    assert onnx_input.name == "images" and onnx_input.type == "tensor(float)"
    assert not any(isinstance(d, int) for d in onnx_input.shape[:3]) and onnx_input.shape[3] == 1
    for batch, x in images.items():
        got = session.run(None, {"images": x})[0]
        assert got.shape == (batch, 10) and got.dtype == np.float32
        assert np.abs(got - _predict(model, x)).max() <= 1e-4


@needs_onnx
@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="patches the exporter in this process (TensorFlow backend)",
)
def test_an_onnx_model_onnxruntime_cannot_run_is_not_published(run_dir, tmp_path, monkeypatch):
    # Keras' own Normalization instead of the constant one: tf2onnx turns its captured mean and
    # variance into two more graph inputs, writes the file anyway, and no client can feed them.
    monkeypatch.setattr(
        convert,
        "ConstantNormalization",
        lambda mean, variance, **kwargs: keras.layers.Normalization(
            mean=mean.ravel(), variance=variance.ravel(), **kwargs
        ),
    )
    with pytest.raises(ValueError, match="onnxruntime cannot run") as info:
        export_lib.export_model(run_dir, format="onnx", output_dir=tmp_path)
    assert "\n" not in str(info.value) and list(tmp_path.iterdir()) == []


def test_keras_round_trip_is_identical(run_dir, model, images, tmp_path):
    path = export_lib.export_model(run_dir, format="keras", output_dir=tmp_path)
    assert path == tmp_path / "fmnist_resnet18-keras" / "1"
    reloaded = files.load_keras_model(path / "model.keras")
    for x in images.values():
        np.testing.assert_array_equal(_predict(reloaded, x), _predict(model, x))
    assert inference.load_predictor(path).class_names == CLASS_NAMES


def test_inference_model_drops_augmentation_and_keeps_outputs(model, images):
    stripped = convert.inference_model(model)
    names = [type(layer).__name__ for layer in convert.all_layers(stripped)]
    assert not [n for n in names if n.startswith("Random")]
    assert "Sequential" not in names  # the 'augment' block became one InferenceIdentity
    assert len(stripped.weights) == len(model.weights)
    for x in images.values():
        np.testing.assert_allclose(_predict(stripped, x), _predict(model, x), rtol=0, atol=1e-6)


@needs_tf
def test_mixed_precision_exports_float32_inputs_and_outputs(tmp_path, images):
    import tensorflow as tf

    # RandomErasing fails under mixed_float16 in Keras 3.15 (tf.range of float16); bfloat16 is
    # what the training script uses on GPUs.
    model = _stand_in("mixed_bfloat16")
    assert model.get_layer("conv1_conv").compute_dtype == "bfloat16"
    path = export_lib.export_model(model, output_dir=tmp_path, name="mixed")
    metadata = json.loads((path / "assets" / "export.json").read_text())
    assert "mixed_bfloat16" in metadata["dtype_policies"] and not metadata["compute_float32"]
    loaded = tf.saved_model.load(os.fspath(path))
    signature = loaded.signatures["serving_default"]
    (spec,) = signature.structured_input_signature[1].values()
    (output,) = signature.structured_outputs.values()
    assert spec.dtype == tf.float32 and output.dtype == tf.float32
    for x in images.values():
        got = loaded.serve(tf.constant(x)).numpy()
        assert got.dtype == np.float32
        # bfloat16 keeps 8 bits of mantissa: graph and eager round differently, and the
        # difference in a probability reached 0.036 in a fresh clone (2026-11-30): 0.05 bounds
        # the rounding while a wrong graph (another model, no softmax) is off by far more.
        assert np.abs(got - _predict(model, x)).max() <= 5e-2
    # ONNX computes in float32: it matches the float32 twin of the model. (On TensorFlow only:
    # from JAX and torch it is the same TensorFlow subprocess, and 20 s more.)
    if HAS_ONNX and keras.backend.backend() == "tensorflow":
        import onnxruntime

        path = export_lib.export_model(model, format="onnx", output_dir=tmp_path, name="mx")
        session = onnxruntime.InferenceSession(
            os.fspath(path / "model.onnx"), providers=["CPUExecutionProvider"]
        )
        twin = convert.as_float32(model)
        assert twin.get_layer("conv1_conv").compute_dtype == "float32"
        for x in images.values():
            got = session.run(None, {"images": x})[0]
            assert got.dtype == np.float32
            assert np.abs(got - _predict(twin, x)).max() <= 1e-4


# --- versions and atomic writes -----------------------------------------------------------------


@pytest.mark.one_backend("torch")
def test_versions_are_numbered_and_never_overwritten(run_dir, tmp_path):
    first = export_lib.export_model(run_dir, format="keras", output_dir=tmp_path, name="m")
    second = export_lib.export_model(run_dir, format="keras", output_dir=tmp_path, name="m")
    assert (first.name, second.name) == ("1", "2")
    before = (first / "model.keras").read_bytes()
    with pytest.raises(ValueError, match="export target exists"):
        export_lib.export_model(run_dir, format="keras", output_dir=tmp_path, name="m", version=1)
    assert (first / "model.keras").read_bytes() == before
    assert sorted(os.listdir(tmp_path / "m")) == ["1", "2"]
    if HAS_TF:  # TF Serving loads the highest version: formats must not share a name
        with pytest.raises(ValueError, match="holds keras versions"):
            export_lib.export_model(run_dir, output_dir=tmp_path, name="m")
        assert sorted(os.listdir(tmp_path / "m")) == ["1", "2"]


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if text.encode() in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


@needs_tf
@pytest.mark.parametrize("moment", ["written", "writing"])
def test_killed_export_leaves_no_version(moment, run_dir, tmp_path):
    """SIGKILL the exporting process once its export is whole in the temporary folder (the
    pause hook holds it just before the rename), or as soon as the folder exists (from JAX and
    torch, while the TensorFlow worker subprocess writes)."""
    env = dict(os.environ, **({export_lib.PAUSE_ENV: "120"} if moment == "written" else {}))
    process = subprocess.Popen(
        [
            sys.executable,
            os.fspath(REPO / "scripts" / "export.py"),
            os.fspath(run_dir),
            "--output-dir",
            os.fspath(tmp_path),
            "--name",
            "killed",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = tmp_path / "killed"
    pattern = ".tmp-export-*/assets/export.json" if moment == "written" else ".tmp-export-*"
    deadline = time.monotonic() + 240
    try:
        while not list(base.glob(pattern)):
            assert process.poll() is None, "the export exited before it could be killed"
            assert time.monotonic() < deadline, "the export did not start writing in time"
            time.sleep(0.05 if moment == "writing" else 0.2)
        if (
            moment == "writing"
            and keras.backend.backend() != "tensorflow"
            and Path("/proc").is_dir()
        ):
            (temp,) = base.glob(".tmp-export-*")
            # Killed as soon as the worker exists: it watches its parent from its first
            # moment after start-up, so no pause is needed for the kill to be "mid-write".
            while not _processes_mentioning(temp.name):
                assert process.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL
    (temp,) = base.glob(".tmp-export-*")
    if moment == "written":
        assert (temp / "saved_model.pb").is_file()
    elif Path("/proc").is_dir():  # a worker subprocess (JAX, torch) must not outlive it
        deadline = time.monotonic() + 60
        while _processes_mentioning(temp.name):
            assert time.monotonic() < deadline, "the export worker outlived the exporter"
            time.sleep(0.2)
        # It stopped when its parent died: an orphan would have finished the SavedModel.
        assert not (temp / "saved_model.pb").exists()
    assert [p.name for p in base.iterdir() if not p.name.startswith(".tmp-export-")] == []
    # The next export takes version 1 and removes the dead process's temporary folder.
    path = export_lib.export_model(run_dir, format="keras", output_dir=tmp_path, name="killed")
    assert path.name == "1" and sorted(os.listdir(base)) == ["1"]


# --- safety and bad input -----------------------------------------------------------------------


@pytest.mark.one_backend("torch")
def test_safe_mode_refuses_a_lambda_layer(tmp_path):
    inputs = keras.Input((4,))
    outputs = keras.layers.Lambda(lambda t: t * 2.0)(inputs)
    path = tmp_path / "lambda.keras"
    keras.Model(inputs, outputs).save(path)
    with pytest.raises(ValueError, match="refusing to load it with safe_mode on") as info:
        files.load_keras_model(path)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="safe_mode"):
        export_lib.export_model(path, format="keras", output_dir=tmp_path / "out")
    assert not any((tmp_path / "out").rglob("model.keras"))


def _cli_error(capsys, script: str, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as info:
        _script(script).main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.one_backend("torch")
def test_export_cli_bad_input_is_one_line_and_writes_nothing(run_dir, tmp_path, capsys):
    out = tmp_path / "out"
    err = _cli_error(
        capsys, "export", [os.fspath(tmp_path / "nope.keras"), "--output-dir", os.fspath(out)]
    )
    assert "model file not found" in err
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(b"PK\x03\x04 this is not a zip archive" * 10)
    err = _cli_error(
        capsys, "export", [os.fspath(corrupt), "--format", "keras", "--output-dir", os.fspath(out)]
    )
    assert "is not a whole .keras archive (cut short or damaged" in err
    # A real model file cut short: Keras itself says "File not found" of it.
    whole = (run_dir / "model.keras").read_bytes()
    cut = tmp_path / "cut.keras"
    cut.write_bytes(whole[: len(whole) // 2])
    err = _cli_error(
        capsys, "export", [os.fspath(cut), "--format", "keras", "--output-dir", os.fspath(out)]
    )
    assert f"model file {os.fspath(cut)!r} is not a whole .keras archive" in err
    assert "not found" not in err
    flipped = bytearray(whole)  # a byte changed inside an entry: its CRC check fails
    flipped[len(whole) // 3] ^= 0xFF
    cut.write_bytes(bytes(flipped))
    err = _cli_error(
        capsys, "export", [os.fspath(cut), "--format", "keras", "--output-dir", os.fspath(out)]
    )
    assert "is not a whole .keras archive" in err
    assert not out.exists() or not list(out.iterdir())
    _script("export").main(
        [os.fspath(run_dir), "--format", "keras", "--output-dir", os.fspath(out), "--name", "fixed"]
    )
    capsys.readouterr()
    before = (out / "fixed" / "1" / "model.keras").read_bytes()
    err = _cli_error(
        capsys,
        "export",
        [
            os.fspath(run_dir),
            "--format",
            "keras",
            "--output-dir",
            os.fspath(out),
            "--name",
            "fixed",
            "--version",
            "1",
        ],
    )
    assert "export target exists" in err
    assert (out / "fixed" / "1" / "model.keras").read_bytes() == before
    assert sorted(os.listdir(out / "fixed")) == ["1"]


@pytest.mark.one_backend("torch")
def test_export_without_tensorflow_says_so(run_dir, tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "tensorflow" else real(name, *a),
    )
    with pytest.raises(
        ValueError, match="SavedModel export needs TensorFlow, which is not installed"
    ) as info:
        export_lib.export_model(run_dir, output_dir=tmp_path)
    assert "\n" not in str(info.value) and list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="ONNX export needs TensorFlow"):
        export_lib.export_model(run_dir, format="onnx", output_dir=tmp_path)


NO_TF = """
import contextlib, importlib.abc, io, json, runpy, sys

class Block(importlib.abc.MetaPathFinder):  # as on a machine where TensorFlow is absent
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "tensorflow_datasets", "tf2onnx"):
            raise ImportError(f"No module named {name!r}")

sys.meta_path.insert(0, Block())
# Each command line in turn, as `python SCRIPT ARGS...` would run it; "{stdout}" in an argument
# stands for the previous command's output.
results = []
for argv in json.loads(sys.argv[1]):
    if results:
        argv = [a.replace("{stdout}", results[-1]["stdout"].strip()) for a in argv]
    sys.argv, out, err, code = argv, io.StringIO(), io.StringIO(), 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            runpy.run_path(argv[0], run_name="__main__")
        except SystemExit as exit:
            code = exit.code if isinstance(exit.code, int) else int(exit.code is not None)
    results.append({"returncode": code, "stdout": out.getvalue(), "stderr": err.getvalue()})
print(json.dumps(results))
"""


@pytest.mark.skipif(
    not (importlib.util.find_spec("jax") or importlib.util.find_spec("torch")),
    reason="without TensorFlow, Keras needs JAX or torch",
)
@pytest.mark.one_backend("tensorflow")
def test_without_tensorflow_for_real(run_dir, saved_model_dir, tmp_path):
    """In a process where TensorFlow cannot be imported (JAX backend): SavedModel and ONNX
    export say so in one line, --format keras works, and predict runs the .keras export. The
    five command lines run one after another in one such process (Keras' start-up, once)."""
    backend = "jax" if importlib.util.find_spec("jax") else "torch"
    env = dict(os.environ, KERAS_BACKEND=backend)
    export = os.fspath(REPO / "scripts" / "export.py")
    predict = os.fspath(REPO / "scripts" / "predict.py")
    refused_out = os.fspath(tmp_path / "refused")  # the refused exports' folder: never made
    out = os.fspath(tmp_path / "out")
    image = os.fspath(_png(tmp_path / "a.png", "L", (32, 32), 5))
    commands = [
        [export, os.fspath(run_dir), "--format", "saved_model", "--output-dir", refused_out],
        [export, os.fspath(run_dir), "--format", "onnx", "--output-dir", refused_out],
        [export, os.fspath(run_dir), "--format", "keras", "--output-dir", out],
        [predict, "{stdout}", image, "--json"],
        [predict, os.fspath(saved_model_dir), image],
    ]
    process = subprocess.run(
        [sys.executable, "-c", NO_TF, json.dumps(commands)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert process.returncode == 0, process.stderr[-3000:]
    results = json.loads(process.stdout.strip().splitlines()[-1])
    assert len(results) == 5
    for result, what in zip(results[:2], ("SavedModel", "ONNX"), strict=True):
        assert result["returncode"] == 2 and result["stderr"].splitlines()[-1] == (
            f"keras-resnet export: error: {what} export needs TensorFlow, which is not installed "
            "(pip install tensorflow); --format keras works without it"
        ), result
    assert not (tmp_path / "refused").exists()
    exported, predicted, refused = results[2:]
    assert exported["returncode"] == 0, exported["stderr"]
    assert predicted["returncode"] == 0, predicted["stderr"]
    assert json.loads(predicted["stdout"])["results"][0]["top_k"][0]["class"] in CLASS_NAMES
    assert refused["returncode"] == 2 and refused["stderr"].splitlines()[-1] == (
        "keras-resnet predict: error: loading a SavedModel needs TensorFlow, which is not "
        "installed (pip install tensorflow)"
    )


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="the same check runs in the TensorFlow worker from JAX and torch",
)
def test_channels_first_is_refused_in_one_line(tmp_path):
    model = keras_resnet.ResNet18(
        input_shape=(1, 32, 32),
        stem="cifar",
        width=0.125,
        num_classes=3,
        data_format="channels_first",
    )
    with pytest.raises(ValueError, match="only channels_last models are supported") as info:
        export_lib.export_model(model, output_dir=tmp_path)
    assert "\n" not in str(info.value) and list(tmp_path.iterdir()) == []


@pytest.mark.one_backend("torch")
def test_predict_cli_bad_input_is_one_line(run_dir, tmp_path, capsys):
    model_path = os.fspath(run_dir / "model.keras")
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    assert "cannot decode image" in _cli_error(capsys, "predict", [model_path, os.fspath(bad)])
    five = tmp_path / "five.npy"
    np.save(five, np.zeros((32, 32, 5), np.float32))
    err = _cli_error(capsys, "predict", [model_path, os.fspath(five)])
    assert "image has 5 channels and the model takes 1" in err
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_text("not a model")
    assert "is not a whole .keras archive" in _cli_error(
        capsys, "predict", [os.fspath(corrupt), os.fspath(five)]
    )
    assert "model not found" in _cli_error(
        capsys, "predict", [os.fspath(tmp_path / "x"), os.fspath(five)]
    )


@pytest.mark.one_backend("torch")
def test_predictor_checks_the_channel_count(run_dir):
    predictor = inference.load_predictor(run_dir / "model.keras")
    with pytest.raises(ValueError, match=r"1 channel\(s\), received shape \(2, 32, 32, 3\)"):
        predictor(np.zeros((2, 32, 32, 3), np.float32))
    # Grayscale <-> RGB and alpha are converted; other counts are refused.
    assert inference.to_channels(np.ones((5, 5, 3)), 1).shape == (5, 5, 1)
    assert inference.to_channels(np.ones((5, 5, 1)), 3).shape == (5, 5, 3)
    assert inference.to_channels(np.ones((5, 5, 4)), 1).shape == (5, 5, 1)
    with pytest.raises(ValueError, match="image has 2 channels and the model takes 4"):
        inference.to_channels(np.ones((5, 5, 2)), 4)


# --- predict ------------------------------------------------------------------------------------


def _png(path: Path, mode: str, size: tuple[int, int], seed: int) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    shape = (size[1], size[0]) + ((3,) if mode == "RGB" else ())
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)
    return path


@pytest.mark.parametrize("kind", ["keras", "saved_model"])
def test_predict_cli_json_top_k(kind, run_dir, model, tmp_path, capsys, request):
    if kind == "saved_model":
        if not HAS_TF:
            pytest.skip("needs TensorFlow")
        target = os.fspath(request.getfixturevalue("saved_model_dir"))
    else:
        target = os.fspath(run_dir)  # a run directory: model.keras + metrics.json
    rgb = _png(tmp_path / "photo.png", "RGB", (50, 40), 1)
    gray = _png(tmp_path / "gray.jpg", "L", (32, 32), 2)
    assert (
        _script("predict").main([target, os.fspath(rgb), os.fspath(gray), "--top-k", "4", "--json"])
        == 0
    )
    document = json.loads(capsys.readouterr().out)
    assert document["kind"] == kind and len(document["results"]) == 2
    predictor = inference.load_predictor(run_dir)
    x = [
        inference.prepare_image(inference.read_image(p, predictor.record), predictor)
        for p in (rgb, gray)
    ]
    expected = _predict(model, np.stack(x))
    for row, entry in zip(expected, document["results"], strict=True):
        # The same 4 highest probabilities, each with its class. Indices are compared through
        # their probabilities: a barely trained model has near ties, which the float rounding
        # of another load of the same weights may order the other way.
        indices = [g["index"] for g in entry["top_k"]]
        probabilities = [g["probability"] for g in entry["top_k"]]
        np.testing.assert_allclose(probabilities, np.sort(row)[::-1][:4], rtol=0, atol=1e-5)
        np.testing.assert_allclose(row[indices], probabilities, rtol=0, atol=1e-5)
        assert [g["class"] for g in entry["top_k"]] == [CLASS_NAMES[i] for i in indices]
        assert len(set(indices)) == 4
    # Plain text: one line per image.
    _script("predict").main([target, os.fspath(rgb), "--top-k", "2"])
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{rgb}: {CLASS_NAMES[int(np.argmax(expected[0]))]} ")


@pytest.mark.one_backend("torch")
def test_predict_cli_on_a_dataset_split(run_dir, capsys):
    data = pytest.importorskip("keras_resnet.data")
    if (
        data.find_source_dir("fashion_mnist") is None
        and not (Path(data.default_data_dir()) / "fashion_mnist").is_dir()
    ):
        pytest.skip("no local Fashion-MNIST (see keras_resnet/data.py)")
    assert (
        _script("predict").main(
            [
                os.fspath(run_dir),
                "--dataset",
                "fashion_mnist",
                "--limit",
                "5",
                "--top-k",
                "2",
                "--json",
            ]
        )
        == 0
    )
    document = json.loads(capsys.readouterr().out)
    results = document["results"]
    assert [r["source"] for r in results] == [f"fashion_mnist/test[{i}]" for i in range(5)]
    labels = data.load_dataset("fashion_mnist").y_test[:5]  # in TFDS' order, not the IDX files'
    assert [r["label"]["class"] for r in results] == [CLASS_NAMES[i] for i in labels]
    assert all(len(r["top_k"]) == 2 for r in results)
    correct = sum(r["top_k"][0]["index"] == r["label"]["index"] for r in results)
    assert document["accuracy"] == correct / 5


@pytest.mark.slow
@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason=(
        "20 s on TensorFlow, 60 s on JAX (compiling the train step); exports from JAX and "
        "torch are covered by the other tests, and run folders by the run_dir fixture"
    ),
)
def test_a_real_training_run_exports_and_predicts(tmp_path, capsys):
    """scripts/train.py's run folder (keras_resnet.training), 1 tiny epoch on synthetic data:
    its model.keras and checkpoints/best.keras both export, with the run's class names."""
    training = pytest.importorskip("keras_resnet.training")
    data = pytest.importorskip("keras_resnet.data")
    rng = np.random.default_rng(0)
    dataset = data.Dataset(
        name="synthetic",
        class_names=["a", "b", "c"],
        x_train=rng.integers(0, 256, (96, 16, 16, 1), dtype=np.uint8),
        y_train=rng.integers(0, 3, 96),
        x_test=rng.integers(0, 256, (32, 16, 16, 1), np.uint8),
        y_test=rng.integers(0, 3, 32),
    )
    run = tmp_path / "run"
    training.train(
        training.TrainConfig(
            model=keras_resnet.ResNetConfig.named("resnet18", stem="cifar", width=0.125),
            epochs=1,
            batch_size=32,
            val_size=32,
            tensorboard=False,
            track_test=False,
            verbose=0,
            output_dir=os.fspath(run),
        ),
        dataset=dataset,
    )
    trained = files.load_keras_model(run / "model.keras")
    x = rng.uniform(0, 255, (7, 16, 16, 1)).astype("float32")
    fmt = "saved_model" if HAS_TF else "keras"
    for source in (run, run / "checkpoints" / "best.keras"):
        path = export_lib.export_model(source, format=fmt, output_dir=tmp_path / "exports")
        predictor = inference.load_predictor(path)
        assert predictor.class_names == ["a", "b", "c"] and predictor.image_shape == (16, 16, 1)
        reference = trained if source == run else files.load_keras_model(source)
        assert np.abs(predictor(x) - _predict(reference, x)).max() <= 1e-5
        # The run's config.json gives the architecture: it rebuilds with the same parameters.
        architecture = json.loads((path / "assets" / "export.json").read_text())["model"]
        rebuilt = keras_resnet.build_model(keras_resnet.ResNetConfig.from_dict(architecture))
        assert rebuilt.count_params() == trained.count_params()
    assert sorted(os.listdir(tmp_path / "exports")) == [f"run-best-{fmt}", f"run-{fmt}"]


# --- portable .keras and the architecture in export.json ------------------------------------------

PORTABLE_CHECK = """
import sys, keras, numpy
model = keras.saving.load_model(sys.argv[1])
assert "keras_resnet" not in sys.modules, "keras_resnet was imported"
x = numpy.load(sys.argv[2])
numpy.save(sys.argv[3], keras.ops.convert_to_numpy(model(x, training=False)))
"""


def test_keras_export_loads_without_keras_resnet(run_dir, model, images, tmp_path):
    # The run's own file holds keras_resnet's BatchNormalization (written before exports were
    # plain Keras): it keeps loading here, where keras_resnet is imported.
    config = json.loads(__import__("zipfile").ZipFile(run_dir / "model.keras").read("config.json"))
    assert '"module": "keras_resnet.layers"' in json.dumps(config)
    path = export_lib.export_model(run_dir, format="keras", output_dir=tmp_path)
    x = images[7]
    np.save(tmp_path / "x.npy", x)
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            PORTABLE_CHECK,
            os.fspath(path / "model.keras"),
            os.fspath(tmp_path / "x.npy"),
            os.fspath(tmp_path / "y.npy"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,  # not the repository: keras_resnet is installed, but never imported there
    )
    assert result.returncode == 0, result.stderr[-2000:]
    difference = np.abs(np.load(tmp_path / "y.npy") - _predict(model, x)).max()
    assert difference <= 1e-6, difference


def _arch_config():
    return keras_resnet.ResNetConfig.named(
        "resnet18",
        width=0.125,
        stem="cifar",
        num_classes=10,
        input_shape=(32, 32, 1),
        normalization=((72.9,), (90.0,)),
        name="resnet18_fashion_mnist",
    )


FLAT_RUN_CONFIG = {  # config.json before it embedded ResNetConfig
    "model": "resnet18",
    "block": None,
    "width": 0.125,
    "expansion": None,
    "stem": "cifar",
    "stride_in": None,
    "groups": None,
    "width_per_group": None,
    "zero_init_residual": False,
    "dropout_rate": 0.0,
    "dataset": "fashion_mnist",
    "epochs": 1,
}


@pytest.mark.parametrize("form", ["embedded", "flat", "none"])
def test_export_records_the_architecture(form, tmp_path):
    config = _arch_config()
    trained = keras_resnet.build_model(config)
    rng = np.random.default_rng(1)
    trained.set_weights(
        [
            rng.uniform(0.5, 1.5, w.shape) if "variance" in w.path else rng.normal(0, 0.1, w.shape)
            for w in trained.weights
        ]
    )
    run = tmp_path / "run"
    run.mkdir()
    trained.save(run / "model.keras")
    if form != "none":
        run_config = {"model": config.to_dict()} if form == "embedded" else FLAT_RUN_CONFIG
        (run / "config.json").write_text(json.dumps({**run_config, "seed": 0}))
    path = export_lib.export_model(run, format="keras", output_dir=tmp_path / "out")
    metadata = json.loads((path / "assets" / "export.json").read_text())
    if form == "none":  # nothing to say which architecture it is: no guess is recorded
        assert "model" not in metadata
        return
    rebuilt = keras_resnet.build_model(keras_resnet.ResNetConfig.from_dict(metadata["model"]))
    assert [layer.name for layer in rebuilt.layers] == [layer.name for layer in trained.layers]
    assert rebuilt.count_params() == trained.count_params() == 177458
    reloaded = files.load_keras_model(path / "model.keras")
    rebuilt.set_weights(reloaded.get_weights())
    x = rng.uniform(0, 255, (3, 32, 32, 1)).astype("float32")
    assert np.abs(_predict(rebuilt, x) - _predict(trained, x)).max() <= 1e-6


@pytest.mark.one_backend("torch")
def test_run_model_options_reads_both_forms():
    config = _arch_config()
    assert files.run_model_options({"model": config.to_dict()}) == config.to_dict()
    flat = files.run_model_options(FLAT_RUN_CONFIG)
    assert flat["stage_blocks"] == [2, 2, 2, 2] and flat["width"] == 0.125
    assert flat["stem"] == "cifar" and flat["block"] == "basic"
    assert files.run_model_options({}) is None


# --- concurrent exports and a full disk -----------------------------------------------------------


@pytest.mark.one_backend("torch")
def test_two_concurrent_exports_take_consecutive_versions(run_dir, tmp_path, monkeypatch):
    """Both scan the folder (latest: none) before either renames: the second rename collides
    and takes the next version instead of failing."""
    barrier = threading.Barrier(2, timeout=120)
    publish = export_lib.publish_version

    def publish_together(*args, **kwargs):
        barrier.wait()  # both exports are written and about to rename
        return publish(*args, **kwargs)

    monkeypatch.setattr(export_lib, "publish_version", publish_together)
    results, errors = [], []

    def export():
        try:
            results.append(
                export_lib.export_model(run_dir, format="keras", output_dir=tmp_path, name="race")
            )
        except Exception as error:  # noqa: BLE001 - reported by the assert below
            errors.append(error)

    threads = [threading.Thread(target=export) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert errors == []
    assert sorted(p.name for p in results) == ["1", "2"]
    assert sorted(os.listdir(tmp_path / "race")) == ["1", "2"]
    for version in (1, 2):
        metadata = json.loads(
            (tmp_path / "race" / str(version) / "assets" / "export.json").read_text()
        )
        assert metadata["version"] == version


@needs_tf
@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="patches the SavedModel writer in this process (TensorFlow backend)",
)
def test_full_disk_during_a_saved_model_export(run_dir, tmp_path, monkeypatch, capsys):
    def write_out(self, filepath, **kwargs):
        Path(filepath, "saved_model.pb").write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    # keras.export.ExportArchive() makes an instance of its backend's class.
    archive = type(keras.export.ExportArchive())
    writer = next(c for c in archive.__mro__ if "write_out" in vars(c))
    monkeypatch.setattr(writer, "write_out", write_out)
    out = tmp_path / "out"
    err = _cli_error(capsys, "export", [os.fspath(run_dir), "--output-dir", os.fspath(out)])
    assert "export failed: no space left on device" in err
    assert not out.exists() or list(out.rglob("*")) == []  # no version, no temp, no empty name


# --- SavedModels are programs --------------------------------------------------------------------


def _writing_saved_model(folder: Path, target: Path) -> Path:
    """A SavedModel whose `serve` writes `target` (tf.io.write_file) each time it runs."""
    import tensorflow as tf

    class Writer(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 1], tf.float32)])
        def serve(self, images):
            tf.io.write_file(os.fspath(target), "written by the model")
            return tf.nn.softmax(tf.zeros([tf.shape(images)[0], 10]))

    module = Writer()
    tf.saved_model.save(module, os.fspath(folder), signatures={"serving_default": module.serve})
    return folder


@needs_tf
@pytest.mark.one_backend("tensorflow")
def test_a_saved_model_that_writes_files_is_refused(tmp_path, capsys):
    pytest.importorskip("modelscan")
    target = tmp_path / "pwned.txt"
    model = _writing_saved_model(tmp_path / "writer", target)
    image = _png(tmp_path / "a.png", "L", (32, 32), 5)
    err = _cli_error(capsys, "predict", [os.fspath(model), os.fspath(image)])
    assert "WriteFile (high)" in err and "--trust-model" in err
    assert not target.exists()
    with pytest.raises(ValueError, match="WriteFile"):
        inference.load_predictor(model)
    assert not target.exists()
    # --trust-model: loaded and run as the program it is.
    assert _script("predict").main([os.fspath(model), os.fspath(image), "--trust-model"]) == 0
    assert target.read_text() == "written by the model"


@needs_tf
@pytest.mark.one_backend("tensorflow")
def test_the_exports_own_saved_model_passes_the_scan(saved_model_dir):
    pytest.importorskip("modelscan")
    from keras_resnet.serving import safety

    assert safety.scan_saved_model(saved_model_dir) == []


# --- image bit depths and sizes ------------------------------------------------------------------


def _picture() -> np.ndarray:
    """A smooth 8-bit grayscale picture (what a shoe on a plain background looks like to a
    32x32 model: gradients, not noise)."""
    yy, xx = np.mgrid[0:32, 0:32]
    return np.clip(128 + 100 * np.sin(xx / 5.0) * np.cos(yy / 7.0), 0, 255).astype(np.uint8)


def test_16_bit_32_bit_and_float_images_match_the_8_bit_image(run_dir, tmp_path):
    from PIL import Image

    picture = _picture()
    Image.fromarray(picture, "L").save(tmp_path / "8.png")
    wide = picture.astype(np.uint16) * 257  # the same picture at 16 bits (255 -> 65535)
    Image.fromarray(wide).save(tmp_path / "16.png")  # mode I;16
    Image.fromarray(wide.astype(np.int32)).save(tmp_path / "32.tif")  # mode I
    Image.fromarray(picture.astype(np.float32) / 255).save(tmp_path / "f01.tif")  # mode F
    Image.fromarray(picture.astype(np.float32)).save(tmp_path / "f255.tif")
    modes = {name: Image.open(tmp_path / name).mode for name in ("16.png", "32.tif", "f01.tif")}
    assert modes == {"16.png": "I;16", "32.tif": "I", "f01.tif": "F"}
    predictor = inference.load_predictor(run_dir / "model.keras")
    reference = inference.read_image(tmp_path / "8.png")
    expected = inference.predict_images(predictor, [reference])[0]
    for name in ("16.png", "32.tif", "f01.tif", "f255.tif"):
        image = inference.read_image(tmp_path / name)
        assert image.shape == (32, 32, 1), name
        assert np.abs(image - reference).max() <= 1e-3, name
        got = inference.predict_images(predictor, [image])[0]
        assert int(np.argmax(got)) == int(np.argmax(expected)), name
        assert np.abs(got - expected).max() <= 1e-4, name


@pytest.mark.one_backend("torch")
def test_a_float_image_out_of_range_is_refused(tmp_path):
    from PIL import Image

    Image.fromarray(np.full((8, 8), 300.0, np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(ValueError, match=r"0-1 or 0-255, received 300\.\.300") as info:
        inference.read_image(tmp_path / "f.tif")
    assert "\n" not in str(info.value)


@pytest.mark.one_backend("torch")
def test_decompression_bomb_is_one_line_unless_allowed(run_dir, tmp_path, capsys, monkeypatch):
    from PIL import Image

    image = _png(tmp_path / "big.png", "L", (64, 64), 3)  # 4096 pixels
    for limit in (3000, 1000):  # over the limit (Pillow warns) and over twice it (it raises)
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
        err = _cli_error(capsys, "predict", [os.fspath(run_dir), os.fspath(image)])
        assert "decompression-bomb limit" in err and "--allow-large-images" in err
        assert Image.MAX_IMAGE_PIXELS == limit  # restored
    argv = [os.fspath(run_dir), os.fspath(image), "--allow-large-images"]
    assert _script("predict").main(argv) == 0
    assert capsys.readouterr().out.startswith(f"{image}: ")
    assert Image.MAX_IMAGE_PIXELS == 1000


@pytest.mark.one_backend("torch")
def test_large_jpegs_are_decoded_at_reduced_scale(tmp_path):
    from PIL import Image

    yy, xx = np.mgrid[0:512, 0:512]
    rgb = np.stack([xx % 256, yy % 256, (xx + yy) % 256], -1).astype(np.uint8)
    Image.fromarray(rgb, "RGB").save(tmp_path / "big.jpg", quality=90)
    assert inference.read_image(tmp_path / "big.jpg").shape == (512, 512, 3)
    # Pillow's JPEG draft: the smallest 1/2, 1/4 or 1/8 scale still >= what the crop needs.
    small = Preprocessing((32, 32), 3, "squash", 1.0)
    assert inference.read_image(tmp_path / "big.jpg", small).shape == (64, 64, 3)
    wide = Preprocessing((200, 100), 3, "squash", 1.0)
    assert inference.read_image(tmp_path / "big.jpg", wide).shape == (256, 256, 3)
    # The ImageNet recipe's crop at 224 resizes the shorter side to 256 first: half scale covers it.
    imagenet = Preprocessing.for_images(224, 3)
    assert inference.read_image(tmp_path / "big.jpg", imagenet).shape == (256, 256, 3)
    # A crop at 300 resizes the shorter side to 343 first: only the full size covers it.
    assert inference.read_image(tmp_path / "big.jpg", Preprocessing.for_images(300, 3)).shape == (
        512,
        512,
        3,
    )
