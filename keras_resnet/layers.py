"""keras_resnet's own Keras layers, registered as serializable when this module is imported.

Registered classes load from `.keras` files under `safe_mode=True`: they are package code, not
code from the file.
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_resnet")
class RandomPadCrop(keras.layers.Layer):
    """Random crop with zero padding, one offset per image, in training only (NHWC).

    Pads `padding` pixels on each side and crops back to the input size at a random offset:
    the CIFAR/Fashion-MNIST augmentation of He et al. (2015). Keras' `RandomCrop` uses one
    location for the whole batch, and `RandomTranslation` (an interpolating affine warp)
    made a training step 5 times slower on JAX/CPU; this is two gathers.
    """

    def __init__(self, padding: int = 4, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.padding = int(padding)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=None):
        if not training or not self.padding:
            return images
        p = self.padding
        batch, height, width = ops.shape(images)[0], images.shape[1], images.shape[2]
        padded = ops.pad(images, [[0, 0], [p, p], [p, p], [0, 0]])
        offsets = keras.random.randint((batch, 2), 0, 2 * p + 1, seed=self.seed_generator)
        rows = offsets[:, :1] + ops.arange(height, dtype=offsets.dtype)[None, :]
        cols = offsets[:, 1:] + ops.arange(width, dtype=offsets.dtype)[None, :]
        rows = ops.broadcast_to(
            rows[:, :, None, None], (batch, height, width + 2 * p, images.shape[3])
        )
        x = ops.take_along_axis(padded, rows, axis=1)
        cols = ops.broadcast_to(cols[:, None, :, None], (batch, height, width, images.shape[3]))
        return ops.take_along_axis(x, cols, axis=2)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "padding": self.padding, "seed": self.seed}
