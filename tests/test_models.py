"""The builders: exact parameter counts, the walkthrough's shapes, every option, every error."""

import keras
import numpy as np
import pytest

import keras_resnet
from keras_resnet import basic_block, bottleneck_block, count_params, walkthrough

# torchvision 0.29's own counts (sum of p.numel() over parameters()); test_parity re-derives them.
TORCHVISION_PARAMS = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
    "wide_resnet50_2": 68_883_240,
    "resnext50_32x4d": 25_028_904,
}

# timm 1.0's counts for its ResNet-D models (pretrained=False); test_parity re-derives them.
TIMM_PARAMS = {
    "resnet18d": 11_708_744,
    "resnet34d": 21_816_904,
    "resnet50d": 25_576_264,
    "resnet101d": 44_568_392,
    "resnet152d": 60_212_040,
}


def _layer(model, name):
    return model.get_layer(name)


@pytest.mark.one_backend("torch")  # a count of the built layers' weights, the same on every backend
@pytest.mark.parametrize("name", sorted(TORCHVISION_PARAMS))
def test_trainable_params_equal_torchvision(name):
    model = keras_resnet.get_model(name)
    assert count_params(model) == TORCHVISION_PARAMS[name]
    assert model.output.shape == (None, 1000)


@pytest.mark.parametrize("depth", sorted(keras_resnet.DEPTHS))
def test_named_constructors_and_depth_table(depth):
    model = getattr(keras_resnet, f"ResNet{depth}")(num_classes=10, input_shape=(64, 64, 3))
    assert isinstance(model, keras.Model)
    assert model.name == f"resnet{depth}"
    kind, stage_blocks = keras_resnet.DEPTHS[depth]
    blocks = [layer.name for layer in model.layers if layer.name.endswith("_out")]
    assert len(blocks) == sum(stage_blocks)
    # basic blocks have two convolutions in the residual branch, bottlenecks three
    assert ("conv2_block1_3_conv" in [layer.name for layer in model.layers]) == (
        kind == "bottleneck"
    )


def test_walkthrough_reproduces_the_original():
    """ResNet-18 from Bottleneck blocks, expansion 4, 214x214 input: the original walkthrough."""
    model = keras_resnet.ResNet18(block="bottleneck", input_shape=(214, 214, 3))
    rows = [(r.kind, r.name, r.input_shape, r.output_shape) for r in walkthrough(model)]
    assert rows == [
        ("stem", "conv1", (214, 214, 3), (107, 107, 64)),
        ("pool", "pool1", (107, 107, 64), (54, 54, 64)),
        ("block", "conv2_block1", (54, 54, 64), (54, 54, 256)),
        ("block", "conv2_block2", (54, 54, 256), (54, 54, 256)),
        ("stage", "conv2", (54, 54, 64), (54, 54, 256)),
        ("block", "conv3_block1", (54, 54, 256), (27, 27, 512)),
        ("block", "conv3_block2", (27, 27, 512), (27, 27, 512)),
        ("stage", "conv3", (54, 54, 256), (27, 27, 512)),
        ("block", "conv4_block1", (27, 27, 512), (14, 14, 1024)),
        ("block", "conv4_block2", (14, 14, 1024), (14, 14, 1024)),
        ("stage", "conv4", (27, 27, 512), (14, 14, 1024)),
        ("block", "conv5_block1", (14, 14, 1024), (7, 7, 2048)),
        ("block", "conv5_block2", (7, 7, 2048), (7, 7, 2048)),
        ("stage", "conv5", (14, 14, 1024), (7, 7, 2048)),
        ("pooling", "avg_pool", (7, 7, 2048), (2048,)),
        ("head", "fc", (2048,), (1000,)),
    ]

    # Derived from the shapes above, independently of the builder: stem conv + BN, then per stage
    # two blocks of 1x1, 3x3, 1x1 (+ BN gamma/beta) and one projection, then the classifier.
    def stage(c_in, f, e=4):
        first = c_in * f + 9 * f * f + f * e * f + 2 * (f + f + e * f) + c_in * e * f + 2 * e * f
        second = e * f * f + 9 * f * f + f * e * f + 2 * (f + f + e * f)
        return first + second

    expected = 7 * 7 * 3 * 64 + 2 * 64
    expected += stage(64, 64) + stage(256, 128) + stage(512, 256) + stage(1024, 512)
    expected += 2048 * 1000 + 1000
    assert expected == 15_995_176
    assert count_params(model) == expected


def test_flops_match_the_published_multiply_adds():
    # torchvision's table: resnet50 4.09 GMACs, resnet18 1.81 GMACs; count_flops counts a MAC as 2.
    assert keras_resnet.count_flops(keras_resnet.ResNet50()) == pytest.approx(2 * 4.09e9, rel=0.01)
    assert keras_resnet.count_flops(keras_resnet.ResNet18()) == pytest.approx(2 * 1.81e9, rel=0.01)


@pytest.mark.parametrize(
    "expansion, stride_in, strides, out", [(4, "3x3", 1, (8, 8, 256)), (2, "1x1", 2, (4, 4, 128))]
)
def test_bottleneck_block_expansion_and_stride(expansion, stride_in, strides, out):
    inputs = keras.Input((8, 8, 64))
    outputs = bottleneck_block(
        inputs, 64, strides=strides, expansion=expansion, stride_in=stride_in, name="b"
    )
    model = keras.Model(inputs, outputs)
    assert tuple(outputs.shape[1:]) == out
    names = [layer.name for layer in model.layers[1:]]
    # the layers of the block: projection, 1x1, 3x3, 1x1, add, relu; the residual branch in order
    assert set(names) == {
        "b_0_conv",
        "b_0_bn",
        "b_1_conv",
        "b_1_bn",
        "b_1_relu",
        "b_2_conv",
        "b_2_bn",
        "b_2_relu",
        "b_3_conv",
        "b_3_bn",
        "b_add",
        "b_out",
        *(["b_2_pad"] if strides == 2 and stride_in == "3x3" else []),
    }
    branch = [names.index(n) for n in ("b_1_conv", "b_2_conv", "b_3_conv", "b_add", "b_out")]
    assert branch == sorted(branch)
    conv_strides = {n: model.get_layer(n).strides for n in ("b_1_conv", "b_2_conv", "b_0_conv")}
    expected_1x1 = (strides, strides) if stride_in == "1x1" else (1, 1)
    expected_3x3 = (strides, strides) if stride_in == "3x3" else (1, 1)
    assert conv_strides == {
        "b_1_conv": expected_1x1,
        "b_2_conv": expected_3x3,
        "b_0_conv": (strides, strides),
    }
    # inner width 64: 1x1 64*64, 3x3 9*64*64, 1x1 out 64*E*64, projection 64*E*64; BN 2 a channel
    e = expansion
    expected = 64 * 64 + 9 * 64 * 64 + 2 * 64 * e * 64 + 2 * (64 + 64 + 64 * e + 64 * e)
    assert count_params(model) == expected


def test_basic_block_identity_and_projection():
    inputs = keras.Input((8, 8, 64))
    same = keras.Model(inputs, basic_block(inputs, 64, name="a"))
    assert "a_0_conv" not in [layer.name for layer in same.layers]  # identity shortcut
    assert count_params(same) == 2 * 9 * 64 * 64 + 2 * 2 * 64
    down = keras.Model(inputs, basic_block(inputs, 128, strides=2, name="d"))
    assert tuple(down.output.shape[1:]) == (4, 4, 128)
    assert down.get_layer("d_0_conv").strides == (2, 2)


def test_width_scales_stem_and_every_stage():
    model = keras_resnet.ResNet50(width=0.5, input_shape=(64, 64, 3), num_classes=10)
    assert model.get_layer("conv1_conv").filters == 32
    outs = [model.get_layer(f"conv{s}_block1_out").output.shape[-1] for s in range(2, 6)]
    assert outs == [128, 256, 512, 1024]  # 4 * (32, 64, 128, 256)


def test_expansion_override_on_bottleneck_and_basic():
    m = keras_resnet.ResNet50(expansion=2, input_shape=(64, 64, 3))
    assert [m.get_layer(f"conv{s}_block1_out").output.shape[-1] for s in range(2, 6)] == [
        128,
        256,
        512,
        1024,
    ]
    b = keras_resnet.ResNet18(expansion=2, input_shape=(64, 64, 3))
    assert b.get_layer("conv5_block2_out").output.shape[-1] == 1024


@pytest.mark.parametrize("channels", [1, 3, 5])
def test_cifar_stem_small_images_any_channels(channels):
    model = keras_resnet.ResNet18(stem="cifar", input_shape=(28, 28, channels), num_classes=10)
    assert "pool1_pool" not in [layer.name for layer in model.layers]
    assert model.get_layer("conv1_conv").kernel_size == (3, 3)
    assert model.get_layer("conv5_block2_out").output.shape[1:] == (4, 4, 512)
    x = np.random.default_rng(0).random((2, 28, 28, channels)).astype("float32")
    probs = keras.ops.convert_to_numpy(model(x, training=False))
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, rtol=1e-5)


def test_headless_feature_map_and_pooling():
    fmap = keras_resnet.ResNet50(include_top=False, pooling=None)
    assert fmap.output.shape == (None, 7, 7, 2048)
    assert count_params(fmap) == TORCHVISION_PARAMS["resnet50"] - (2048 * 1000 + 1000)
    assert keras_resnet.ResNet18(include_top=False, pooling="max").output.shape == (None, 512)
    top = keras_resnet.ResNet18(
        num_classes=7, dropout_rate=0.2, pooling="max", classifier_activation=None
    )
    assert top.get_layer("dropout").rate == 0.2 and top.output.shape == (None, 7)


def test_initial_weights_follow_the_seed_and_differ_between_layers():
    """Every convolution draws its own kernel from the seeded global state: the same seed gives
    the same network, another seed another, and no two kernels of a shape are equal (a shared
    initializer gave every kernel of a shape the same values, whatever the seed)."""

    def kernels(seed):
        keras.utils.set_random_seed(seed)
        model = keras_resnet.ResNet18(num_classes=10, input_shape=(32, 32, 3), stem="cifar")
        return {w.path: keras.ops.convert_to_numpy(w) for w in model.weights if "kernel" in w.path}

    first, again, other = kernels(1), kernels(1), kernels(2)
    assert len(first) == 21  # 20 convolutions and the classifier
    for path, value in first.items():
        np.testing.assert_array_equal(value, again[path])
        assert not np.array_equal(value, other[path]), path
    layer1 = [v for p, v in first.items() if p.startswith("conv2_") and v.shape == (3, 3, 64, 64)]
    assert len(layer1) == 4
    for i in range(4):
        for j in range(i):
            assert not np.array_equal(layer1[i], layer1[j])


def test_zero_init_residual_zeroes_the_last_bn_of_each_block():
    model = keras_resnet.ResNet50(zero_init_residual=True, input_shape=(32, 32, 3))
    for layer in model.layers:
        if layer.name.endswith("_3_bn"):
            assert not np.any(keras.ops.convert_to_numpy(layer.gamma))
    default = keras_resnet.ResNet50(input_shape=(32, 32, 3))
    assert np.all(keras.ops.convert_to_numpy(default.get_layer("conv2_block1_3_bn").gamma) == 1)


def test_normalization_layer_takes_raw_pixels():
    model = keras_resnet.ResNet18(
        input_shape=(32, 32, 1),
        stem="cifar",
        width=0.125,
        normalization=([100.0], [50.0]),
        num_classes=3,
    )
    assert model.layers[1].name == "normalize"
    probe = keras.Model(model.input, model.get_layer("normalize").output)
    out = keras.ops.convert_to_numpy(probe(np.full((1, 32, 32, 1), 150.0, "float32")))
    np.testing.assert_allclose(out, 1.0, rtol=1e-5)


def test_channels_first_matches_channels_last():
    if keras.backend.backend() == "tensorflow":
        pytest.skip("TensorFlow's CPU kernels have no NCHW convolution")
    kwargs = dict(
        input_shape=(32, 32, 3),
        stem="cifar",
        width=0.125,
        num_classes=4,
        classifier_activation=None,
    )
    last = keras_resnet.ResNet18(data_format="channels_last", **kwargs)
    first = keras_resnet.ResNet18(
        data_format="channels_first", **{**kwargs, "input_shape": (3, 32, 32)}
    )
    first.set_weights(last.get_weights())  # kernels are HWIO in both formats
    x = np.random.default_rng(1).random((2, 32, 32, 3)).astype("float32")
    a = keras.ops.convert_to_numpy(last(x, training=False))
    b = keras.ops.convert_to_numpy(first(x.transpose(0, 3, 1, 2), training=False))
    np.testing.assert_allclose(a, b, atol=1e-5)


def _tiny(**kwargs):
    return keras_resnet.ResNet18(
        input_shape=(32, 32, 3), stem="cifar", width=0.125, num_classes=5, **kwargs
    )


def _predict(model, x):
    return keras.ops.convert_to_numpy(model(x, training=False))


def test_config_round_trip_and_keras_file(tmp_path):
    model = _tiny()
    x = np.random.default_rng(2).random((3, 32, 32, 3)).astype("float32")
    expected = _predict(model, x)
    clone = keras.Model.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    np.testing.assert_array_equal(_predict(clone, x), expected)
    assert [layer.name for layer in clone.layers] == [layer.name for layer in model.layers]
    path = tmp_path / "tiny.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)  # safe_mode stays on: the model is plain layers
    np.testing.assert_array_equal(_predict(loaded, x), expected)


def test_mixed_precision_outputs_float32():
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = _tiny()
        assert model.get_layer("conv1_conv").compute_dtype == "bfloat16"
        assert model.get_layer("conv1_conv").variable_dtype == "float32"
        out = model(np.zeros((2, 32, 32, 3), "float32"), training=False)
        assert keras.backend.standardize_dtype(out.dtype) == "float32"
    finally:
        keras.config.set_dtype_policy("float32")


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: keras_resnet.get_model(19), r"depth .* received depth=19"),
        (lambda: keras_resnet.get_model("resnet19"), r"model .* received model='resnet19'"),
        (lambda: keras_resnet.ResNet18(block="dense"), r"block .* received block='dense'"),
        (lambda: keras_resnet.ResNet18(stem="tiny"), r"stem .* received stem='tiny'"),
        (lambda: keras_resnet.ResNet50(stride_in="2x2"), r"received stride_in='2x2'"),
        (lambda: keras_resnet.ResNet18(width=0), r"width .* received width=0"),
        (lambda: keras_resnet.ResNet18(width=-1.5), r"received width=-1.5"),
        (lambda: keras_resnet.ResNet50(expansion=0), r"expansion .* received expansion=0"),
        (lambda: keras_resnet.ResNet18(num_classes=0), r"num_classes .* received num_classes=0"),
        (lambda: keras_resnet.ResNet18(input_shape=(16, 16, 3)), r"input_shape is too small"),
        (
            lambda: keras_resnet.ResNet18(input_shape=(7, 7, 1), stem="cifar"),
            r"must be >= 8, received input_shape=\(7, 7, 1\)",
        ),
        (lambda: keras_resnet.ResNet18(input_shape=(32, 32)), r"received input_shape=\(32, 32\)"),
        (
            lambda: keras_resnet.ResNet50(groups=32, width_per_group=4, width=0.1),
            r"groups must divide .* received groups=32",
        ),
        (lambda: keras_resnet.ResNet18(groups=2), r"basic blocks need groups=1.*groups=2"),
        (lambda: keras_resnet.ResNet18(pooling="sum"), r"received pooling='sum'"),
        (lambda: keras_resnet.ResNet18(pooling=None), r"pooling must be .*include_top=True"),
        (lambda: keras_resnet.ResNet18(data_format="NHWC"), r"received data_format='NHWC'"),
        (lambda: keras_resnet.ResNet18(dropout_rate=1.0), r"received dropout_rate=1.0"),
        (lambda: keras_resnet.ResNet((2, 0, 2), "basic"), r"received stage_blocks=\(2, 0, 2\)"),
        (
            lambda: keras_resnet.ResNet18(input_shape=(32, 32, 1), normalization=([1, 2], [1, 1])),
            r"normalization must be .* received normalization=",
        ),
    ],
)
def test_bad_arguments_name_the_argument_and_value(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_summary_command_prints_the_walkthrough(capsys):
    from keras_resnet.cli import main

    assert (
        main(["summary", "resnet18", "--block", "bottleneck", "--input-shape", "214", "214", "3"])
        == 0
    )
    out = capsys.readouterr().out
    assert "conv2_block1" in out and "54x54x256" in out and "7x7x2048" in out
    assert "15,995,176 trainable parameters" in out and "GFLOPs" in out
    with pytest.raises(SystemExit) as exit_info:
        main(["summary", "resnet18", "--width", "0"])
    assert exit_info.value.code == 2
    assert "received width=0" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(TIMM_PARAMS))
def test_resnet_d_params_equal_timm(name):
    constructor = getattr(keras_resnet, name.replace("resnet", "ResNet").replace("d", "D"))
    model = constructor()
    assert model.name == name and count_params(model) == TIMM_PARAMS[name]
    assert keras_resnet.ARCHITECTURES[name]["stem"] == "deep"


def test_deep_stem_and_avg_downsample_layers():
    model = keras_resnet.ResNet50D(input_shape=(64, 64, 3), width=0.5)
    widths = [model.get_layer(f"{n}_conv").filters for n in ("conv1a", "conv1b", "conv1")]
    assert widths == [16, 16, 32]  # timm's 32, 32, 64 at width 1
    assert model.get_layer("conv1a_conv").strides == (2, 2)
    pool = model.get_layer("conv3_block1_0_pool")
    assert (pool.pool_size, pool.strides, pool.padding) == ((2, 2), (2, 2), "same")
    assert model.get_layer("conv3_block1_0_conv").strides == (1, 1)
    names = {layer.name for layer in model.layers}
    assert "conv2_block1_0_pool" not in names  # stride 1: a 1x1 projection only, as timm


def test_pooling_default_follows_keras_applications():
    assert keras_resnet.ResNetConfig(include_top=False).pooling is None
    assert keras_resnet.ResNetConfig().pooling == "avg"
    model = keras_resnet.ResNet18(include_top=False, input_shape=(64, 64, 3))
    assert model.output.shape == (None, 2, 2, 512)


def test_config_round_trip_with_the_new_fields():
    config = keras_resnet.ResNetConfig.named(
        "resnet50d",
        include_top=False,
        drop_path_rate=0.1,
        output_stride=16,
        normalization="imagenet",
        num_classes=10,
    )
    values = config.to_dict()
    assert values["pooling"] is None and values["normalization"] == "imagenet"
    assert (values["stem"], values["downsample"], values["output_stride"]) == ("deep", "avg", 16)
    assert keras_resnet.ResNetConfig.from_dict(values) == config
    assert config.stage_strides == [(1, 1), (2, 1), (2, 1), (1, 2)]
    assert config.total_stride == 16


def test_imagenet_normalization_takes_0_255_pixels():
    model = keras_resnet.ResNet18(
        input_shape=(32, 32, 3), stem="cifar", width=0.125, normalization="imagenet"
    )
    probe = keras.Model(model.input, model.get_layer("normalize").output)
    pixel = np.array([0.485, 0.456, 0.406]) * 255 + np.array([0.229, 0.224, 0.225]) * 255
    out = keras.ops.convert_to_numpy(probe(np.broadcast_to(pixel, (1, 32, 32, 3)).astype("f4")))
    np.testing.assert_allclose(out, 1.0, rtol=1e-5)


def _drop_path_rates(model):
    return {
        layer.name: layer.rate for layer in model.layers if isinstance(layer, keras_resnet.DropPath)
    }


def test_drop_path_linear_rule_and_inactive_at_inference():
    model = _tiny(drop_path_rate=0.3, classifier_activation=None)
    rates = _drop_path_rates(model)
    # timm: block i of n drops with rate * i / (n - 1); block 0 has no layer (rate 0).
    assert rates == {
        f"conv{2 + i // 2}_block{1 + i % 2}_drop_path": pytest.approx(0.3 * i / 7)
        for i in range(1, 8)
    }
    assert count_params(model) == count_params(_tiny(classifier_activation=None))
    plain = _tiny(classifier_activation=None)
    for layer in plain.layers:  # by name: DropPath changes the functional layer order
        layer.set_weights(model.get_layer(layer.name).get_weights())
    x = np.random.default_rng(4).random((8, 32, 32, 3)).astype("float32")
    np.testing.assert_array_equal(_predict(model, x), _predict(plain, x))
    trained = keras.ops.convert_to_numpy(model(x, training=True))
    assert not np.allclose(trained, keras.ops.convert_to_numpy(plain(x, training=True)))
    # The plain-Keras copy maps DropPath to the identity.
    clone = keras_resnet.layers.plain_keras_model(model)
    assert not _drop_path_rates(clone)
    np.testing.assert_allclose(_predict(clone, x), _predict(model, x), atol=1e-6)


def test_drop_path_mask_is_per_sample_with_the_right_ratio():
    layer = keras_resnet.DropPath(0.25, seed=3)
    n = 20_000
    out = keras.ops.convert_to_numpy(layer(np.ones((n, 2, 2, 3), "float32"), training=True))
    per_sample = out.reshape(n, -1)
    assert np.all(per_sample == per_sample[:, :1])  # the whole sample is kept or dropped
    kept = per_sample[:, 0] != 0
    np.testing.assert_allclose(per_sample[kept, 0], 1 / 0.75, rtol=1e-6)
    # 4 standard deviations of a binomial(20000, 0.25): 0.0122.
    assert abs((~kept).mean() - 0.25) < 0.0122
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(out, training=False)), out)


def test_freeze_stages_and_backbone():
    from keras_resnet import finetune

    model = _tiny()
    frozen = keras_resnet.freeze_stages(model, 2)
    assert "conv1_conv" in frozen and "conv3_block2_out" in frozen
    assert "conv4_block1_1_conv" not in frozen
    assert not model.get_layer("conv3_block2_2_bn").trainable
    assert model.get_layer("conv4_block1_1_bn").trainable and model.get_layer("fc").trainable
    x = np.random.default_rng(6).random((4, 32, 32, 3)).astype("float32")
    before = keras.ops.convert_to_numpy(model.get_layer("conv2_block1_1_bn").moving_mean)
    model(x, training=True)  # a frozen BN runs in inference mode: its statistics stay
    after = keras.ops.convert_to_numpy(model.get_layer("conv2_block1_1_bn").moving_mean)
    np.testing.assert_array_equal(before, after)
    assert keras_resnet.freeze_backbone(model) == ["avg_pool", "fc", "predictions"]
    assert len(model.trainable_weights) == 2
    finetune.unfreeze(model)
    assert len(model.trainable_weights) == len(_tiny().trainable_weights)
    with pytest.raises(
        ValueError, match=r"freeze_stages must be an integer in \[0, 4\], received 5"
    ):
        keras_resnet.freeze_stages(model, 5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"drop_path_rate": 1.0}, r"drop_path_rate=1\.0"),
        ({"output_stride": 4}, r"output_stride must be one of \(8, 16, 32\), received output_str"),
        ({"downsample": "max"}, r"received downsample='max'"),
        ({"stem": "deeper"}, r"received stem='deeper'"),
        (
            {"input_shape": (32, 32, 1), "normalization": "imagenet"},
            r"normalization='imagenet' needs 3 input channels",
        ),
    ],
)
def test_new_fields_are_checked(kwargs, match):
    with pytest.raises(ValueError, match=match):
        keras_resnet.ResNetConfig(**kwargs)
