"""Fine-tuning through `train()`: a tiny pretrain -> fine-tune chain with `weights`,
`freeze_stages` and `head_epochs`; the frozen layers (batch norm statistics included) end as
they were loaded, the others train."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest

from keras_resnet import data as data_lib
from keras_resnet import training
from keras_resnet.training import TrainConfig
from keras_resnet.utils import OptionError


def stripes(classes: range, n_train: int, n_test: int, seed: int) -> data_lib.Dataset:
    """28 px images whose class k (of `classes`, relabelled 0..) is a bright stripe at column
    2k+4: learnable in one epoch by a tiny network."""
    rng = np.random.default_rng(seed)

    def make(n):
        labels = np.arange(n) % len(classes)
        rng.shuffle(labels)
        images = rng.integers(0, 60, size=(n, 28, 28, 1), dtype=np.uint8)
        for i, label in enumerate(labels):
            column = 2 * classes[label] + 4
            images[i, 4:24, column : column + 2] = 250
        return images, labels.astype(np.int64)

    (x_train, y_train), (x_test, y_test) = make(n_train), make(n_test)
    names = [f"class{k}" for k in classes]
    return data_lib.Dataset("stripes", x_train, y_train, x_test, y_test, names, "test")


def run_config(tmp_path: Path, name: str, **overrides) -> TrainConfig:
    options = dict(
        width=0.125,
        epochs=1,
        batch_size=32,
        val_size=0,
        augment=False,
        learning_rate=0.05,
        warmup_epochs=0.0,
        label_smoothing=0.0,
        verbose=0,
        output_dir=str(tmp_path / name),
        tensorboard=False,
        track_test=False,
        backup=False,
    )
    options.update(overrides)
    return TrainConfig.create(**options)


def layer_weights(path: Path) -> dict[str, list[np.ndarray]]:
    model = keras.saving.load_model(path, compile=False)
    return {layer.name: layer.get_weights() for layer in model.layers if layer.weights}


@pytest.mark.slow
def test_pretrain_then_finetune_keeps_frozen_layers(tmp_path, capsys):
    pretrain = training.train(
        run_config(tmp_path, "pretrain", epochs=2), dataset=stripes(range(5), 320, 100, seed=0)
    )
    pretrained = Path(pretrain["run_dir"])
    # A run's model.keras as a Keras .weights.h5, the form the builders' `weights=` loads.
    weights = tmp_path / "pretrain.weights.h5"
    keras.saving.load_model(pretrained / "model.keras", compile=False).save_weights(weights)

    finetune = run_config(
        tmp_path, "finetune", weights=str(weights), freeze_stages=1, head_epochs=1
    )
    result = training.train(finetune, dataset=stripes(range(5, 10), 160, 100, seed=1))
    log = capsys.readouterr().out
    assert f"weights: {weights} loaded" in log
    assert "head-only warm-up: 1 epoch(s) training ['fc']" in log

    before = layer_weights(pretrained / "model.keras")
    after = layer_weights(Path(result["run_dir"]) / "model.keras")
    frozen = [n for n in after if n.startswith(("conv1_", "conv2_"))]  # stem + stage 1
    trained = [n for n in after if n.startswith(("conv3_", "conv4_", "conv5_", "fc"))]
    assert len(frozen) == 2 + 2 * 4 and trained  # stem conv+bn, 2 basic blocks x (2 conv+2 bn)
    for name in frozen:  # kernels and batch-norm gamma, beta, moving mean and variance
        for a, b in zip(before[name], after[name], strict=True):
            np.testing.assert_array_equal(a, b, err_msg=name)
    changed = [n for n in trained if any(not np.array_equal(a, b) for a, b in
                                         zip(before[n], after[n], strict=True))]  # fmt: skip
    assert changed == trained
    config = json.loads((Path(result["run_dir"]) / "config.json").read_text())
    assert (config["weights"], config["freeze_stages"], config["head_epochs"]) == (
        str(weights),
        1,
        1,
    )


def test_bad_weights_file_is_an_option_error(tmp_path):
    config = run_config(tmp_path, "bad", weights=str(tmp_path / "missing.weights.h5"))
    with pytest.raises(OptionError, match="missing.weights.h5") as info:
        training.train(config, dataset=stripes(range(5), 64, 32, seed=0))
    assert info.value.field == "weights"


def test_freeze_stages_beyond_the_model_is_an_option_error(tmp_path):
    config = run_config(tmp_path, "bad", freeze_stages=5)
    with pytest.raises(OptionError, match=r"freeze_stages must be an integer in \[0, 4\]"):
        training.train(config, dataset=stripes(range(5), 64, 32, seed=0))
