"""The distribution: what the wheel holds and what it declares. (`keras-resnet train` with the
core dependencies alone: tests/test_keras_datasets.py.)"""

from __future__ import annotations

import email
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import keras_resnet

REPO = Path(__file__).resolve().parents[1]
# A checkout's local files that are no part of a build (virtual environments, runs, caches).
NOT_SOURCES = shutil.ignore_patterns(
    ".git",
    ".venv",
    ".ci-venv",
    "*.egg-info",
    "build",
    "dist",
    "saved_models",
    "runs",
    "__pycache__",
    ".*_cache",
    ".data",
    ".whl",
)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The wheel built from a copy of the checkout (the build writes build/ and *.egg-info)."""
    source = tmp_path_factory.mktemp("source") / "keras3-resnet"
    shutil.copytree(REPO, source, ignore=NOT_SOURCES)
    dist = tmp_path_factory.mktemp("dist")
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    command += ["--disable-pip-version-check", "-q", "-w", os.fspath(dist), os.fspath(source)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    (path,) = dist.glob("keras3_resnet-*.whl")
    with zipfile.ZipFile(path) as archive:
        yield archive


def metadata(wheel: zipfile.ZipFile) -> email.message.Message:
    (name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    return email.message_from_bytes(wheel.read(name))


@pytest.mark.one_backend("tensorflow")  # builds files only
def test_wheel_holds_the_package_and_its_license(wheel):
    names = set(wheel.namelist())
    info = f"keras3_resnet-{keras_resnet.__version__}.dist-info"
    assert wheel.read(f"{info}/licenses/LICENSE") == (REPO / "LICENSE").read_bytes()
    assert (REPO / "LICENSE").read_text().split()[:4] == ["Apache", "License", "Version", "2.0,"]
    assert "keras_resnet/py.typed" in names
    # Every module and data file of the package, and nothing else beside the metadata.
    package = {
        path.relative_to(REPO).as_posix()
        for path in (REPO / "keras_resnet").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }
    assert package <= names, sorted(package - names)
    assert {n for n in names if not n.startswith(info)} == package
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/", "experiments/"))]
    assert not [n for n in names if n.startswith("keras_resnet/benchmark/")]


@pytest.mark.one_backend("tensorflow")  # builds files only
def test_wheel_metadata(wheel):
    meta = metadata(wheel)
    assert meta["Name"] == "keras3-resnet"
    assert meta["Version"] == keras_resnet.__version__
    assert meta["License-Expression"] == "Apache-2.0"
    requirements = meta.get_all("Requires-Dist")
    pinned = [r for r in requirements if re.search(r"===?", r.split(";")[0])]
    assert pinned == []
    core = sorted(re.split(r"[<>=!~\[ ;]", r)[0].lower() for r in requirements if ";" not in r)
    assert core == sorted(
        [
            "h5py",
            "importlib_resources",
            "keras",
            "keras-tuner",
            "numpy",
            "pillow",
            "safetensors",
            "tensorflow",
            "tensorflow-datasets",
        ]
    )
    extras = set(meta.get_all("Provides-Extra"))
    assert {"export", "tune", "plots", "tensorboard", "jax", "torch", "timm", "test"} <= extras
    entry_points = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    assert "keras-resnet = keras_resnet.cli:main" in wheel.read(entry_points[0]).decode()
