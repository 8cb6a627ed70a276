"""ImageNet-1k's class names (`imagenet_classes`, read from the package's
imagenet_classes.txt) and `decode_predictions`, a classifier's top classes by name."""

from __future__ import annotations

import functools
import importlib.resources

import numpy as np


@functools.lru_cache(maxsize=1)
def imagenet_classes() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names, in the order of the classifier's outputs
    (torchvision's `_IMAGENET_CATEGORIES`)."""
    text = (
        importlib.resources.files("keras_resnet")
        .joinpath("imagenet_classes.txt")
        .read_text(encoding="utf-8")
    )
    return tuple(text.splitlines())


def decode_predictions(probabilities, top: int = 5) -> list[list[tuple[int, str, float]]]:
    """The `top` ImageNet classes of each row of a 1000-class classifier's output, as
    keras.applications' `decode_predictions` gives them, with the class index in place of the
    WordNet id.

    Args:
        probabilities: an array or tensor of shape (batch, 1000) (or (1000,), one row): the
            model's softmax output (logits rank the same; their values are returned as they are).
        top: how many classes per row, in [1, 1000].

    Returns:
        One list per row of (class index, class name, value) tuples, the highest value first
        (ties: the lower index first).

    Raises:
        ValueError: for another shape, or `top` out of range.

    Example:
        >>> decoded = decode_predictions(model.predict(images), top=2)
        >>> index, name, probability = decoded[0][0]  # the first image's best class
    """
    if hasattr(probabilities, "shape") and not isinstance(probabilities, np.ndarray):
        import keras

        probabilities = keras.ops.convert_to_numpy(probabilities)
    values = np.asarray(probabilities, dtype=np.float64)
    classes = imagenet_classes()
    if values.ndim == 1:
        values = values[None]
    if values.ndim != 2 or values.shape[1] != len(classes):
        raise ValueError(
            f"probabilities must have shape (batch, {len(classes)}), received shape "
            f"{tuple(np.shape(probabilities))}"
        )
    if isinstance(top, bool) or not isinstance(top, int) or not 1 <= top <= len(classes):
        raise ValueError(f"top must be an integer in [1, {len(classes)}], received top={top!r}")
    result = []
    for row in values:
        order = np.argsort(-row, kind="stable")[:top]
        result.append([(int(i), classes[i], float(row[i])) for i in order])
    return result
