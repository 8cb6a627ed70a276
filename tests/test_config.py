"""ResNetConfig: one validated configuration, a JSON round trip, the builders through it."""

import dataclasses
import json

import keras
import pytest

import keras_resnet
from keras_resnet.config import ARCHITECTURES, ResNetConfig
from keras_resnet.utils import OptionError


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
@pytest.mark.one_backend("jax")
def test_named_configs_round_trip_through_json(name):
    config = ResNetConfig.named(name, num_classes=7, width=0.5, input_shape=(64, 64, 3))
    text = json.dumps(config.to_dict())
    again = ResNetConfig.from_dict(json.loads(text))
    assert again == config
    assert hash(again) == hash(config)  # frozen and hashable after the list -> tuple conversion


def test_rebuilt_architecture_is_the_same_network():
    config = ResNetConfig.named(
        "resnet50", num_classes=10, width=0.25, input_shape=(32, 32, 3), stem="cifar"
    )
    first = keras_resnet.build_model(config)
    second = keras_resnet.build_model(
        ResNetConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    )
    assert [layer.name for layer in first.layers] == [layer.name for layer in second.layers]
    assert first.count_params() == second.count_params()
    second.set_weights(first.get_weights())  # every shape fits


def test_builders_go_through_the_config():
    model = keras_resnet.ResNet18(num_classes=10, input_shape=(32, 32, 3), stem="cifar", width=0.25)
    same = keras_resnet.build_model(
        ResNetConfig.named(
            "resnet18", num_classes=10, input_shape=(32, 32, 3), stem="cifar", width=0.25
        )
    )
    assert model.name == same.name == "resnet18"
    # Trainable parameters by hand: stem 3*3*3*16 + BN 32; stage widths 16, 32, 64, 128 of two
    # basic blocks (3x3 convs, BN, a 1x1 projection where the shape changes); fc 128*10 + 10.
    trainable = lambda m: sum(int(v.numpy().size) for v in m.trainable_weights)  # noqa: E731
    assert trainable(model) == trainable(same) == 432 + 32 + 9344 + 33088 + 131712 + 525568 + 1290
    custom = keras_resnet.ResNet(
        (1, 1), "basic", num_classes=3, input_shape=(16, 16, 1), stem="cifar"
    )
    assert custom.name == "resnet" and custom.output_shape == (None, 3)


@pytest.mark.one_backend("jax")
def test_every_field_has_help_text():
    for field in dataclasses.fields(ResNetConfig):
        assert field.metadata.get("help"), field.name


@pytest.mark.parametrize(
    "values, field",
    [
        ({"width": float("inf")}, "width"),
        ({"width": float("nan")}, "width"),
        ({"block": "dense"}, "block"),
        ({"num_classes": True}, "num_classes"),
        ({"stage_blocks": []}, "stage_blocks"),
        ({"dropout_rate": -0.1}, "dropout_rate"),
    ],
)
@pytest.mark.one_backend("jax")
def test_invalid_values_name_their_field(values, field):
    with pytest.raises(OptionError) as error:
        ResNetConfig(**values)
    assert error.value.field == field
    assert f"received {field}=" in str(error.value)


@pytest.mark.one_backend("jax")
def test_unknown_keys_are_refused():
    with pytest.raises(OptionError, match=r"unknown model option\(s\) \['depth'\]"):
        ResNetConfig.from_dict({"depth": 18})


@pytest.mark.one_backend("jax")
def test_config_is_frozen():
    config = ResNetConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.width = 2.0  # type: ignore[misc]
    assert config.replace(width=2.0).width == 2.0 and config.width == 1.0


def test_data_format_is_read_when_built_not_stored():
    config = ResNetConfig(input_shape=(3, 32, 32), stem="cifar", data_format="channels_first")
    model = keras_resnet.build_model(config)
    assert model.output_shape == (None, 1000)
    assert keras.config.image_data_format() == "channels_last"  # untouched
