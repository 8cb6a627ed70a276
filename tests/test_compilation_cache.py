"""The persistent compilation cache (`keras_resnet.training.compilation`): on by default in the
user's cache folder, a folder of one's choice, or off; a folder the user gave the backend is
kept. Each process is a subprocess of its own: JAX and TensorFlow read these settings once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from keras_resnet.training import compilation
from keras_resnet.utils import OptionError

# One epoch of a tiny ResNet-18 (its train step takes seconds to compile on a CPU, over JAX's
# one-second threshold for the cache); prints the folder in use and JAX's cache hits.
FIT = """
import json, sys
import jax, keras, numpy as np
hits = []
jax.monitoring.register_event_listener(
    lambda event, **kwargs: hits.append(event) if event.endswith("/cache_hits") else None
)
from keras_resnet import ResNet18
from keras_resnet.training.compilation import enable_compilation_cache
folder = enable_compilation_cache(sys.argv[1])
model = ResNet18(width=0.125, input_shape=(16, 16, 1), num_classes=10, stem="cifar")
model.compile(optimizer="sgd", loss="categorical_crossentropy")
x = np.zeros((64, 16, 16, 1), "float32")
model.fit(x, keras.utils.to_categorical(np.arange(64) % 10, 10), batch_size=32, verbose=0)
print(json.dumps({"folder": folder and str(folder), "hits": len(hits)}))
"""


def run_fit(folder: str, backend: str = "jax", script: str = FIT, **env) -> dict:
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in (compilation.JAX_ENV, compilation.CACHE_ENV, compilation.TF_FLAGS_ENV)
    }
    environment.update(KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3", **env)
    result = subprocess.run(
        [sys.executable, "-c", script, folder],
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


@pytest.mark.one_backend("jax")
def test_a_second_process_reads_what_the_first_compiled_and_off_writes_nothing(tmp_path):
    home = tmp_path / "home"
    cache = home / "compilation"
    first = run_fit("auto", KERAS_RESNET_CACHE_DIR=str(home))
    written = files(cache)
    assert first == {"folder": str(cache), "hits": 0} and written
    # 'auto' keeps a folder the user gave JAX (tests/conftest.py gives one to every test):
    # here the first's, whose programs the second process reads instead of compiling them.
    second = run_fit("auto", JAX_COMPILATION_CACHE_DIR=str(cache))
    assert second["folder"] == str(cache) and second["hits"] >= 1
    assert set(written) <= set(files(cache))
    # Off: neither the default folder nor one the environment gives JAX is written.
    home, given = tmp_path / "home2", tmp_path / "given"
    off = run_fit("off", KERAS_RESNET_CACHE_DIR=str(home), JAX_COMPILATION_CACHE_DIR=str(given))
    assert off == {"folder": None, "hits": 0}
    assert files(home) == [] and files(given) == []


# A Keras fit compiled with XLA (Keras' default on GPUs; off on a CPU-only machine).
TF_FIT = """
import json, sys
import keras, numpy as np
from keras_resnet.training.compilation import enable_compilation_cache
folder = enable_compilation_cache(sys.argv[1])
model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
model.compile(optimizer="sgd", loss="mse", jit_compile=True)
model.fit(np.ones((16, 8)), np.ones((16, 4)), verbose=0)
print(json.dumps({"folder": folder and str(folder), "hits": 0}))
"""


@pytest.mark.one_backend("tensorflow")
def test_tensorflow_xla_writes_its_programs_to_the_cache(tmp_path):
    cache = tmp_path / "cache"
    assert run_fit(str(cache), "tensorflow", TF_FIT)["folder"] == str(cache)
    written = files(cache)
    assert written and all(name.startswith("xla_compile_cache") for name in written)
    run_fit(str(cache), "tensorflow", TF_FIT)
    assert files(cache) == written  # read back, not compiled anew
    given = tmp_path / "given"  # a folder the user gave XLA is kept
    flags = f"--tf_xla_persistent_cache_directory={given}"
    assert run_fit("auto", "tensorflow", TF_FIT, TF_XLA_FLAGS=flags)["folder"] == str(given)
    assert files(given)


@pytest.mark.one_backend("torch")
def test_the_default_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_RESNET_CACHE_DIR", str(tmp_path / "mine"))
    assert compilation.default_cache_dir() == tmp_path / "mine" / "compilation"
    monkeypatch.delenv("KERAS_RESNET_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert compilation.default_cache_dir() == tmp_path / "xdg" / "keras_resnet" / "compilation"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    expected = tmp_path / "home" / ".cache" / "keras_resnet" / "compilation"
    assert compilation.default_cache_dir() == expected
    # torch: Keras' fit compiles nothing, so there is no cache and no folder is made.
    assert compilation.enable_compilation_cache("auto") is None and not expected.exists()


@pytest.mark.one_backend("jax")
def test_a_folder_that_cannot_be_made_is_one_error_naming_the_option(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(OptionError, match=r"received compilation_cache='.*file/cache'") as info:
        compilation.enable_compilation_cache(str(tmp_path / "file" / "cache"))
    assert info.value.field == "compilation_cache" and "\n" not in str(info.value)
