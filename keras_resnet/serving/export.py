"""Export a trained model for serving: SavedModel (TF Serving's layout), ONNX, or `.keras`.

    saved_models/<name>/<version>/          one version, never overwritten
        saved_model.pb, variables/, fingerprint.pb   (--format saved_model)
        model.onnx                                   (--format onnx)
        model.keras                                  (--format keras; plain Keras layers)
        assets/class_names.txt                       one class name per line
        assets/export.json                           format, input, output, source, versions,
                                                     and the architecture ('model')

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
already, and because a mixed-precision model keeps a float32 interface.

**How.** Keras' own export (`keras.export.ExportArchive`, and `Model.export(format="onnx")`,
which uses tf2onnx) always runs on the TensorFlow backend: in this process when the Keras backend
is TensorFlow, otherwise in a subprocess with `KERAS_BACKEND=tensorflow` that loads the `.keras`
file (weights are backend-neutral). Keras' direct routes differ by backend: torch cannot write a
SavedModel, JAX writes one through jax2tf for the exporting machine's platform only, and
JAX-to-ONNX needs jax2onnx. Without TensorFlow, SavedModel and ONNX export stop with a one-line
error; `--format keras` still works.

**Portable `.keras`.** The `.keras` export holds Keras' own layers only
(`keras_resnet.serving.convert.portable_model`): it loads with `keras.saving.load_model` where
keras_resnet is not installed.

**Atomic.** Each export is written to a hidden `.tmp-export-<pid>-<id>` folder beside the version
folders (TF Serving ignores names that are not numbers), then renamed into place: a reader sees a
whole version or none. Two exports to one name at once: the one that renames second takes the
next version (unless `version` was given). An interrupted export leaves only the hidden folder,
which the next export removes once its process is gone. A version is never overwritten.

The format writers themselves (`write_artifact`, the ONNX and LiteRT checks) are in
`keras_resnet.serving.export_formats`; this module versions, publishes and checks the exports.
"""

from __future__ import annotations

import dataclasses
import datetime
import errno
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import keras
import numpy as np

from keras_resnet.serving.convert import INPUT_NAME
from keras_resnet.serving.export_formats import (  # noqa: F401  (importable from here as before)
    FORMAT_ALIASES,
    FORMATS,
    ONNX_TOLERANCE,
    _add_onnx_metadata,
    _require_tf2onnx,
    resolve_format,
    verify_onnx,
    write_artifact,
)
from keras_resnet.serving.files import (
    CLASS_NAMES_FILE,
    KERAS_FILE,
    METADATA_FILE,
    ONNX_FILE,
    class_names_or_indices,
    load_keras_model,
    read_class_names,
    read_metadata,
    require_tensorflow,
)
from keras_resnet.serving.predict import load_predictor
from keras_resnet.subprocess_utils import run_isolated
from keras_resnet.utils import installed, one_line

TEMP_PREFIX = ".tmp-export-"
# Test hook: seconds to sleep once the export is written, before the rename, so that a test can
# kill the process (or race another export) at the moment an export is most "partial".
PAUSE_ENV = "KERAS_RESNET_EXPORT_PAUSE"
# Renames lost to concurrent exports of the same name before giving up.
MAX_VERSION_RETRIES = 100


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


@dataclasses.dataclass
class ExportJob:
    """One export, as `export_model` resolved it."""

    model_path: Path
    run_folder: Path | None
    fmt: str
    name: str
    class_names: list[str] | None
    opset: int | None
    float32: bool
    source_label: str


def _write_in_subprocess(job: ExportJob, directory: Path) -> dict:
    """`write_artifact` in a fresh Python on the TensorFlow backend (for JAX and torch), which
    dies with this process (`keras_resnet.subprocess_utils`)."""
    env = dict(os.environ, KERAS_BACKEND="tensorflow")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    args = [
        os.fspath(job.model_path),
        os.fspath(directory),
        job.fmt,
        str(job.opset or 0),
        str(int(job.float32)),
        os.fspath(job.run_folder) if job.run_folder is not None else "",
    ]
    result = run_isolated("keras_resnet.serving.export:worker", args, env=env, capture_output=True)
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


def _check_version(version) -> None:
    if version is not None and (
        isinstance(version, bool) or not isinstance(version, int) or version < 1
    ):
        raise ValueError(f"version must be an integer >= 1, received version={version!r}")


def _default_name(model_path: Path) -> str:
    """`<run>` for a run's model.keras, `<run>-best` for its checkpoints/best.keras, else the
    file's stem."""
    folder = model_path.parent
    if model_path.name == KERAS_FILE:
        return folder.name
    if folder.name == "checkpoints":
        return f"{folder.parent.name}-{model_path.stem}"
    return model_path.stem


def _latest_version(base: Path, fmt: str, name: str) -> int:
    """The highest version under `base` (0: none); refuses a base that holds another format."""
    latest = max((int(p.name) for p in base.iterdir() if p.name.isdigit()), default=0)
    if latest:
        existing = read_metadata(base / str(latest)).get("format")
        if existing and existing != fmt:
            raise ValueError(
                f"{os.fspath(base)!r} holds {existing} versions; a {fmt} export needs a name "
                f"of its own (TF Serving loads the highest version), received name={name!r}"
            )
    return latest


def _exists_error(target: Path) -> ValueError:
    return ValueError(
        f"export target exists: {os.fspath(target)!r} (versions are never overwritten; leave "
        "--version out to take the next one)"
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
            `metrics.json` with the class names, `config.json` with the architecture), or a
            `keras.Model`.
        format: 'saved_model' (default; 'tf_saved_model' too), 'onnx' or 'keras'.
        output_dir: the folder of model names (TF Serving's base paths' parent).
        name: the model's name; default: `<run>-<format>` (the run directory's name, or the
            file's stem), e.g. 'resnet18_fashion_mnist-saved_model'.
        version: the version number; default: the next free one. An existing version is an
            error, never overwritten.
        class_names: one per class; default: those stored beside the source, else indices.
        opset: ONNX opset (default: tf2onnx's).
        float32: SavedModel of a mixed-precision model: compute in float32 instead of the
            trained policy (ONNX always computes in float32).

    Returns:
        The version directory written.

    Raises:
        ValueError: one line, for a bad argument, a missing or unloadable model, an existing
            target, a format whose exporter is not installed, or a failed write (a full disk).
            Nothing is left behind.

    Example:
        >>> export_model("saved_models/resnet18_fashion_mnist")  # doctest: +SKIP
        PosixPath('saved_models/resnet18_fashion_mnist-saved_model/1')
    """
    fmt = resolve_format(format)
    _check_version(version)
    if fmt in ("saved_model", "onnx", "litert"):
        what = {"saved_model": "SavedModel", "onnx": "ONNX", "litert": "LiteRT"}[fmt]
        require_tensorflow(f"{what} export", "; --format keras works without it")
    _require_tf2onnx(fmt)
    with tempfile.TemporaryDirectory(prefix="keras_resnet_export_") as scratch:
        if isinstance(source, keras.Model):
            model_path, run_folder = Path(scratch) / KERAS_FILE, None
            source.save(model_path)
            label, default_name = f"keras.Model {source.name!r}", source.name
        else:
            model_path = resolve_source(source)
            run_folder, label = model_path.parent, os.fspath(source)
            default_name = _default_name(model_path)
            if class_names is None:
                class_names = read_class_names(run_folder)
        name = f"{default_name}-{fmt}" if name is None else name
        _check_name(name)
        job = ExportJob(model_path, run_folder, fmt, name, class_names, opset, float32, label)
        return _export_to(job, Path(output_dir) / name, version)


def _export_to(job: ExportJob, base: Path, version: int | None) -> Path:
    created = not base.exists()
    base.mkdir(parents=True, exist_ok=True)
    try:
        _remove_stale_temps(base)
        latest = _latest_version(base, job.fmt, job.name)
        if version is not None and (base / str(version)).exists():
            raise _exists_error(base / str(version))
        temp = base / f"{TEMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
        temp.mkdir()
        try:
            _write_files(job, temp, version or latest + 1)
            return publish_version(job, base, temp, version)
        finally:
            shutil.rmtree(temp, ignore_errors=True)
    except BaseException:
        if created and base.is_dir() and not any(base.iterdir()):
            base.rmdir()  # a failed first export leaves no empty <name>/ behind
        raise


def _write_files(job: ExportJob, temp: Path, version: int) -> None:
    """The export and its assets, into the temporary folder."""
    try:
        if job.fmt == "keras" or keras.backend.backend() == "tensorflow":
            info = write_artifact(
                job.model_path,
                temp,
                job.fmt,
                opset=job.opset,
                float32=job.float32,
                run_folder=job.run_folder,
            )
        else:
            info = _write_in_subprocess(job, temp)
        _write_assets(job, temp, version, info)
    except ValueError:
        raise
    except Exception as error:  # noqa: BLE001 - a full disk, a TensorFlow error: one line
        raise ValueError(f"export failed: {_describe(error)}") from None


def _describe(error: BaseException) -> str:
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return f"no space left on device ({one_line(error)})"
    return one_line(error)


def _write_assets(job: ExportJob, temp: Path, version: int, info: dict) -> None:
    num_classes = info["num_classes"]
    if job.class_names is not None and len(job.class_names) != num_classes:
        raise ValueError(
            f"class_names must have {num_classes} names (the model's classes), "
            f"received {len(job.class_names)}"
        )
    names = class_names_or_indices(job.class_names, num_classes)
    metadata = {
        "name": job.name,
        "version": version,
        "format": job.fmt,
        "source": job.source_label,
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "input": {
            "name": INPUT_NAME,
            "dtype": "float32",
            "range": [0, 255],
            "layout": "NHWC",
            # SavedModel and ONNX crop whole images inside (the preprocessing record); the
            # .keras and LiteRT files take the record's crops.
            "content": "whole images, any size"
            if job.fmt in ("saved_model", "onnx")
            else "the preprocessing record's crops",
            "shape": [None, None, None, info["image_shape"][-1]]
            if job.fmt in ("saved_model", "onnx")
            else [None, *info["image_shape"]],
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
    if job.fmt == "onnx" and installed("onnx"):
        _add_onnx_metadata(temp / ONNX_FILE, names, info["preprocessing"])
    assets = temp / "assets"
    assets.mkdir(exist_ok=True)
    (assets / CLASS_NAMES_FILE).write_text("\n".join(names) + "\n", encoding="utf-8")
    (assets / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")


def publish_version(job: ExportJob, base: Path, temp: Path, version: int | None) -> Path:
    """Renames the temporary folder to its version. A version taken by a concurrent export
    since the scan: the given `version` is an error; otherwise the next free one is taken
    (and export.json says which)."""
    pause = float(os.environ.get(PAUSE_ENV) or 0)
    if pause > 0:
        time.sleep(pause)
    for _ in range(MAX_VERSION_RETRIES):
        number = version or _latest_version(base, job.fmt, job.name) + 1
        target = base / str(number)
        if version is None:
            _set_metadata_version(temp, number)
        try:
            # rename(2) onto an existing non-empty folder fails (a version is never empty):
            # the check and the move are one atomic step.
            os.rename(temp, target)
            return target
        except OSError as error:
            if error.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise ValueError(f"export failed: {_describe(error)}") from None
            if version is not None:
                raise _exists_error(target) from None
    raise ValueError(f"export failed: {MAX_VERSION_RETRIES} concurrent exports to {base}")


def _set_metadata_version(temp: Path, number: int) -> None:
    path = temp / "assets" / METADATA_FILE
    metadata = json.loads(path.read_text(encoding="utf-8"))
    if metadata.get("version") != number:
        metadata["version"] = number
        path.write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")


def check_parity(
    version_dir: str | os.PathLike, source, *, batch_sizes=(1, 7), seed: int = 0
) -> dict[int, float]:
    """Max |difference| between an export and the Keras model on this process' backend.

    Args:
        version_dir: an exported version directory (written here, so trusted).
        source: the `.keras` file, run directory or `keras.Model` that was exported.
        batch_sizes: batches of random 0-255 images of the model's input size.
        seed: seed of the images.

    Returns:
        `{batch_size: max |export(x) - model(x)|}` over the probabilities.
    """
    model = source if isinstance(source, keras.Model) else load_keras_model(resolve_source(source))
    predictor = load_predictor(version_dir, trust=True)
    rng = np.random.default_rng(seed)
    shape = tuple(d or 32 for d in model.input_shape[1:])
    result = {}
    for batch in batch_sizes:
        # Whole 8-bit pixel values, as decoded images hold (the serving graph's crop rounds).
        x = rng.integers(0, 256, (batch, *shape)).astype("float32")
        expected = keras.ops.convert_to_numpy(model(x, training=False)).astype("float32")
        result[batch] = float(np.abs(predictor(x) - expected).max())
    return result


def worker(
    model_path: str, directory: str, fmt: str, opset: str, float32: str, run_folder: str
) -> int:
    """The subprocess side of `_write_in_subprocess` (run by `subprocess_utils.run_isolated`,
    which has armed `die_with_parent`): `write_artifact`, its info as one JSON line on stdout,
    or one error line on stderr. OPSET '0': the default; RUN_FOLDER '': none."""
    try:
        info = write_artifact(
            model_path,
            directory,
            fmt,
            opset=int(opset) or None,
            float32=bool(int(float32)),
            run_folder=run_folder or None,
        )
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # noqa: BLE001 - one line back to the parent
        print(f"error: export failed: {_describe(error)}", file=sys.stderr)
        return 1
    print(json.dumps(info))
    return 0
