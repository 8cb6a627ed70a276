"""Keras weights files (`.weights.h5`, and the weights of a `.keras` model file) as `weights=`
for a model of another class count, or with or without a top: every backbone weight loaded
exactly, the classifier new, one WARNING; any other difference refused in one line naming the
file and the first mismatching layer, the model's weights unchanged."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest
from conftest import plan_of

import keras_resnet
from keras_resnet import data as data_lib
from keras_resnet import training
from keras_resnet.weights import adapt_input_conv

SMALL = {"input_shape": (32, 32, 3), "width": 0.25}
FEATURES = 128  # the classifier's input: 512 channels x width 0.25


def _randomized(model: keras.Model, seed: int) -> keras.Model:
    """Every weight moved from its initial value (batch norm's ones and zeros included), so
    that a layer left fresh cannot pass for a loaded one; small moves, so that it still trains."""
    rng = np.random.default_rng(seed)
    model.set_weights(
        [
            (w * rng.uniform(0.8, 1.2, w.shape) + rng.normal(0, 0.01, w.shape)).astype("float32")
            for w in model.get_weights()
        ]
    )
    return model


def _by_layer(model: keras.Model, *, skip=("fc",)) -> dict[str, list[np.ndarray]]:
    return {
        layer.name: layer.get_weights()
        for layer in model.layers
        if layer.weights and layer.name not in skip
    }


def _assert_equal(got: dict, expected: dict) -> None:
    assert list(got) == list(expected)
    for name in expected:
        for a, b in zip(got[name], expected[name], strict=True):
            np.testing.assert_array_equal(a, b, err_msg=name)


def _warnings(caplog) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "keras_resnet" and r.levelno == logging.WARNING
    ]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A 10-class ResNet-18 as .weights.h5 and as .keras, and a headless one as .weights.h5."""
    folder = tmp_path_factory.mktemp("h5")
    top = _randomized(keras_resnet.ResNet18(num_classes=10, **SMALL), seed=0)
    top.save_weights(folder / "r18-10.weights.h5")
    top.save(folder / "r18-10.keras")
    headless = _randomized(keras_resnet.ResNet18(include_top=False, **SMALL), seed=1)
    headless.save_weights(folder / "r18-notop.weights.h5")
    return folder, top, headless


@pytest.mark.parametrize("name", ["r18-10.weights.h5", "r18-10.keras"])
def test_other_class_count_gets_a_new_head(files, caplog, name):
    folder, source, _ = files
    with caplog.at_level(logging.WARNING, logger="keras_resnet"):
        model = keras_resnet.ResNet18(num_classes=5, weights=folder / name, **SMALL)
    _assert_equal(_by_layer(model), _by_layer(source))
    kernel, bias = model.get_layer("fc").get_weights()
    assert kernel.shape == (FEATURES, 5) and bias.shape == (5,)
    np.testing.assert_array_equal(bias, np.zeros(5))  # freshly initialized, not the file's
    assert _warnings(caplog) == [
        f"{model.name}: classifier 'fc' kept new (5 classes; the weights have 10 classes); "
        "the backbone was loaded"
    ]


@pytest.mark.parametrize("pooling", [None, "avg"])
def test_include_top_false_takes_the_backbone(files, caplog, pooling):
    folder, source, _ = files
    with caplog.at_level(logging.WARNING, logger="keras_resnet"):
        model = keras_resnet.ResNet18(
            include_top=False, pooling=pooling, weights=folder / "r18-10.weights.h5", **SMALL
        )
    _assert_equal(_by_layer(model), _by_layer(source))
    assert _warnings(caplog) == [
        f"{model.name}: no classifier in the model; the backbone was loaded"
    ]


def test_headless_file_into_a_classifier(files, caplog):
    folder, _, headless = files
    with caplog.at_level(logging.WARNING, logger="keras_resnet"):
        model = keras_resnet.ResNet18(
            num_classes=5, weights=folder / "r18-notop.weights.h5", **SMALL
        )
    _assert_equal(_by_layer(model), _by_layer(headless))
    assert _warnings(caplog) == [
        f"{model.name}: classifier 'fc' kept new (5 classes; the weights have no classifier); "
        "the backbone was loaded"
    ]


def test_same_architecture_loads_everything_silently(files, caplog):
    folder, source, _ = files
    with caplog.at_level(logging.WARNING, logger="keras_resnet"):
        model = keras_resnet.ResNet18(num_classes=10, weights=folder / "r18-10.keras", **SMALL)
    _assert_equal(_by_layer(model, skip=()), _by_layer(source, skip=()))
    assert _warnings(caplog) == []


def test_rgb_file_into_one_channel_model(files, caplog):
    folder, source, _ = files
    with caplog.at_level(logging.WARNING, logger="keras_resnet"):
        model = keras_resnet.ResNet18(
            num_classes=5, weights=folder / "r18-10.weights.h5", input_shape=(32, 32, 1), width=0.25
        )
    expected = _by_layer(source, skip=("fc", "conv1_conv"))
    _assert_equal(_by_layer(model, skip=("fc", "conv1_conv")), expected)
    np.testing.assert_array_equal(
        model.get_layer("conv1_conv").get_weights()[0],
        adapt_input_conv(source.get_layer("conv1_conv").get_weights()[0], 1),
    )
    notes = _warnings(caplog)
    assert len(notes) == 2 and "classifier 'fc' kept new" in notes[0]
    assert (
        notes[1]
        == f"{model.name}: conv1_conv adapted from 3 input channels to 1 (timm's adapt_input_conv)"
    )


@pytest.mark.parametrize(
    "target, source, first",
    [
        (
            lambda: keras_resnet.ResNet18(num_classes=10, input_shape=(32, 32, 3), width=0.5),
            None,
            r"conv1_conv/kernel: shape \(7, 7, 3, 32\) in the model, \(7, 7, 3, 16\) in the file",
        ),
        (
            lambda: keras_resnet.ResNet34(num_classes=5, **SMALL),
            None,
            r"conv2_block3_1_conv/kernel: missing from the file",
        ),
        (
            lambda: keras_resnet.ResNet18(num_classes=5, **SMALL),
            lambda: keras_resnet.ResNet34(num_classes=10, **SMALL),
            r"conv2_block3_1_bn: in the file, no layer of that name in the model",
        ),
        (
            lambda: keras_resnet.ResNet50(num_classes=5, **SMALL),
            None,
            r"conv2_block1_1_conv/kernel: shape \(1, 1, 16, 16\) in the model, \(3, 3, 16, 16\)",
        ),
        (
            lambda: keras_resnet.ResNet18(num_classes=5, stem="cifar", **SMALL),
            None,
            r"conv1_conv/kernel: shape \(3, 3, 3, 16\) in the model, \(7, 7, 3, 16\) in the file",
        ),
        (
            lambda: keras_resnet.ResNet18(num_classes=5, **SMALL),
            lambda: keras_resnet.ResNet18(num_classes=10, input_shape=(32, 32, 1), width=0.25),
            r"conv1_conv/kernel: shape \(7, 7, 3, 16\) in the model, \(7, 7, 1, 16\) in the file",
        ),
    ],
    ids=["width", "depth", "deeper-file", "block", "stem", "channels"],
)
def test_other_architectures_are_refused_untouched(files, tmp_path, caplog, target, source, first):
    path = files[0] / "r18-10.weights.h5"
    if source is not None:
        path = tmp_path / "other.weights.h5"
        source().save_weights(path)
    model = target()
    before = model.get_weights()
    with caplog.at_level(logging.WARNING, logger="keras_resnet"):
        with pytest.raises(ValueError) as error:
            keras_resnet.load_weights(model, path)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"weights file {str(path)!r} does not fit model {model.name!r} (")
    assert re.search(f"the first: {first}", message), message
    for a, b in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert _warnings(caplog) == []


def test_file_without_layer_names_keeps_the_strict_path(files, tmp_path):
    """Keras before 3.10 wrote no layer names: such a file loads only into the same
    architecture (through Keras), as before."""
    folder, source, _ = files
    path = tmp_path / "unnamed.weights.h5"
    path.write_bytes((folder / "r18-10.weights.h5").read_bytes())
    with h5py.File(path, "r+") as f:
        groups = []
        f.visit(groups.append)  # visit stops at the first callback that returns a value
        for name in groups:
            f[name].attrs.pop("name", None)
        assert not any("name" in f[name].attrs for name in groups)
    same = keras_resnet.ResNet18(num_classes=10, weights=path, **SMALL)
    _assert_equal(_by_layer(same, skip=()), _by_layer(source, skip=()))
    model = keras_resnet.ResNet18(num_classes=5, **SMALL)
    before = model.get_weights()
    with pytest.raises(ValueError, match=r"unnamed\.weights\.h5' does not fit model"):
        keras_resnet.load_weights(model, path)
    for a, b in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", ["junk.weights.h5", "junk.keras"])
def test_unreadable_file_is_refused_in_one_line(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"not a Keras file\n" * 4)
    model = keras_resnet.ResNet18(num_classes=5, **SMALL)
    with pytest.raises(ValueError, match=rf"{name}' could not be read as a Keras weights file"):
        keras_resnet.load_weights(model, path)


def test_links_in_the_file_are_refused(files, tmp_path):
    """An external link would make the loader read another file; Keras refuses them too."""
    path = tmp_path / "linked.weights.h5"
    path.write_bytes((files[0] / "r18-10.weights.h5").read_bytes())
    with h5py.File(path, "r+") as f:
        kernel = f["layers/dense/vars/0"]
        assert kernel.parent.attrs["name"] == "fc"
        del f["layers/dense/vars/0"]
        f["layers/dense/vars/0"] = h5py.ExternalLink(str(tmp_path / "secret.h5"), "/data")
    model = keras_resnet.ResNet18(num_classes=5, **SMALL)
    with pytest.raises(ValueError, match=r"linked\.weights\.h5' could not be read.*ExternalLink"):
        keras_resnet.load_weights(model, path)


def _random_images(classes: int, n: int, seed: int) -> data_lib.Dataset:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, 28, 28, 1), dtype=np.uint8)
    y = (np.arange(n) % classes).astype(np.int64)
    names = [f"class{k}" for k in range(classes)]
    return data_lib.Dataset(f"random{classes}", x, y, x[:32], y[:32], names, "test")


def test_train_fine_tunes_a_ten_class_model_on_five_classes(tmp_path, caplog, capsys):
    """A 10-class run's model.keras as `TrainConfig.weights` for 5 classes, the whole backbone
    frozen: it ends exactly as the file had it, and only the new classifier trains."""
    options = dict(
        width=0.125,
        epochs=1,
        batch_size=32,
        val_size=0,
        augment=False,
        warmup_epochs=0.0,
        label_smoothing=0.0,
        verbose=0,
        tensorboard=False,
        track_test=False,
        backup=False,
    )
    ten = training.TrainConfig.create(output_dir=str(tmp_path / "ten"), **options)
    # What a 10-class run writes as model.keras (its network, Keras' own layers).
    ten_plan = plan_of(ten, _random_images(10, 64, 0))
    network = _randomized(training.build_model(ten_plan, augment=False), 2)
    pretrained = tmp_path / "model.keras"
    keras_resnet.layers.plain_keras_model(network).save(pretrained)

    five = training.TrainConfig.create(
        output_dir=str(tmp_path / "five"), weights=str(pretrained), freeze_stages=4, **options
    )
    with caplog.at_level(logging.INFO, logger="keras_resnet"):
        result = training.train(five, dataset=_random_images(5, 64, 1))
    assert f"weights: {pretrained} loaded" in caplog.text
    notes = _warnings(caplog)
    assert (
        len(notes) == 1 and "classifier 'fc' kept new (5 classes; the weights have 10" in notes[0]
    )
    tuned = keras.saving.load_model(Path(result["run_dir"]) / "model.keras", compile=False)
    _assert_equal(_by_layer(tuned), _by_layer(network))
    kernel, bias = tuned.get_layer("fc").get_weights()
    assert kernel.shape == (64, 5) and np.any(bias != 0)  # 512 x 0.125 features; trained
