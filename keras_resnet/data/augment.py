"""Augmentation for small images (28-64 px), as Keras layers that run on every backend."""

from __future__ import annotations

from collections.abc import Sequence


def augmentation(
    image_shape: Sequence[int],
    *,
    pad: int = 4,
    flip: bool = True,
    erasing: float = 0.5,
    seed: int | None = None,
):
    """Augmentation for small images, as Keras layers active only in training (every backend).

    - random crop with `pad` pixels of zero padding, one offset per image (`RandomPadCrop`).
    - horizontal flip (`keras.layers.RandomFlip`): right for Fashion-MNIST and CIFAR, wrong for
      digits (pass `flip=False` for MNIST).
    - random erasing (Zhong et al. 2017, `keras.layers.RandomErasing`) with probability
      `erasing`: a rectangle of 2-33% of the image filled with noise.

    The layers compute in float32 whatever the dtype policy (0-255 pixels stay exact).

    Args:
        image_shape: (height, width, channels).
        pad: pixels of padding for the random crop (0: none).
        flip: random horizontal flips.
        erasing: probability of erasing a rectangle (0: none).
        seed: seed of the layers' random draws.

    Returns:
        A `keras.Sequential` named 'augment' (identity at inference), taking 0-255 pixels; it has
        no layers when every augmentation is off.
    """
    import keras
    from keras import layers

    from keras_resnet.layers import RandomPadCrop

    steps = []
    if pad:
        steps.append(RandomPadCrop(pad, seed=seed, dtype="float32", name="random_crop"))
    if flip:
        steps.append(
            layers.RandomFlip("horizontal", seed=seed, dtype="float32", name="random_flip")
        )
    if erasing:
        steps.append(
            layers.RandomErasing(
                factor=(erasing, erasing),
                scale=(0.02, 0.33),
                fill_value=None,
                value_range=(0, 255),
                seed=seed,
                dtype="float32",
                name="random_erasing",
            )
        )
    return keras.Sequential(steps, name="augment")
