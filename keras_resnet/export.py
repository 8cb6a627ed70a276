"""Export a trained model for serving: SavedModel (TF Serving's layout), ONNX, or `.keras`.

    saved_models/<name>/<version>/          one version, never overwritten
        saved_model.pb, variables/, fingerprint.pb   (--format saved_model)
        model.onnx                                   (--format onnx)
        model.keras                                  (--format keras)
        assets/class_names.txt                       one class name per line
        assets/export.json                           format, input, output, source, versions

**The `serve` signature** (SavedModel; ONNX has the same graph, input `images`):

- input `images`: float32, shape (batch, height, width, channels), raw pixels in **0-255** (not
  0-1), any batch size and any height and width. Images of another size than the model's are
  resized inside the graph (a Keras `Resizing` layer: bilinear, no antialiasing). The channel count
  is the model's (1 for Fashion-MNIST, 3 for CIFAR): clients convert grayscale/RGB.
- output: float32 class probabilities (batch, num_classes), also for a model trained in mixed
  precision (the last layer runs in float32, and a float32 cast closes the graph).
- the normalization is the model's own first layer ('normalize'), so nothing else is needed.

Float32 0-255 rather than uint8 because it is what the Keras model itself takes (so `serve(x)`
and `model(x)` are compared on the same `x`), because a resized or decoded image is float
already, and because a mixed-precision model keeps a float32 interface. The cost is that nothing
stops a client sending 0-1 floats: document it where clients read it.

**How.** Keras' own export (`keras.export.ExportArchive`, and `Model.export(format="onnx")`,
which uses tf2onnx) always runs on the TensorFlow backend: in this process when the Keras backend
is TensorFlow, otherwise in a subprocess with `KERAS_BACKEND=tensorflow` that loads the `.keras`
file (weights are backend-neutral). One route for every backend, because Keras' direct routes
differ: the torch backend cannot write a SavedModel ("mismatch between the structure of `inputs`
and `dynamic_shapes`"), JAX writes one through jax2tf (an XlaCallModule lowered for the exporting
machine's platform only), and JAX-to-ONNX needs jax2onnx and its many dependencies. Without
TensorFlow installed, SavedModel and ONNX export stop with a one-line error; `--format keras`
still works.

Augmentation layers (`Random*`, or a model of them such as the training script's 'augment') are
swapped for `Identity` when they are the identity at inference, which is checked on a random
batch. They would otherwise leave random-number ops in the graph, with a seed variable updated
on every request, which ONNX cannot express.

**Atomic.** Each export is written to a hidden `.tmp-export-<pid>-<id>` folder beside the version
folders (TF Serving ignores names that are not numbers), then renamed into place: a reader sees a
whole version or none. An interrupted export leaves only that hidden folder, which the next
export removes once its process is gone. A version that exists is never overwritten.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from pathlib import Path

import keras
import numpy as np

from keras_resnet.inference import (
    CLASS_NAMES_FILE,
    KERAS_FILE,
    METADATA_FILE,
    ONNX_FILE,
    _one_line,
    check_channels_last,
    class_names_or_indices,
    installed,
    load_keras_model,
    load_predictor,
    read_class_names,
    read_metadata,
    require_tensorflow,
)

FORMATS = ("saved_model", "onnx", "keras")
FORMAT_ALIASES = {"tf_saved_model": "saved_model", "savedmodel": "saved_model"}
INPUT_NAME = "images"
TEMP_PREFIX = ".tmp-export-"
# Test hook: seconds to sleep once the export is written, before the rename, so that a test can
# kill the process at the moment an export is most "partial".
PAUSE_ENV = "KERAS_RESNET_EXPORT_PAUSE"


def _resolve_format(format: str) -> str:
    fmt = FORMAT_ALIASES.get(str(format).lower(), str(format).lower())
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, received format={format!r}")
    return fmt


def resolve_source(source: str | os.PathLike) -> Path:
    """The `.keras` file of a source: the file itself, or `model.keras` in a run directory."""
    path = Path(source)
    if path.is_dir():
        if (path / KERAS_FILE).is_file():
            return path / KERAS_FILE
        raise ValueError(
            f"no {KERAS_FILE} in the run directory, received source={os.fspath(path)!r}"
        )
    if not path.is_file():
        raise ValueError(f"model file not found, received source={os.fspath(path)!r}")
    return path


def _is_inference_identity(layer) -> bool:
    """True for a weightless augmentation layer (or model of them) that is the identity at
    inference, checked on a random batch of its input shape."""
    sublayers = (
        [layer]
        if not isinstance(layer, keras.Model)
        else list(layer._flatten_layers(include_self=False))
    )
    sublayers = [sub for sub in sublayers if not isinstance(sub, keras.layers.InputLayer)]
    if (
        not sublayers
        or layer.weights
        or not all(type(sub).__name__.startswith("Random") for sub in sublayers)
    ):
        return False
    try:
        shape = tuple(layer.input.shape)
    except (AttributeError, ValueError):
        return False
    if len(shape) < 2 or any(d is None for d in shape[1:]):
        return False
    probe = np.random.default_rng(0).uniform(0, 255, (2, *shape[1:])).astype("float32")
    output = keras.ops.convert_to_numpy(layer(probe, training=False))
    return output.shape == probe.shape and np.array_equal(output, probe)


class _ConstantNormalization(keras.layers.Layer):
    """`keras.layers.Normalization` with its mean and variance as constants of the traced graph.

    Keras' Normalization keeps a given mean and variance as eager tensors made at build time;
    a traced function captures them, and tf2onnx turns such captures into extra graph inputs
    that a client would have to feed. The same operations on arrays converted inside `call`
    become constants instead, and give the same numbers.
    """

    def __init__(self, mean: np.ndarray, variance: np.ndarray, **kwargs):
        super().__init__(**kwargs)
        self._mean, self._variance = mean, variance

    def call(self, inputs):
        inputs = keras.ops.convert_to_tensor(inputs, dtype=self.compute_dtype)
        mean = keras.ops.convert_to_tensor(self._mean)
        variance = keras.ops.convert_to_tensor(self._variance)
        return keras.ops.divide(
            keras.ops.subtract(inputs, mean),
            keras.ops.maximum(keras.ops.sqrt(variance), keras.config.epsilon()),
        )

    def compute_output_shape(self, input_shape):
        return input_shape


class _Identity(keras.layers.Layer):
    """Stands in for augmentation at inference (takes the `mask` and `training` it was called
    with, which `keras.layers.Identity` refuses)."""

    def call(self, inputs, mask=None, training=None):
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape


def inference_model(model: keras.Model) -> keras.Model:
    """The model as the export traces it; the same layer objects and weights.

    - augmentation that is the identity at inference becomes `Identity`;
    - a `Normalization` with a given mean and variance becomes `_ConstantNormalization`.

    A model that cannot be cloned (subclassed) is returned as it is.
    """

    def swap(layer):
        if _is_inference_identity(layer):
            return _Identity(name=layer.name)
        if (
            isinstance(layer, keras.layers.Normalization)
            and layer.input_mean is not None
            and not layer.invert
        ):
            return _ConstantNormalization(
                keras.ops.convert_to_numpy(layer.mean),
                keras.ops.convert_to_numpy(layer.variance),
                dtype=layer.dtype_policy,
                name=layer.name,
            )
        return layer

    # A subclassed model (neither functional nor Sequential) is exported unchanged.
    if not isinstance(model, keras.Sequential) and not hasattr(model, "_nodes_by_depth"):
        return model
    return keras.models.clone_model(model, clone_function=swap)


def as_float32(model: keras.Model) -> keras.Model:
    """The same architecture and weights computing in float32 (for a mixed-precision model).

    ONNX export needs it: Keras' ONNX export requires the float32 policy, tf2onnx fails on
    bfloat16 ("unsupported numpy dtype 'bfloat16'"), and onnxruntime's CPU kernels are float32.
    The weights of a mixed-precision model are float32 already, so nothing is rounded.
    """
    if all(
        getattr(layer, "dtype_policy", None) is None or layer.dtype_policy.name == "float32"
        for layer in model._flatten_layers()
    ):
        return model

    def to_float32(config):
        # Every dtype policy and half-precision dtype in the serialized model (nested models
        # included; a nested Sequential built under mixed_bfloat16 has a 'bfloat16' input)
        # becomes float32; integer and boolean dtypes stay as they are.
        if isinstance(config, dict):
            if config.get("class_name") == "DTypePolicy":
                return "float32"
            return {key: to_float32(value) for key, value in config.items()}
        if isinstance(config, list):
            return [to_float32(value) for value in config]
        if config in ("bfloat16", "float16") or (
            isinstance(config, str) and config.startswith("mixed_")
        ):
            return "float32"
        return config

    config = to_float32(keras.saving.serialize_keras_object(model))
    clone = keras.saving.deserialize_keras_object(config, safe_mode=True)
    # By layer name: a cloned functional model may list its weights in another order.
    originals = {layer.name: layer for layer in model._flatten_layers() if layer.weights}
    for layer in clone._flatten_layers():
        if layer.weights:
            layer.set_weights(originals[layer.name].get_weights())
    return clone


def serving_model(model: keras.Model, *, float32: bool = False) -> keras.Model:
    """A Keras model for the `serve` signature: float32 0-255 images of any size in, float32
    probabilities out. See the module docstring.

    Args:
        model: the trained model (raw pixels in, probabilities out).
        float32: compute in float32 even if the model was trained in mixed precision.
    """
    check_channels_last(model)
    if float32:
        model = as_float32(model)
    height, width, channels = model.input_shape[1:]
    images = keras.Input((None, None, channels), dtype="float32", name=INPUT_NAME)
    x = images
    if height is not None and width is not None:
        # Resizing to the same size is exactly the identity (half-pixel centres, scale 1).
        x = keras.layers.Resizing(
            height, width, interpolation="bilinear", dtype="float32", name="resize"
        )(x)
    x = inference_model(model)(x, training=False)
    x = keras.layers.Activation("linear", dtype="float32", name="probabilities")(x)
    return keras.Model(images, x, name="serving")


def model_info(model) -> dict:
    """Input shape, class count and dtype policies of a model, for `export.json`."""
    policies = sorted(
        {
            layer.dtype_policy.name
            for layer in model._flatten_layers()
            if hasattr(layer, "dtype_policy")
        }
    )
    return {
        "image_shape": list(model.input_shape[1:]),
        "num_classes": int(model.output_shape[-1]),
        "dtype_policies": policies,
    }


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

    Returns:
        `model_info` of the model, with `compute_float32`: whether the export computes in
        float32.
    """
    fmt = _resolve_format(format)
    _require_tf2onnx(fmt)
    directory = Path(directory)
    model = load_keras_model(model_path)
    info = model_info(model)
    if fmt == "keras":
        model.save(directory / KERAS_FILE)
        return info
    if keras.backend.backend() != "tensorflow":
        raise ValueError(
            f"format={fmt!r} is written on the TensorFlow backend, received "
            f"backend {keras.backend.backend()!r}"
        )
    float32 = float32 or fmt == "onnx" or info["dtype_policies"] == ["float32"]
    info["compute_float32"] = float32
    serving = serving_model(model, float32=float32)
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
        # tf2onnx traces a called model only ("The model provided has never called").
        height, width, channels = model.input_shape[1:]
        probe_shape = (height or 32, width or 32, channels)  # 32 px where the model takes any size
        serving(np.zeros((1, *probe_shape), "float32"))
        with warnings.catch_warnings():
            # Keras' tf2onnx patch probes `np.object`, which numpy 2 warns about.
            warnings.simplefilter("ignore", FutureWarning)
            serving.export(
                os.fspath(directory / ONNX_FILE),
                format="onnx",
                verbose=False,
                input_signature=[spec],
                opset_version=opset,
            )
        _verify_onnx(directory / ONNX_FILE, serving, probe_shape)
    return info


# The reload tolerance of an ONNX export (float32; measured differences are ~1e-6).
ONNX_TOLERANCE = 1e-4


def _verify_onnx(path: Path, serving: keras.Model, image_shape: tuple[int, int, int]) -> None:
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
            f"tf2onnx wrote an ONNX model that onnxruntime cannot run: {_one_line(error)}"
        ) from None
    expected = keras.ops.convert_to_numpy(serving(x, training=False))
    difference = float(np.abs(got - expected).max())
    if not difference <= ONNX_TOLERANCE:
        raise ValueError(
            f"the ONNX model differs from the Keras model by {difference:.2e} "
            f"(> {ONNX_TOLERANCE:g})"
        )


def _write_artifact_in_subprocess(
    model_path: Path, directory: Path, fmt: str, opset: int | None, float32: bool
) -> dict:
    """`write_artifact` in a fresh Python on the TensorFlow backend (for JAX and torch)."""
    env = dict(os.environ, KERAS_BACKEND="tensorflow")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    command = [
        sys.executable,
        "-m",
        "keras_resnet.export",
        "--worker",
        os.fspath(model_path),
        os.fspath(directory),
        fmt,
        str(opset or 0),
        str(int(float32)),
        str(os.getpid()),
    ]
    # No preexec_fn: it would fork a multithreaded JAX or torch process, which can deadlock.
    # The worker watches its parent instead (`_exit_with_parent`).
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        message = lines[-1] if lines else f"exit status {result.returncode}"
        raise ValueError(message.removeprefix("error: "))
    return json.loads(result.stdout.strip().splitlines()[-1])


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_temps(base: Path) -> None:
    """Removes the temporary folders of exports whose process is gone (killed mid-write)."""
    for entry in base.glob(TEMP_PREFIX + "*"):
        try:
            pid = int(entry.name[len(TEMP_PREFIX) :].split("-")[0])
        except ValueError:
            continue
        if pid != os.getpid() and not _pid_alive(pid):
            shutil.rmtree(entry, ignore_errors=True)


def _check_name(name: str) -> None:
    if not name or name in (".", "..") or "/" in name or os.sep in name or name.isdigit():
        raise ValueError(
            f"name must be a folder name (not a number, no '/'), received name={name!r}"
        )


def export_model(
    source,
    *,
    format: str = "saved_model",
    output_dir: str | os.PathLike = "saved_models",
    name: str | None = None,
    version: int | None = None,
    class_names: list[str] | None = None,
    opset: int | None = None,
    float32: bool = False,
) -> Path:
    """Exports a trained model to `output_dir/name/version/`, atomically.

    Args:
        source: a `.keras` file, a training run directory holding `model.keras` (and
            `metrics.json` with the class names), or a `keras.Model`.
        format: 'saved_model' (default; 'tf_saved_model' too), 'onnx' or 'keras'.
        output_dir: the folder of model names (TF Serving's base paths' parent).
        name: the model's name; default: `<run>-<format>` (the run directory's name, or the
            file's stem), e.g. 'resnet18_fashion_mnist-saved_model': the versions sit apart from
            the run's own files, and formats never share the version sequence TF Serving
            reads.
        version: the version number; default: the next free one. An existing version is an
            error, never overwritten.
        class_names: one per class; default: those stored beside the source, else indices.
        opset: ONNX opset (default: tf2onnx's).
        float32: SavedModel of a mixed-precision model: compute in float32 instead of the
            trained policy (ONNX always computes in float32). Inputs and outputs are float32
            either way.

    Returns:
        The version directory written.

    Raises:
        ValueError: one line, for a bad argument, a missing or unloadable model, an existing
            target, or a format whose exporter is not installed. Nothing is left behind.

    Example:
        >>> export_model("saved_models/resnet18_fashion_mnist")  # doctest: +SKIP
        PosixPath('saved_models/resnet18_fashion_mnist-saved_model/1')
    """
    fmt = _resolve_format(format)
    if version is not None and (
        isinstance(version, bool) or not isinstance(version, int) or version < 1
    ):
        raise ValueError(f"version must be an integer >= 1, received version={version!r}")
    if fmt in ("saved_model", "onnx"):
        require_tensorflow(
            "SavedModel export" if fmt == "saved_model" else "ONNX export",
            "; --format keras works without it",
        )
    _require_tf2onnx(fmt)
    scratch = None
    try:
        if isinstance(source, keras.Model):
            scratch = Path(tempfile.mkdtemp(prefix="keras_resnet_export_"))
            model_path, default_name, folder = scratch / KERAS_FILE, source.name, None
            source.save(model_path)
        else:
            model_path = resolve_source(source)
            folder = model_path.parent
            if model_path.name == KERAS_FILE:
                default_name = folder.name
            elif folder.name == "checkpoints":  # <run>/checkpoints/best.keras -> <run>-best
                default_name = f"{folder.parent.name}-{model_path.stem}"
            else:
                default_name = model_path.stem
        if class_names is None and folder is not None:
            class_names = read_class_names(folder)
        if name is None:
            name = f"{default_name}-{fmt}"
        _check_name(name)
        base = Path(output_dir) / name
        created = not base.exists()
        base.mkdir(parents=True, exist_ok=True)
        _remove_stale_temps(base)
        latest = max((int(p.name) for p in base.iterdir() if p.name.isdigit()), default=None)
        if latest is not None:
            existing = read_metadata(base / str(latest)).get("format")
            if existing and existing != fmt:
                raise ValueError(
                    f"{os.fspath(base)!r} holds {existing} versions; a {fmt} export needs a name "
                    f"of its own (TF Serving loads the highest version), received name={name!r}"
                )
        version = version or (latest or 0) + 1
        target = base / str(version)
        if target.exists():
            raise ValueError(
                f"export target exists: {os.fspath(target)!r} (versions are never "
                f"overwritten; leave --version out to take the next one)"
            )
        label = os.fspath(source) if folder is not None else f"keras.Model {source.name!r}"
        try:
            return _write_version(
                model_path,
                base,
                target,
                fmt,
                version,
                name,
                class_names,
                opset=opset,
                float32=float32,
                source_label=label,
            )
        except BaseException:
            if created and not any(base.iterdir()):
                base.rmdir()  # a failed first export leaves no empty <name>/ behind
            raise
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def _write_version(
    model_path: Path,
    base: Path,
    target: Path,
    fmt: str,
    version: int,
    name: str,
    class_names: list[str] | None,
    *,
    opset: int | None,
    float32: bool,
    source_label: str,
) -> Path:
    temp = base / f"{TEMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    temp.mkdir()
    try:
        if fmt == "keras" or keras.backend.backend() == "tensorflow":
            info = write_artifact(model_path, temp, fmt, opset=opset, float32=float32)
        else:
            info = _write_artifact_in_subprocess(model_path, temp, fmt, opset, float32)
        num_classes = info["num_classes"]
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(
                f"class_names must have {num_classes} names (the model's classes), "
                f"received {len(class_names)}"
            )
        names = class_names_or_indices(class_names, num_classes)
        metadata = {
            "name": name,
            "version": version,
            "format": fmt,
            "source": source_label,
            "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds"
            ),
            "input": {
                "name": INPUT_NAME,
                "dtype": "float32",
                "range": [0, 255],
                "layout": "NHWC",
                "shape": [None, None, None, info["image_shape"][-1]],
            },
            "output": {
                "dtype": "float32",
                "content": "class probabilities",
                "shape": [None, num_classes],
            },
            **info,
            "class_names": names,
            "keras_version": keras.__version__,
            "exported_from_backend": keras.backend.backend(),
        }
        if fmt == "onnx" and installed("onnx"):
            _add_onnx_metadata(temp / ONNX_FILE, names)
        assets = temp / "assets"
        assets.mkdir(exist_ok=True)
        (assets / CLASS_NAMES_FILE).write_text("\n".join(names) + "\n", encoding="utf-8")
        (assets / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
        pause = float(os.environ.get(PAUSE_ENV) or 0)
        if pause > 0:
            time.sleep(pause)
        if target.exists():  # taken by a concurrent export since the check
            raise ValueError(f"export target exists: {os.fspath(target)!r}")
        os.rename(temp, target)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return target


def check_parity(
    version_dir: str | os.PathLike, source, *, batch_sizes=(1, 7), seed: int = 0
) -> dict[int, float]:
    """Max |difference| between an export and the Keras model on this process' backend.

    Args:
        version_dir: an exported version directory.
        source: the `.keras` file, run directory or `keras.Model` that was exported.
        batch_sizes: batches of random 0-255 images of the model's input size.
        seed: seed of the images.

    Returns:
        `{batch_size: max |export(x) - model(x)|}` over the probabilities.
    """
    model = source if isinstance(source, keras.Model) else load_keras_model(resolve_source(source))
    predictor = load_predictor(version_dir)
    rng = np.random.default_rng(seed)
    shape = tuple(d or 32 for d in model.input_shape[1:])
    result = {}
    for batch in batch_sizes:
        x = rng.uniform(0, 255, (batch, *shape)).astype("float32")
        expected = keras.ops.convert_to_numpy(model(x, training=False)).astype("float32")
        result[batch] = float(np.abs(predictor(x) - expected).max())
    return result


def _add_onnx_metadata(path: Path, class_names: list[str]) -> None:
    """Stores the class names in the ONNX file's metadata too (`class_names`, JSON)."""
    import onnx

    model = onnx.load(os.fspath(path))
    entry = model.metadata_props.add()
    entry.key, entry.value = "class_names", json.dumps(class_names)
    onnx.save(model, os.fspath(path))


def _exit_with_parent(parent: int) -> None:
    """Ends this worker as soon as the exporting process `parent` is gone (killed mid-export),
    so that no orphan goes on writing into the temporary folder. The pid comes from the parent:
    by the time this runs (after importing Keras), it may be dead already."""
    import threading

    def watch() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(1)
            time.sleep(0.2)

    threading.Thread(target=watch, daemon=True).start()


def _worker(argv: list[str]) -> int:
    """`python -m keras_resnet.export --worker MODEL DIR FORMAT OPSET FLOAT32 PARENT_PID`: the
    subprocess side of `_write_artifact_in_subprocess` (OPSET 0: the default)."""
    model_path, directory, fmt, opset, float32, parent = argv
    _exit_with_parent(int(parent))
    try:
        info = write_artifact(
            model_path, directory, fmt, opset=int(opset) or None, float32=bool(int(float32))
        )
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # noqa: BLE001 - one line back to the parent
        print(f"error: export failed: {_one_line(error)}", file=sys.stderr)
        return 1
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m keras_resnet.export")
    parser.add_argument("--worker", nargs="+", required=True)
    sys.exit(_worker(parser.parse_args().worker))
