"""feature_extractor: P2..P5 of every builder, both data formats, and output_stride's strides."""

import keras
import numpy as np
import pytest

import keras_resnet

# (model, P2, P3, P4, P5) at 224x224, channels_last; docs/MODELS.md gives the same table.
SHAPES_224 = {
    "resnet18": [(56, 56, 64), (28, 28, 128), (14, 14, 256), (7, 7, 512)],
    "resnet50": [(56, 56, 256), (28, 28, 512), (14, 14, 1024), (7, 7, 2048)],
}


@pytest.mark.parametrize("name", sorted(SHAPES_224))
def test_pyramid_keys_and_shapes_at_224(name):
    backbone = keras_resnet.feature_extractor(keras_resnet.get_model(name, include_top=False))
    assert list(backbone.output) == ["P2", "P3", "P4", "P5"]
    assert [tuple(backbone.output[k].shape[1:]) for k in backbone.output] == SHAPES_224[name]


def test_channels_first_shapes():
    model = keras_resnet.ResNet18D(data_format="channels_first", input_shape=(3, 64, 64))
    backbone = keras_resnet.feature_extractor(model)
    shapes = {k: tuple(v.shape[1:]) for k, v in backbone.output.items()}
    assert shapes == {"P2": (64, 16, 16), "P3": (128, 8, 8), "P4": (256, 4, 4), "P5": (512, 2, 2)}


@pytest.mark.parametrize(
    "output_stride, spatial", [(32, [16, 8, 4, 2]), (16, [16, 8, 4, 4]), (8, [16, 8, 8, 8])]
)
@pytest.mark.parametrize("block", ["basic", "bottleneck"])
def test_output_stride_keeps_the_keys_and_dilates(output_stride, spatial, block):
    model = keras_resnet.ResNet18(
        block=block, include_top=False, input_shape=(64, 64, 3), output_stride=output_stride
    )
    backbone = keras_resnet.feature_extractor(model)
    assert [backbone.output[k].shape[1] for k in ("P2", "P3", "P4", "P5")] == spatial
    dilation = model.get_layer(
        "conv5_block2_1_conv" if block == "basic" else "conv5_block2_2_conv"
    ).dilation_rate
    assert dilation == (32 // output_stride,) * 2


def test_features_are_the_models_own_layers():
    model = keras_resnet.ResNet18(input_shape=(32, 32, 3), stem="cifar", width=0.125)
    backbone = keras_resnet.feature_extractor(model)
    assert backbone.count_params() == model.count_params() - model.get_layer("fc").count_params()
    x = np.random.default_rng(0).random((2, 32, 32, 3)).astype("float32")
    probe = keras.Model(model.input, model.get_layer("conv4_block2_out").output)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(backbone(x)["P4"]), keras.ops.convert_to_numpy(probe(x))
    )
    # 'cifar' stem: the strides are 1, 2, 4, 8.
    assert [backbone.output[k].shape[1] for k in ("P2", "P3", "P4", "P5")] == [32, 16, 8, 4]


def test_not_a_keras_resnet_model():
    inputs = keras.Input((8, 8, 3))
    with pytest.raises(ValueError, match="needs a keras_resnet model"):
        keras_resnet.feature_extractor(keras.Model(inputs, keras.layers.Flatten()(inputs)))
