"""The model as an export traces it: augmentation swapped for identities, constant
normalization, float32 compute, and the `serve` signature's wrapper (see `serving_model`)."""

from __future__ import annotations

from collections.abc import Iterator

import keras
import numpy as np

from keras_resnet import preprocessing as prep
from keras_resnet.data.gpu_crop import backbone_of
from keras_resnet.layers import plain_keras_model
from keras_resnet.preprocessing import Preprocessing

INPUT_NAME = "images"


def all_layers(model: keras.layers.Layer) -> Iterator[keras.layers.Layer]:
    """Every layer of a model, nested models' layers included (depth first), through the
    public `Model.layers`."""
    for layer in getattr(model, "layers", ()):
        yield layer
        if isinstance(layer, keras.Model):
            yield from all_layers(layer)


def check_channels_last(model: keras.Model) -> None:
    """Raises a one-line `ValueError` for a channels_first model: images here are NHWC."""
    for layer in all_layers(model):
        if getattr(layer, "data_format", None) == "channels_first":
            raise ValueError(
                "only channels_last models are supported, received a model with "
                f"data_format='channels_first' (layer {layer.name!r})"
            )


def is_inference_identity(layer: keras.layers.Layer) -> bool:
    """True for a weightless augmentation layer (or model of them) that is the identity at
    inference, checked on a random batch of its input shape."""
    sublayers = list(all_layers(layer)) if isinstance(layer, keras.Model) else [layer]
    sublayers = [sub for sub in sublayers if not isinstance(sub, keras.layers.InputLayer)]
    if (
        not sublayers
        or layer.weights
        or not all(type(sub).__name__.startswith("Random") for sub in sublayers)
    ):
        return False
    try:
        shape = tuple(layer.input.shape)
    except (AttributeError, ValueError):
        return False
    if len(shape) < 2 or any(d is None for d in shape[1:]):
        return False
    probe = np.random.default_rng(0).uniform(0, 255, (2, *shape[1:])).astype("float32")
    output = keras.ops.convert_to_numpy(layer(probe, training=False))
    return output.shape == probe.shape and np.array_equal(output, probe)


class ConstantNormalization(keras.layers.Layer):
    """`keras.layers.Normalization` with its mean and variance as constants of the traced graph.

    Keras' Normalization keeps a given mean and variance as eager tensors made at build time;
    a traced function captures them, and tf2onnx turns such captures into extra graph inputs
    that a client would have to feed. The same operations on arrays converted inside `call`
    become constants instead, and give the same numbers.
    """

    def __init__(self, mean: np.ndarray, variance: np.ndarray, **kwargs):
        super().__init__(**kwargs)
        self.mean_value, self.variance_value = mean, variance

    def call(self, inputs):
        inputs = keras.ops.convert_to_tensor(inputs, dtype=self.compute_dtype)
        mean = keras.ops.convert_to_tensor(self.mean_value)
        variance = keras.ops.convert_to_tensor(self.variance_value)
        return keras.ops.divide(
            keras.ops.subtract(inputs, mean),
            keras.ops.maximum(keras.ops.sqrt(variance), keras.config.epsilon()),
        )

    def compute_output_shape(self, input_shape):
        return input_shape


class InferenceIdentity(keras.layers.Layer):
    """Stands in for augmentation at inference (takes the `mask` and `training` it was called
    with, which `keras.layers.Identity` refuses)."""

    def call(self, inputs, mask=None, training=None):
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape


def _inference_layer(layer: keras.layers.Layer) -> keras.layers.Layer:
    if is_inference_identity(layer):
        return InferenceIdentity(name=layer.name)
    if (
        isinstance(layer, keras.layers.Normalization)
        and layer.input_mean is not None
        and not layer.invert
    ):
        return ConstantNormalization(
            keras.ops.convert_to_numpy(layer.mean),
            keras.ops.convert_to_numpy(layer.variance),
            dtype=layer.dtype_policy,
            name=layer.name,
        )
    return layer


def inference_model(model: keras.Model) -> keras.Model:
    """The model as the export traces it; the same layer objects and weights.

    - augmentation that is the identity at inference becomes `InferenceIdentity`;
    - a `Normalization` with a given mean and variance becomes `ConstantNormalization`.

    A model that cannot be cloned (subclassed) is returned as it is.
    """
    try:
        return keras.models.clone_model(model, clone_function=_inference_layer)
    except ValueError:
        # clone_model takes a clone_function for functional and Sequential models only; a
        # subclassed model is exported unchanged.
        return model


def _float32_config(config):
    """A serialized model with every dtype policy and half-precision dtype made float32 (nested
    models included: a nested Sequential built under mixed_bfloat16 has a 'bfloat16' input);
    integer and boolean dtypes stay as they are."""
    if isinstance(config, dict):
        if config.get("class_name") == "DTypePolicy":
            return "float32"
        return {key: _float32_config(value) for key, value in config.items()}
    if isinstance(config, list):
        return [_float32_config(value) for value in config]
    if config in ("bfloat16", "float16") or (
        isinstance(config, str) and config.startswith("mixed_")
    ):
        return "float32"
    return config


def as_float32(model: keras.Model) -> keras.Model:
    """The same architecture and weights computing in float32 (for a mixed-precision model).

    ONNX export needs it: Keras' ONNX export requires the float32 policy, tf2onnx fails on
    bfloat16 ("unsupported numpy dtype 'bfloat16'"), and onnxruntime's CPU kernels are float32.
    The weights of a mixed-precision model are float32 already, so nothing is rounded.
    """
    if all(
        getattr(layer, "dtype_policy", None) is None or layer.dtype_policy.name == "float32"
        for layer in [model, *all_layers(model)]
    ):
        return model
    config = _float32_config(keras.saving.serialize_keras_object(model))
    clone = keras.saving.deserialize_keras_object(config, safe_mode=True)
    # By layer name: a cloned functional model may list its weights in another order.
    originals = {layer.name: layer for layer in all_layers(model) if layer.weights}
    for layer in all_layers(clone):
        if layer.weights and not isinstance(layer, keras.Model):
            layer.set_weights(originals[layer.name].get_weights())
    return clone


def serving_model(
    model: keras.Model, record: Preprocessing | None = None, *, float32: bool = False
) -> keras.Model:
    """A Keras model for the `serve` signature: float32 0-255 images of any size in, float32
    probabilities out (see `keras_resnet.serving.export`).

    Args:
        model: the trained model (raw pixels of its input size in, probabilities out).
        record: the model's preprocessing record: its crop runs first (`CropResize`, the
            pixels the run evaluated on); None: the package's recipe for the model's input.
        float32: compute in float32 even if the model was trained in mixed precision.

    Returns:
        The wrapper model (its input is named 'images').
    """
    check_channels_last(model)
    if float32:
        model = as_float32(model)
    record = record or prep.record_of_model(model)
    channels = model.input_shape[-1]
    images = keras.Input((None, None, channels), dtype="float32", name=INPUT_NAME)
    x = prep.CropResize(record, dtype="float32", name="preprocess")(images)
    x = inference_model(model)(x, training=False)
    x = keras.layers.Activation("linear", dtype="float32", name="probabilities")(x)
    return keras.Model(images, x, name="serving")


def model_info(model: keras.Model) -> dict:
    """Input shape, class count and dtype policies of a model, for `export.json`."""
    policies = sorted(
        {
            layer.dtype_policy.name
            for layer in [model, *all_layers(model)]
            if hasattr(layer, "dtype_policy")
        }
    )
    return {
        "image_shape": list(model.input_shape[1:]),
        "num_classes": int(model.output_shape[-1]),
        "dtype_policies": policies,
    }


def portable_model(model: keras.Model) -> keras.Model:
    """The same network and weights with Keras' own layers only, nested models included, for a
    `.keras` file that loads where keras_resnet is not installed.

    `keras_resnet.layers.plain_keras_model` swaps the layers of the outer model; a nested model
    (a run's 'augment' block holding `RandomPadCrop`) is rebuilt from its config, so it is made
    plain first. A training model that crops on the accelerator gives its network alone.
    """
    model = backbone_of(model)
    if any(isinstance(layer, keras.Model) for layer in model.layers):
        model = keras.models.clone_model(
            model,
            clone_function=lambda layer: (
                plain_keras_model(layer) if isinstance(layer, keras.Model) else layer
            ),
        )
    return plain_keras_model(model)
