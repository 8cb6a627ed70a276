"""Test set-up shared by every test file.

Import order is owned here, not left to luck: with torch 2.14.1 and TensorFlow 2.21 in one process,
importing torchvision *after* TensorFlow (or after Keras on its TensorFlow backend) dies with a
segmentation fault, while importing it first works. pytest loads this file before any test module,
so torchvision (when installed) is imported before anything can pull in TensorFlow.

`@pytest.mark.one_backend("torch")` marks a test of backend-agnostic logic (files, command lines,
reports, configs, data decoded by numpy or tf.data, a subprocess whose backend is fixed): CI runs
the suite once per backend, so such a test runs on the one backend named (where it is cheapest)
and is skipped on the others. `KERAS_RESNET_EVERY_BACKEND=1` runs it on every backend.
"""

import os
import shutil
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# TensorFlow 2.21's oneDNN kernels crashed small ResNet fits on this CPU ("double free or
# corruption", 5 of 5 runs; 0 of 5 with it off). Subprocesses that tests start inherit this too.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
# JAX compiles the train step of every new model, and the tests fit the same tiny networks again
# and again (the third fit of one: 22 s of CPU compiling anew, 6 s from this cache). JAX's
# persistent cache keys an executable on the computation itself, so it serves only identical
# programs; one folder per session (the processes that tests start share it), removed at the end.
_JAX_CACHE = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _JAX_CACHE = tempfile.mkdtemp(prefix="keras-resnet-tests-jax-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _JAX_CACHE

try:
    import torchvision  # noqa: F401  (must precede tensorflow; see the docstring)
except ImportError:  # the parity tests skip themselves without torch
    pass

import keras  # noqa: E402  (after torchvision)
import pytest  # noqa: E402

BACKEND = keras.backend.backend()
BACKENDS = ("tensorflow", "jax", "torch")
EVERY_BACKEND = os.environ.get("KERAS_RESNET_EVERY_BACKEND") == "1"


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "one_backend(name): backend-agnostic logic, run on that Keras backend only "
        "(KERAS_RESNET_EVERY_BACKEND=1: on every backend)",
    )


def pytest_unconfigure(config):
    if _JAX_CACHE is not None:
        shutil.rmtree(_JAX_CACHE, ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    for item in items:
        marker = item.get_closest_marker("one_backend")
        if marker is None:
            continue
        (name,) = marker.args
        if name not in BACKENDS:
            raise pytest.UsageError(f"{item.nodeid}: one_backend({name!r}) is not a backend")
        if name != BACKEND and not EVERY_BACKEND:
            item.add_marker(
                pytest.mark.skip(reason=f"backend-agnostic: runs on {name} only (CI time)")
            )


def plan_of(config, dataset=None):
    """The `RunPlan` of `config` over `dataset` (or its own data), without a run folder: what
    a run resolves and checks before it trains."""
    from keras_resnet import training

    return training.plan_run(config, dataset, folder=False)
