"""Parity with torchvision: same parameter counts, same logits once the weights are copied.

The reference is torchvision's own model, built with weights=None (no download), its batch-norm
running statistics and affine parameters randomized (so a wrongly mapped BN would show), in eval
mode and float32. Tolerance: max|ours - ref| <= 1e-4 * max|ref|.
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
CASES = [(f"resnet{d}", s) for d in (18, 34, 50, 101, 152) for s in (224, 214)] + [
    ("wide_resnet50_2", 214),
    ("resnext50_32x4d", 214),
]


def _reference(name: str, seed: int = 0):
    torch.manual_seed(seed)
    model = getattr(torchvision.models, name)(weights=None).eval()
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
