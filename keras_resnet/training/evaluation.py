"""Evaluation beyond `model.evaluate`: flip test-time augmentation."""

from __future__ import annotations

import keras
import numpy as np

# Images predicted per call: the flipped copy exists for one chunk at a time, not the split.
CHUNK_BATCHES = 16


def flip_tta_accuracy(
    model, images: np.ndarray, labels: np.ndarray, batch_size: int, *, from_logits: bool = False
) -> float:
    """Accuracy of the mean of the class probabilities of each image and its horizontal flip.

    Args:
        model: a classifier of NHWC images (the run's models: raw pixels in, softmax out).
        images: (N, H, W, C) images as the model takes them.
        labels: (N,) integer labels or (N, classes) one-hot targets.
        batch_size: images per `model.predict` batch.
        from_logits: the model outputs logits; a softmax is applied before the mean.

    Returns:
        The fraction of images whose averaged probabilities peak at their label.
    """
    labels = np.asarray(labels)
    if labels.ndim == 2:
        labels = labels.argmax(-1)
    if len(labels) != len(images) or len(images) == 0:
        raise ValueError(
            f"images and labels must be non-empty and of the same length, received "
            f"{len(images)} images and {len(labels)} labels"
        )
    correct = 0
    chunk = batch_size * CHUNK_BATCHES
    for start in range(0, len(images), chunk):
        x = np.asarray(images[start : start + chunk])
        probabilities = [
            model.predict(view, batch_size=batch_size, verbose=0) for view in (x, x[:, :, ::-1])
        ]
        if from_logits:
            probabilities = [
                keras.ops.convert_to_numpy(keras.ops.softmax(p)) for p in probabilities
            ]
        mean = (probabilities[0] + probabilities[1]) / 2
        correct += int(np.sum(mean.argmax(-1) == labels[start : start + chunk]))
    return correct / len(images)


__all__ = ["flip_tta_accuracy"]
