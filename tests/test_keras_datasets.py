"""keras.datasets as the last source of mnist, fashion_mnist, cifar10 and cifar100: read from
its cache ($KERAS_HOME/datasets) when no local copy is found, never from the network here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
from idx_files import make_idx_folder

from keras_resnet import data as data_lib
from keras_resnet.data import keras_datasets

REPO = Path(__file__).resolve().parents[1]

# Top-level modules that only the package's extras install: the core dependencies do not bring
# them (grpc comes with TensorFlow).
EXTRA_MODULES = (
    "matplotlib",
    "tensorboard",
    "tf2onnx",
    "onnx",
    "onnxruntime",
    "modelscan",
    "sklearn",
    "scipy",
    "jax",
    "jaxlib",
    "torch",
    "torchvision",
    "timm",
    "safetensors",
    "cv2",
)
# `keras-resnet train ...` as after `pip install keras3-resnet` alone on a machine without the
# data: the extras' modules cannot be imported (`import` and `importlib.util.find_spec` fail), any
# network connection fails at once, and the IDX files are looked for only in
# $KERAS_RESNET_DATA_DIR, so that neither Debian's /usr/share/datasets nor ./.data serve them.
NO_LOCAL_DATA = textwrap.dedent(
    """
    import os, socket, sys


    class NotInstalled:
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in sys.argv[1].split(","):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None


    def refuse(*args, **kwargs):
        raise OSError("network refused")


    sys.meta_path.insert(0, NotInstalled())
    socket.create_connection = socket.getaddrinfo = refuse
    from keras_resnet.data import memory

    find = memory.find_source_dir
    memory.find_source_dir = lambda name, source_dir=None: find(
        name, source_dir or os.environ["KERAS_RESNET_DATA_DIR"]
    )
    from keras_resnet.cli import main

    sys.exit(main(sys.argv[2:]))
    """
)


def train_without_local_data(tmp_path: Path, keras_home: Path) -> subprocess.CompletedProcess:
    (tmp_path / "empty").mkdir()
    (tmp_path / "tfds").mkdir()
    env = {
        **os.environ,
        "KERAS_BACKEND": "tensorflow",
        "KERAS_HOME": os.fspath(keras_home),
        "KERAS_RESNET_DATA_DIR": os.fspath(tmp_path / "empty"),
        "PYTHONPATH": os.fspath(REPO),
    }
    args = ["train", "--width", "0.125", "--epochs", "1", "--batch-size", "16"]
    args += ["--train-size", "64", "--test-size", "32", "--val-size", "16"]
    args += [
        "--data-dir",
        os.fspath(tmp_path / "tfds"),
        "--output-dir",
        os.fspath(tmp_path / "run"),
    ]
    return subprocess.run(
        [sys.executable, "-c", NO_LOCAL_DATA, ",".join(EXTRA_MODULES), *args],
        env=env,
        cwd=tmp_path,  # no ./.data
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.one_backend("tensorflow")  # a subprocess on the TensorFlow backend
def test_core_install_trains_on_fashion_mnist_from_the_keras_cache(tmp_path):
    """The core dependencies alone; no IDX folder, no Debian files, an empty TFDS folder, no
    network: Fashion-MNIST comes from keras.datasets' cache (filled beforehand with small IDX
    files under keras' file names), and the run trains, without TensorBoard logs."""
    keras_home = tmp_path / "keras_home"
    make_idx_folder(keras_home / "datasets" / "fashion-mnist", n_train=120, n_test=40)
    result = train_without_local_data(tmp_path, keras_home)
    assert result.returncode == 0, result.stderr[-3000:]
    source = f"keras.datasets:{keras_home / 'datasets'}"
    assert f"data: fashion_mnist from {source}" in result.stderr.splitlines()
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["data_source"] == source
    assert (metrics["dataset"], metrics["epochs"], metrics["input_shape"]) == (
        "fashion_mnist",
        1,
        [28, 28, 1],
    )
    assert (metrics["train_images"], metrics["val_images"], metrics["test_images"]) == (48, 16, 32)
    assert metrics["class_names"] == list(data_lib.IDX_DATASETS["fashion_mnist"][1])
    assert (tmp_path / "run" / "model.keras").is_file() and not (tmp_path / "run" / "logs").exists()


@pytest.mark.one_backend("tensorflow")  # a subprocess on the TensorFlow backend
def test_no_data_anywhere_is_one_line(tmp_path):
    """Nothing local and the network refused: exit 2, one line naming every way to get the
    data and keras' own failure; the cache holds nothing half-downloaded."""
    keras_home = tmp_path / "keras_home"
    keras_home.mkdir()
    result = train_without_local_data(tmp_path, keras_home)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("keras-resnet train: error: no fashion_mnist data found: install it ")
    assert "--source-dir" in error and "data: fashion_mnist from" not in result.stderr
    assert (
        f"; keras.datasets could not load fashion_mnist into {keras_home / 'datasets'}: "
        "URL fetch failure on https://storage.googleapis.com/" in error
    )
    assert error.endswith("network refused")
    cached = keras_home / "datasets" / "fashion-mnist"
    assert not cached.exists() or list(cached.iterdir()) == []


@pytest.mark.one_backend("tensorflow")
@pytest.mark.parametrize(
    "name,images,labels",
    [
        ("mnist", (6, 28, 28), (6,)),
        ("cifar10", (6, 32, 32, 3), (6, 1)),
        ("cifar100", (6, 32, 32, 3), (6, 1)),
    ],
)
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_keras_arrays_become_a_dataset(
    tmp_path, monkeypatch, capsys, name, images, labels, data_format
):
    """keras.datasets' arrays as a `Dataset`: NHWC uint8 whatever Keras' image data format,
    (N,) int64 labels, the class names TFDS uses; reached by `load_dataset` when TFDS holds
    nothing."""
    rng = np.random.default_rng(0)
    classes = len(keras_datasets.KERAS_DATASETS[name])
    nhwc = [rng.integers(0, 256, images, dtype=np.uint8) for _ in range(2)]
    y = [rng.integers(0, classes, labels, dtype=np.uint8) for _ in range(2)]
    # keras' CIFAR loaders return NCHW under channels_first.
    given = [
        x.transpose(0, 3, 1, 2) if x.ndim == 4 and data_format == "channels_first" else x
        for x in nhwc
    ]
    monkeypatch.setattr(
        getattr(keras.datasets, name), "load_data", lambda: ((given[0], y[0]), (given[1], y[1]))
    )
    monkeypatch.setattr(data_lib.memory, "find_source_dir", lambda name, source_dir=None: None)
    previous = keras.config.image_data_format()
    keras.config.set_image_data_format(data_format)
    try:
        dataset = data_lib.load_dataset(name, data_dir=tmp_path)
    finally:
        keras.config.set_image_data_format(previous)
    expected = nhwc[0] if nhwc[0].ndim == 4 else nhwc[0][..., None]
    np.testing.assert_array_equal(dataset.x_train, expected)
    assert dataset.x_test.shape == expected.shape and dataset.x_train.dtype == np.uint8
    assert dataset.y_train.dtype == np.int64 and dataset.y_train.shape == (6,)
    np.testing.assert_array_equal(dataset.y_test, y[1].reshape(-1))
    assert dataset.num_classes == classes == {"mnist": 10, "cifar10": 10, "cifar100": 100}[name]
    source = f"keras.datasets:{keras_datasets.keras_cache_dir()}"
    assert dataset.source == source
    assert capsys.readouterr().err.splitlines() == [f"data: {name} from {source}"]


@pytest.mark.one_backend("tensorflow")
def test_class_names_and_bad_labels(monkeypatch):
    names = keras_datasets.KERAS_DATASETS
    assert len(names["cifar10"]) == 10 and names["cifar10"][:2] == ("airplane", "automobile")
    # CIFAR-100's fine_label_names are in alphabetical order, one per class.
    fine = list(names["cifar100"])
    assert len(fine) == 100 and fine == sorted(set(fine))
    assert names["cifar100"][-1] == "worm" and names["fashion_mnist"][9] == "Ankle boot"
    x = np.zeros((2, 28, 28), np.uint8)
    monkeypatch.setattr(
        keras.datasets.mnist, "load_data", lambda: ((x, np.array([0, 10])), (x, np.array([1, 2])))
    )
    message = r"mnist train labels must lie in \[0, 10\), received labels from 0 to 10"
    with pytest.raises(ValueError, match=message):
        keras_datasets.load_keras_dataset("mnist")
    with pytest.raises(ValueError, match="received dataset='svhn_cropped'"):
        keras_datasets.load_keras_dataset("svhn_cropped")


@pytest.mark.one_backend("tensorflow")
def test_a_named_source_dir_is_not_replaced_by_keras(tmp_path, monkeypatch):
    """An explicit source_dir without the files is an error, and so is loader='tfds' without
    a prepared copy: keras.datasets is not asked."""
    asked = []
    for name in ("fashion_mnist", "cifar10"):
        monkeypatch.setattr(
            getattr(keras.datasets, name), "load_data", lambda name=name: asked.append(name)
        )
    with pytest.raises(data_lib.DataNotFoundError, match="no fashion_mnist data found"):
        data_lib.load_dataset("fashion_mnist", source_dir=tmp_path, data_dir=tmp_path)
    with pytest.raises(data_lib.DataNotFoundError, match="no prepared cifar10 data under"):
        data_lib.load_dataset("cifar10", data_dir=tmp_path, loader="tfds")
    assert asked == []


@pytest.mark.one_backend("tensorflow")
def test_without_tensorflow_datasets_keras_serves_cifar(monkeypatch, capsys):
    """Where tensorflow-datasets is not installed, cifar10 still loads through keras.datasets;
    when that fails too, one line says both."""
    monkeypatch.setattr(data_lib.memory, "tfds_available", lambda: False)
    x, y = np.zeros((4, 32, 32, 3), np.uint8), np.arange(4, dtype=np.uint8).reshape(4, 1)
    monkeypatch.setattr(keras.datasets.cifar10, "load_data", lambda: ((x, y), (x[:2], y[:2])))
    dataset = data_lib.load_dataset("cifar10")
    assert (dataset.x_train.shape, dataset.y_test.tolist()) == ((4, 32, 32, 3), [0, 1])
    assert dataset.class_names[3] == "cat" and dataset.source.startswith("keras.datasets:")

    def refused():
        raise Exception("URL fetch failure on https://example.invalid/c.tar.gz: None -- refused")

    monkeypatch.setattr(keras.datasets.cifar10, "load_data", refused)
    with pytest.raises(data_lib.DataNotFoundError) as info:
        data_lib.load_dataset("cifar10")
    assert str(info.value) == (
        "no local cifar10 data (tensorflow-datasets is not installed); keras.datasets could not "
        f"load cifar10 into {keras_datasets.keras_cache_dir()}: URL fetch failure on "
        "https://example.invalid/c.tar.gz: None -- refused"
    )
    with pytest.raises(ValueError, match="dataset must be one of .* without TensorFlow"):
        data_lib.load_dataset("cifar10", loader="idx")
