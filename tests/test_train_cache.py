"""`train(..., cache=DIR)`: a folder trained from its preprocessed uint8 cache, the
random-resized crop running inside the model. The cache is built once and reused, refused for
other data; the saved model is the plain network, and the run's test figure is the streamed
folder's (the cache stores the evaluation recipe's crops themselves)."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import plan_of
from test_train_folders import needs_fashion_mnist, short_run, write_image_folder

from keras_resnet import training
from keras_resnet.data import cache as data_cache
from keras_resnet.training import TrainConfig
from keras_resnet.training.inputs import OneHotBatches
from keras_resnet.utils import OptionError

SIZE = 72  # over 64 px: the ImageNet recipe, which the cache serves


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """30 train and 10 test images per class (Fashion-MNIST, PNG and JPEG) and a corrupt PNG."""
    root = tmp_path_factory.mktemp("cache_folder") / "fmnist"
    write_image_folder(root, {"train": 30, "test": 10})
    (root / "train" / "bag" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    return root


@needs_fashion_mnist
def test_cached_run_trains_saves_the_network_and_reuses_the_cache(folder, tmp_path, capsys):
    cache = tmp_path / "cache"
    options = dict(dataset=str(folder), image_size=SIZE, cache=str(cache), val_size=50, epochs=2)
    metrics = training.train(short_run(tmp_path, "run1", **options))
    assert "cache: decoding 401 images" in capsys.readouterr().out
    info = data_cache.cache_info(cache)
    assert info["side"] == 82 and info["image_size"] == SIZE
    # The corrupt file is left out of the cache, and reported.
    assert metrics["train_images"] + metrics["val_images"] == 300
    assert metrics["test_images"] == 100
    assert metrics["skipped"] == 1 and metrics["cache"] == str(cache)
    rows = sum(len(np.load(cache / f"{s}.u8", mmap_mode="r")) for s in ("train", "val"))
    assert rows == 301  # the corrupt file's row stays, marked unreadable
    assert np.load(cache / "train.u8", mmap_mode="r").shape[1:] == (82, 82, 3)

    # model.keras is the network alone (raw SIZE px pixels in), and its accuracy on the folder
    # streamed through the evaluation recipe is the run's test figure: same pixels either way.
    run = Path(metrics["run_dir"])
    model = keras.saving.load_model(run / "model.keras", compile=False)
    assert tuple(model.input_shape) == (None, SIZE, SIZE, 3)
    assert not any(type(layer).__name__ == "RandomResizedCrop" for layer in model.layers)
    source = plan_of(short_run(tmp_path, "plain", **{**options, "cache": None})).data
    stream = OneHotBatches(source.folder, "test", 32, train=False)
    correct = sum(
        int((np.argmax(model.predict(x, verbose=0), 1) == np.argmax(y, 1)).sum())
        for x, y in (stream[i] for i in range(len(stream)))
    )
    assert correct / 100 == pytest.approx(metrics["test_accuracy"], abs=1e-6)
    best = keras.saving.load_model(run / "checkpoints" / "best.keras", compile=False)
    assert tuple(best.input_shape) == (None, SIZE, SIZE, 3)

    # A second run reuses the cache without decoding again.
    stamp = (cache / "cache.json").stat().st_mtime_ns
    again = training.train(short_run(tmp_path, "run2", **{**options, "epochs": 1}))
    assert "cache: decoding" not in capsys.readouterr().out
    assert (cache / "cache.json").stat().st_mtime_ns == stamp
    assert again["train_images"] == metrics["train_images"]


@needs_fashion_mnist
def test_cache_of_other_data_is_refused_before_the_run_starts(folder, tmp_path):
    cache = tmp_path / "cache"
    data_cache.open_cache(
        plan_of(TrainConfig.create(dataset=str(folder), image_size=SIZE)).data.folder,
        cache,
        log=lambda _: None,
    )
    out = tmp_path / "run"
    # Another validation split: the cached train split would hold validation images.
    config = short_run(
        tmp_path, "run", dataset=str(folder), image_size=SIZE, cache=str(cache), val_size=40
    )
    with pytest.raises(OptionError, match="cache .* was built for other data: its files") as e:
        training.train(config)
    assert e.value.field == "cache"
    config = short_run(tmp_path, "run", dataset=str(folder), image_size=96, cache=str(cache))
    with pytest.raises(OptionError, match="image_size 72 \\(this run: 96\\)"):
        training.train(config)
    assert not (out / "config.json").exists()  # the run never started


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(cache="/tmp/c"), "cache is for folders"),
        (dict(dataset="/tmp/x", image_size=32, cache="/tmp/c"), "cache is for the ImageNet"),
        (dict(dataset="/tmp/x", cache="/tmp/c", head_epochs=1), "head-only warm-up"),
    ],
)
def test_cache_option_is_checked(options, message):
    with pytest.raises(OptionError, match=message) as error:
        TrainConfig.create(**options)
    assert error.value.field == "cache"


@needs_fashion_mnist
def test_mixing_is_refused_for_a_folder(folder, tmp_path):
    config = short_run(tmp_path, "run", dataset=str(folder), image_size=32, mixup=0.2)
    with pytest.raises(OptionError, match="mixup is for datasets in memory") as error:
        training.train(config)
    assert error.value.field == "mixup"
