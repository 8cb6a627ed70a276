"""`keras_resnet.data.MixedBatches`: the batches of in-memory arrays, unchanged when no mixing
is asked, mixed by Keras' MixUp and CutMix otherwise (targets by the mixed share), one of the
two per batch when both are on, and a fit on them."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_resnet.data.mixing import MixedBatches

CLASSES = 10


def constant_images(n: int = CLASSES, size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Image i is the constant 20 * i (uint8) and its target class i: a mixed image's pixels
    say which images it came from and in what shares."""
    values = (20 * np.arange(n)).astype(np.uint8)
    images = np.broadcast_to(values[:, None, None, None], (n, size, size, 1)).copy()
    return images, np.eye(CLASSES, dtype=np.float32)[np.arange(n) % CLASSES]


def test_without_mixing_the_batches_are_the_arrays():
    images, targets = constant_images()
    batches = MixedBatches(images, targets, 4, shuffle=False)
    assert len(batches) == 3 and not batches.mixing
    parts = [batches[i] for i in range(len(batches))]
    assert [len(x) for x, _ in parts] == [4, 4, 2]  # the remainder is the last batch
    np.testing.assert_array_equal(np.concatenate([x for x, _ in parts]), images)
    np.testing.assert_array_equal(np.concatenate([y for _, y in parts]), targets)
    assert parts[0][0].dtype == np.uint8


def test_shuffled_order_is_a_seeded_permutation_per_epoch():
    images, targets = constant_images(50)
    batches = MixedBatches(images, targets, 8, seed=3)
    first = np.concatenate([batches[i][0][:, 0, 0, 0] for i in range(len(batches))])
    assert sorted(first.tolist()) == sorted(images[:, 0, 0, 0].tolist())  # each image once
    batches.on_epoch_end()
    second = np.concatenate([batches[i][0][:, 0, 0, 0] for i in range(len(batches))])
    assert sorted(second.tolist()) == sorted(first.tolist()) and not np.array_equal(first, second)
    again = MixedBatches(images, targets, 8, seed=3)
    np.testing.assert_array_equal(again[0][0], MixedBatches(images, targets, 8, seed=3)[0][0])


def test_mixup_mixes_images_and_targets_by_the_same_share():
    images, targets = constant_images()
    batches = MixedBatches(images, targets, CLASSES, mixup=0.8, shuffle=False, seed=1)
    x, y = batches[0]
    assert x.dtype == np.uint8 and x.shape == images.shape and y.dtype == np.float32
    np.testing.assert_allclose(y.sum(axis=1), 1.0, atol=1e-6)
    assert ((y > 1e-6).sum(axis=1) <= 2).all()  # each image with at most one other
    expected = y @ (20.0 * np.arange(CLASSES))  # the targets' shares of the pixel values
    # constant images stay constant; rounding back to uint8 moves a pixel by <= 0.5
    assert (x == x[:, :1, :1, :]).all()
    assert np.abs(x[:, 0, 0, 0] - expected).max() <= 0.5 + 1e-3
    assert (y.max(axis=1) < 1 - 1e-3).any()  # something was mixed


def test_cutmix_pastes_a_box_and_mixes_targets_by_its_area():
    images, targets = constant_images(size=32)
    batches = MixedBatches(images, targets, CLASSES, cutmix=1.0, shuffle=False, seed=2)
    x, y = batches[0]
    np.testing.assert_allclose(y.sum(axis=1), 1.0, atol=1e-6)
    for i in range(CLASSES):
        others = [k for k in np.flatnonzero(y[i] > 1e-6) if k != i]
        values = set(np.unique(x[i]).tolist())
        assert values <= {20 * i, *(20 * k for k in others)}  # pixels copied, not blended
        if others:
            pasted = float(np.mean(x[i] == 20 * others[0]))
            # Keras weighs by the box's real-valued area; the pixels are whole: <= 2 rows + 2
            # columns of 32 apart.
            assert pasted == pytest.approx(y[i, others[0]], abs=4 / 32)
    assert (y.max(axis=1) < 1 - 1e-3).any()


def test_with_both_each_batch_takes_one_of_the_two():
    images, targets = constant_images()
    batches = MixedBatches(images, targets, 2, mixup=0.8, cutmix=1.0, seed=0)
    chosen = [batches.layer_for(i) for i in range(400)]
    cutmix = sum(layer is batches.cutmix for layer in chosen)
    assert cutmix + sum(layer is batches.mixup for layer in chosen) == 400
    assert 150 <= cutmix <= 250  # switch_prob 0.5; a binomial's 5 sigma is 50
    assert [batches.layer_for(i) for i in range(400)] == chosen  # seeded per batch


@pytest.mark.parametrize(
    "kwargs, message",
    [(dict(mixup=-0.1), "mixup must be >= 0"), (dict(cutmix=1.5), "cutmix in \\[0, 1\\]")],
)
def test_bad_alphas(kwargs, message):
    images, targets = constant_images()
    with pytest.raises(ValueError, match=message):
        MixedBatches(images, targets, 4, **kwargs)


def test_fit_on_mixed_batches():
    images, targets = constant_images(40)
    model = keras.Sequential(
        [keras.Input((16, 16, 1)), keras.layers.Flatten(), keras.layers.Dense(CLASSES, "softmax")]
    )
    model.compile("sgd", "categorical_crossentropy")
    batches = MixedBatches(images, targets, 16, mixup=0.4, cutmix=1.0)
    history = model.fit(batches, epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2 and np.isfinite(history.history["loss"]).all()
    assert batches.epoch >= 2  # a new order each epoch (Keras may end one more)


@pytest.mark.parametrize("kwargs", [dict(mixup=0.8), dict(cutmix=1.0), dict(mixup=0.8, cutmix=1.0)])
def test_batches_mixed_in_one_chunk_keep_their_images(kwargs):
    """Small images: 13 batches of 3 (the last of 1) mixed in one call per layer. Batch i still
    holds the rows order[3i:3i+3], each mixed with a partner: its own class keeps a share."""
    images, targets = constant_images(37)
    batches = MixedBatches(images, targets, 3, seed=5, **kwargs)
    assert batches.chunk_batches >= len(batches) == 13
    labels = np.arange(37) % CLASSES
    for i in range(len(batches)):
        x, y = batches[i]
        rows = batches.order[3 * i : 3 * i + 3]
        assert len(x) == len(y) == len(rows) and x.dtype == np.uint8
        np.testing.assert_allclose(y.sum(axis=1), 1.0, atol=1e-6)
        assert (y[np.arange(len(rows)), labels[rows]] > 0).all()
    # 224 px RGB batches of 256 are mixed one batch per call
    big = MixedBatches(np.zeros((2, 224, 224, 3), np.uint8), targets[:2], 256, mixup=0.2)
    assert big.chunk_batches == 1
