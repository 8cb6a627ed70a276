"""The format writers of `keras_resnet.serving.export`: SavedModel, ONNX, LiteRT and portable
`.keras`, each written into an empty folder in this process and checked before it is published.

`write_artifact` is what `export_model` runs (in this process on the TensorFlow backend, otherwise
in a TensorFlow subprocess through `keras_resnet.serving.export.worker`). An ONNX or LiteRT file
is run in its own runtime against the Keras graph it came from (`verify_onnx`), since a converter
can write a file that does not load.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import keras
import numpy as np

from keras_resnet import preprocessing as prep
from keras_resnet.serving.convert import (
    INPUT_NAME,
    as_float32,
    inference_model,
    model_info,
    portable_model,
    serving_model,
)
from keras_resnet.serving.files import (
    KERAS_FILE,
    LITERT_FILE,
    ONNX_FILE,
    load_keras_model,
    model_config,
)
from keras_resnet.serving.formats import FORMAT_ALIASES, FORMATS
from keras_resnet.utils import installed, one_line

# The reload tolerance of an ONNX export (float32; measured differences are ~1e-6).
ONNX_TOLERANCE = 1e-4


def resolve_format(format: str) -> str:
    """The canonical name of an export format ('tf_saved_model' -> 'saved_model')."""
    fmt = FORMAT_ALIASES.get(str(format).lower(), str(format).lower())
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, received format={format!r}")
    return fmt


def _require_tf2onnx(fmt: str) -> None:
    if fmt == "onnx" and not installed("tf2onnx"):
        raise ValueError("ONNX export needs tf2onnx, which is not installed (pip install tf2onnx)")


def write_artifact(
    model_path: str | os.PathLike,
    directory: str | os.PathLike,
    format: str,
    *,
    opset: int | None = None,
    float32: bool = False,
    run_folder: str | os.PathLike | None = None,
) -> dict:
    """Writes one format of a `.keras` model into `directory` (which exists and is empty), in
    this process. SavedModel and ONNX need the TensorFlow backend.

    Args:
        model_path: the `.keras` file.
        directory: where to write.
        format: 'saved_model', 'onnx' or 'keras'.
        opset: ONNX opset (default: tf2onnx's).
        float32: SavedModel: compute in float32 even if the model is mixed precision (ONNX
            always does; `.keras` keeps the model as trained).
        run_folder: the training run the model comes from (its config.json gives the
            architecture), or None.

    Returns:
        `model_info` of the model, with `compute_float32` (SavedModel, ONNX) and `model` (the
        `ResNetConfig.to_dict()` of the architecture, when the run records it).
    """
    fmt = resolve_format(format)
    _require_tf2onnx(fmt)
    directory = Path(directory)
    model = load_keras_model(model_path)
    info = model_info(model)
    architecture = model_config(model, run_folder)
    if architecture is not None:
        info["model"] = architecture
    record = _record(model, model_path, run_folder)
    info["preprocessing"] = record.to_dict()
    if fmt == "keras":
        # Keras' own layers only, so that the file loads where keras_resnet is not installed;
        # the record is a member of the file (`preprocessing.add_record`).
        portable_model(model).save(directory / KERAS_FILE)
        prep.add_record(directory / KERAS_FILE, record)
        return info
    if keras.backend.backend() != "tensorflow":
        raise ValueError(
            f"format={fmt!r} is written on the TensorFlow backend, received "
            f"backend {keras.backend.backend()!r}"
        )
    float32 = float32 or fmt in ("onnx", "litert") or info["dtype_policies"] == ["float32"]
    info["compute_float32"] = float32
    if fmt == "litert":
        _write_litert(model, directory / LITERT_FILE)
        return info
    serving = serving_model(model, record, float32=float32)
    spec = keras.InputSpec(
        shape=(None, None, None, model.input_shape[-1]), dtype="float32", name=INPUT_NAME
    )
    if fmt == "saved_model":
        archive = keras.export.ExportArchive()
        archive.track(serving)
        archive.add_endpoint(
            "serve", lambda images: serving(images, training=False), input_signature=[spec]
        )
        archive.write_out(os.fspath(directory), verbose=False)
    else:
        _write_onnx(serving, directory / ONNX_FILE, model.input_shape[1:], spec, opset)
    return info


def _record(model: keras.Model, model_path, run_folder) -> prep.Preprocessing:
    """The model's preprocessing record: in the `.keras` file, beside it (its run's
    config.json), else the package's recipe for its input size."""
    for source in (model_path, run_folder):
        if source is None:
            continue
        try:
            return prep.data_config(source)
        except ValueError:
            continue
    return prep.record_of_model(model)


def _write_litert(model: keras.Model, path: Path) -> None:
    """A LiteRT (TFLite) file of the network on the record's crops (a fixed input size, as
    mobile runtimes take), through Keras' own exporter, checked in TensorFlow's interpreter
    against the Keras model before it is published."""
    network = inference_model(as_float32(model))
    shape = tuple(model.input_shape[1:])
    spec = keras.InputSpec(shape=(1, *shape), dtype="float32", name=INPUT_NAME)
    x = np.random.default_rng(0).uniform(0, 255, (1, *shape)).astype("float32")
    network(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        network.export(os.fspath(path), format="litert", verbose=False, input_signature=[spec])
    import tensorflow as tf

    try:
        interpreter = tf.lite.Interpreter(model_path=os.fspath(path))
        runner = interpreter.get_signature_runner()
        name = interpreter.get_signature_list()["serving_default"]["inputs"][0]
        got = next(iter(runner(**{name: x}).values()))
    except Exception as error:  # noqa: BLE001
        raise ValueError(
            f"the LiteRT converter wrote a file that does not run: {one_line(error)}"
        ) from None
    expected = keras.ops.convert_to_numpy(network(x, training=False))
    difference = float(np.abs(got - expected).max())
    if not difference <= ONNX_TOLERANCE:
        raise ValueError(
            f"the LiteRT model differs from the Keras model by {difference:.2e} "
            f"(> {ONNX_TOLERANCE:g})"
        )


def _write_onnx(serving: keras.Model, path: Path, image_shape, spec, opset: int | None) -> None:
    # tf2onnx traces a called model only ("The model provided has never called"). The probe
    # is larger than the model's input and not square, so that the check crops and resizes.
    height, width, channels = image_shape
    probe_shape = ((height or 32) * 3 // 2, (width or 32) * 4 // 3, channels)
    serving(np.zeros((1, *probe_shape), "float32"))
    with warnings.catch_warnings():
        # Keras' tf2onnx patch probes `np.object`, which numpy 2 warns about.
        warnings.simplefilter("ignore", FutureWarning)
        serving.export(
            os.fspath(path),
            format="onnx",
            verbose=False,
            input_signature=[spec],
            opset_version=opset,
        )
    verify_onnx(path, serving, probe_shape)


def verify_onnx(path: Path, serving: keras.Model, image_shape: tuple[int, int, int]) -> None:
    """Runs the ONNX file in onnxruntime against the Keras graph it came from. tf2onnx writes a
    file even when it could not convert an op (it only logs an error), so an unchecked export
    could put a model that does not load into a version folder."""
    if not installed("onnxruntime"):
        return
    import onnxruntime

    x = np.random.default_rng(0).uniform(0, 255, (2, *image_shape)).astype("float32")
    try:
        session = onnxruntime.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
        got = session.run(None, {INPUT_NAME: x})[0]
    except Exception as error:  # noqa: BLE001
        raise ValueError(
            f"tf2onnx wrote an ONNX model that onnxruntime cannot run: {one_line(error)}"
        ) from None
    expected = keras.ops.convert_to_numpy(serving(x, training=False))
    difference = float(np.abs(got - expected).max())
    if not difference <= ONNX_TOLERANCE:
        raise ValueError(
            f"the ONNX model differs from the Keras model by {difference:.2e} "
            f"(> {ONNX_TOLERANCE:g})"
        )


def _add_onnx_metadata(path: Path, class_names: list[str], record: dict) -> None:
    """Stores the class names and the preprocessing record in the ONNX file's metadata too
    (`class_names`, `preprocessing`: JSON)."""
    import onnx

    model = onnx.load(os.fspath(path))
    for key, value in (("class_names", class_names), ("preprocessing", record)):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    onnx.save(model, os.fspath(path))
