"""Parity with torchvision and timm: same parameter counts, same logits once the weights are
copied.

The reference is torchvision's or timm's own model, built without weights (no download), its
batch-norm running statistics and affine parameters randomized (so a wrongly mapped BN would show),
in eval mode and float32. Tolerance: max|ours - ref| <= 1e-4 * max|ref|.
"""

import keras
import numpy as np
import pytest

import keras_resnet

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")  # imported first by conftest.py

RTOL_OF_MAX = 1e-4
# (torchvision name, input size): every depth at 224 and 214, where a strided 'same' padding would
# differ from PyTorch's symmetric padding (107 -> 54 etc. are odd sizes); wide and ResNeXt at 214.
# ResNet-101 and -152 repeat ResNet-50's blocks: the mapping is checked on every backend through
# the smaller nets, the deep ones once (on TensorFlow), to keep the three backends in CI's time.
_DEEP = pytest.mark.one_backend("tensorflow")
CASES = [
    (f"resnet{d}", s) if d <= 50 else pytest.param(f"resnet{d}", s, marks=_DEEP)
    for d in (18, 34, 50, 101, 152)
    for s in (224, 214)
] + [
    ("wide_resnet50_2", 214),
    ("resnext50_32x4d", 214),
]


def _reference(name: str, seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    return _randomize_bn(getattr(torchvision.models, name)(weights=None, **kwargs).eval(), seed)


def _randomize_bn(model, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(n, generator=generator) * 0.1)
    return model


def _ours(name, size, state_dict):
    model = keras_resnet.get_model(name, input_shape=(size, size, 3), classifier_activation=None)
    return keras_resnet.load_torchvision_weights(model, state_dict)


@pytest.mark.parametrize("name, size", CASES)
def test_logits_match_torchvision(name, size):
    reference = _reference(name)
    x = np.random.default_rng(size).standard_normal((2, 3, size, size)).astype("float32")
    with torch.no_grad():
        expected = reference(torch.from_numpy(x)).numpy()
    model = _ours(name, size, reference.state_dict())
    assert keras_resnet.count_params(model) == sum(p.numel() for p in reference.parameters())
    got = keras.ops.convert_to_numpy(model(x.transpose(0, 2, 3, 1), training=False))
    diff = np.abs(got - expected).max() / np.abs(expected).max()
    print(f"{keras.backend.backend()} {name} {size}: max|diff|/max|ref| = {diff:.2e}")
    assert diff <= RTOL_OF_MAX


def test_weights_file_is_read_as_data_only(tmp_path):
    reference = _reference("resnet18")
    path = tmp_path / "resnet18.pt"
    torch.save(reference.state_dict(), path)
    model = _ours("resnet18", 64, str(path))
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype("float32")
    with torch.no_grad():
        expected = reference(torch.from_numpy(x)).numpy()
    got = keras.ops.convert_to_numpy(model(x.transpose(0, 2, 3, 1), training=False))
    assert np.abs(got - expected).max() <= RTOL_OF_MAX * np.abs(expected).max()

    # A file that needs more than tensors to load (here: a pickled callable) is refused.
    rogue = tmp_path / "rogue.pt"
    torch.save({"conv1.weight": reference.conv1.weight, "hook": np.random.default_rng}, rogue)
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(ValueError, match="refused"):
        keras_resnet.load_torchvision_weights(model, str(rogue))
    with pytest.raises(ValueError, match="not found"):
        keras_resnet.load_torchvision_weights(model, str(tmp_path / "missing.pt"))
    for a, b in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "source, target_kwargs, match",
    [
        ("resnet34", {}, r"conv3_block4_1_conv|layer1\.2"),  # more blocks than the model has
        ("resnet18", {"num_classes": 10}, r"fc/.*shape \(512, 10\)"),  # a different head
        ("resnet50", {}, r"no matching layer|missing"),  # bottleneck weights into basic blocks
    ],
)
def test_mismatched_state_dict_is_refused_and_leaves_weights_unchanged(
    source, target_kwargs, match
):
    model = keras_resnet.ResNet18(input_shape=(64, 64, 3), **target_kwargs)
    before = [w.copy() for w in model.get_weights()]
    state_dict = getattr(torchvision.models, source)(weights=None).state_dict()
    with pytest.raises(ValueError, match=match):
        keras_resnet.load_torchvision_weights(model, state_dict)
    for a, b in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_headless_model_takes_the_backbone():
    reference = _reference("resnet18")
    model = keras_resnet.ResNet18(include_top=False, pooling="avg", input_shape=(64, 64, 3))
    keras_resnet.load_torchvision_weights(model, reference.state_dict())
    x = np.random.default_rng(3).standard_normal((1, 3, 64, 64)).astype("float32")
    reference.fc = torch.nn.Identity()
    with torch.no_grad():
        expected = reference(torch.from_numpy(x)).numpy()
    got = keras.ops.convert_to_numpy(model(x.transpose(0, 2, 3, 1), training=False))
    assert np.abs(got - expected).max() <= RTOL_OF_MAX * np.abs(expected).max()


# timm (imported after torchvision, which conftest.py imports before TensorFlow). One fast case per
# variant in the default run; the 224 px and deep ones are slow. 193 is odd at every stage.
TIMM_FAST = [("resnet18", 193), ("resnet18d", 193), ("resnet34d", 65), ("resnet50d", 97)]
TIMM_SLOW = [
    (name, size)
    for name in ("resnet18", "resnet50", "resnet18d", "resnet34d", "resnet50d", "resnet101d")
    for size in (224, 193)
    if (name, size) not in TIMM_FAST
] + [("resnet101d", 65)]


def _timm_reference(name: str, seed: int = 0, **kwargs):
    timm = pytest.importorskip("timm")
    torch.manual_seed(seed)
    return _randomize_bn(timm.create_model(name, pretrained=False, **kwargs).eval(), seed)


def _max_rel_diff(reference, model, size, channels=3):
    x = np.random.default_rng(size).standard_normal((2, channels, size, size)).astype("float32")
    with torch.no_grad():
        expected = reference(torch.from_numpy(x)).numpy()
    got = keras.ops.convert_to_numpy(model(x.transpose(0, 2, 3, 1), training=False))
    assert got.shape == expected.shape
    return float(np.abs(got - expected).max() / np.abs(expected).max())


def _check_timm(name, size, **kwargs):
    reference = _timm_reference(name, **kwargs)
    model = keras_resnet.get_model(
        name, input_shape=(size, size, 3), classifier_activation=None, **kwargs
    )
    keras_resnet.load_timm_weights(model, reference.state_dict())
    assert keras_resnet.count_params(model) == sum(p.numel() for p in reference.parameters())
    diff = _max_rel_diff(reference, model, size)
    print(f"{keras.backend.backend()} timm {name} {size} {kwargs}: max|diff|/max|ref| = {diff:.2e}")
    assert diff <= RTOL_OF_MAX


@pytest.mark.parametrize("name, size", TIMM_FAST)
def test_logits_match_timm(name, size):
    _check_timm(name, size)


@pytest.mark.slow
@pytest.mark.parametrize("name, size", TIMM_SLOW)
def test_logits_match_timm_slow(name, size):
    _check_timm(name, size)


@pytest.mark.parametrize(
    "name, output_stride", [("resnet50d", 8), ("resnet18d", 16), ("resnet18", 8)]
)
def test_dilated_logits_match_timm(name, output_stride):
    """output_stride for basic and bottleneck blocks, with timm's avg downsampling when dilated."""
    _check_timm(name, 67, output_stride=output_stride)


def test_dilated_resnet50_matches_torchvision_replace_stride_with_dilation():
    reference = _reference("resnet50", replace_stride_with_dilation=[False, True, True])
    model = keras_resnet.ResNet50(
        input_shape=(67, 67, 3), output_stride=8, classifier_activation=None
    )
    keras_resnet.load_torchvision_weights(model, reference.state_dict())
    assert _max_rel_diff(reference, model, 67) <= RTOL_OF_MAX
    # The features too: torchvision's layer4 output (stride 8) against P5.
    backbone = keras_resnet.feature_extractor(model)
    x = np.random.default_rng(5).standard_normal((1, 3, 67, 67)).astype("float32")
    body = torch.nn.Sequential(*list(reference.children())[:-2])
    with torch.no_grad():
        expected = body(torch.from_numpy(x)).numpy().transpose(0, 2, 3, 1)
    got = keras.ops.convert_to_numpy(backbone(x.transpose(0, 2, 3, 1), training=False)["P5"])
    assert got.shape == expected.shape == (1, 9, 9, 2048)
    assert np.abs(got - expected).max() <= RTOL_OF_MAX * np.abs(expected).max()
