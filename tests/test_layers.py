"""keras_resnet.layers.BatchNormalization: the same function as Keras' layer, on every backend."""

import keras
import numpy as np
import pytest

from keras_resnet.layers import BatchNormalization


def _pair(shape, axis=-1, seed=0):
    """Keras' layer and ours, built with the same (non-trivial) weights."""
    rng = np.random.default_rng(seed)
    channels = shape[axis]
    ours = BatchNormalization(axis=axis, momentum=0.9, epsilon=1e-5)
    ref = keras.layers.BatchNormalization(axis=axis, momentum=0.9, epsilon=1e-5)
    weights = [
        rng.uniform(0.5, 2.0, channels),  # gamma
        rng.normal(size=channels),  # beta
        rng.normal(size=channels),  # moving mean
        rng.uniform(0.5, 2.0, channels),  # moving variance
    ]
    for layer in (ours, ref):
        layer.build(shape)
        layer.set_weights([w.astype("float32") for w in weights])
    return ours, ref


def _np(x):
    return keras.ops.convert_to_numpy(x).astype("float64")


@pytest.mark.parametrize("axis", [-1, 1])
def test_float32_matches_keras_in_training_and_inference(axis):
    shape = (16, 6, 5, 7) if axis == -1 else (16, 7, 6, 5)
    ours, ref = _pair(shape, axis)
    x = (np.random.default_rng(1).normal(size=shape) * 3 + 2).astype("float32")
    # Training: one-pass statistics against Keras' two-pass ones.
    np.testing.assert_allclose(_np(ours(x, training=True)), _np(ref(x, training=True)), atol=2e-5)
    for a, b in zip(ours.non_trainable_weights, ref.non_trainable_weights, strict=True):
        np.testing.assert_allclose(_np(a), _np(b), rtol=1e-5, atol=1e-6)
    # Float32 inference is Keras' own code path: identical, given identical statistics.
    ours.set_weights(ref.get_weights())
    np.testing.assert_array_equal(_np(ours(x, training=False)), _np(ref(x, training=False)))


def test_shifted_statistics_do_not_cancel():
    """|mean| / std = 1000: E[x^2] - E[x]^2 in float32 would lose every digit of the variance;
    shifted by the moving mean, the batch variance stays within 1e-3 of float64's."""
    shape = (64, 4, 4, 3)
    ours, _ = _pair(shape)
    x = np.random.default_rng(2).normal(size=shape) * 0.5 + 500.0
    ours.moving_mean.assign(np.full(3, 499.9, "float32"))
    ours.momentum = 0.0  # the moving statistics become the batch statistics
    ours(x.astype("float32"), training=True)
    np.testing.assert_allclose(_np(ours.moving_mean), x.mean(axis=(0, 1, 2)), rtol=1e-6)
    np.testing.assert_allclose(_np(ours.moving_variance), x.var(axis=(0, 1, 2)), rtol=1e-3)


def test_one_training_step_matches_keras():
    """Same gradients: a tiny conv net with each batch norm, one SGD step from the same weights."""

    def net(bn_class):
        inputs = keras.Input((8, 8, 3))
        x = keras.layers.Conv2D(4, 3, use_bias=False, name="conv")(inputs)
        x = bn_class(name="bn")(x)
        x = keras.layers.ReLU()(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
        outputs = keras.layers.Dense(3, name="fc")(x)
        model = keras.Model(inputs, outputs)
        model.compile(
            optimizer=keras.optimizers.SGD(0.5),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        return model

    ours, ref = net(BatchNormalization), net(keras.layers.BatchNormalization)
    ours.set_weights(ref.get_weights())
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(32, 8, 8, 3)).astype("float32"), rng.integers(0, 3, 32)
    before = ref.get_weights()
    ours.train_on_batch(x, y)
    ref.train_on_batch(x, y)
    moved = 0
    for a, b, w0 in zip(ours.get_weights(), ref.get_weights(), before, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
        moved += int(not np.allclose(b, w0))
    assert moved == len(before)  # every weight and statistic took part in the step


def test_mixed_bfloat16_within_bfloat16_rounding():
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        shape = (32, 6, 6, 8)
        ours, ref = _pair(shape)
        x = np.random.default_rng(4).normal(size=shape).astype("float32") * 2
        for training in (True, False):
            got, want = ours(x, training=training), ref(x, training=training)
            assert keras.backend.standardize_dtype(got.dtype) == "bfloat16"
            # Both round a float32 result once to bfloat16 (8 significant bits): at most one
            # unit in the last place apart, 2^-7 relative.
            np.testing.assert_allclose(_np(got), _np(want), rtol=2**-7, atol=1e-6)
        for a, b in zip(ours.non_trainable_weights, ref.non_trainable_weights, strict=True):
            np.testing.assert_allclose(_np(a), _np(b), rtol=1e-3, atol=1e-3)
    finally:
        keras.config.set_dtype_policy("float32")


def test_saved_and_loaded_as_itself(tmp_path):
    inputs = keras.Input((4, 4, 2))
    model = keras.Model(inputs, BatchNormalization(name="bn")(inputs))
    model.get_layer("bn").set_weights([np.full(2, v, "float32") for v in (2.0, 1.0, 0.5, 4.0)])
    path = tmp_path / "bn.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.get_layer("bn")) is BatchNormalization
    x = np.ones((1, 4, 4, 2), "float32")
    np.testing.assert_array_equal(_np(loaded(x)), _np(model(x)))
