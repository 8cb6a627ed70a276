"""weights= on the builders: torchvision/timm state dicts (.pth, .safetensors) and Keras
.weights.h5 files, with a new head, no top, 1 or 4 input channels, and bad files refused in one
line with the model untouched. References are randomly initialized (no download)."""

import logging

import keras
import numpy as np
import pytest

import keras_resnet

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")  # imported first by conftest.py
timm = pytest.importorskip("timm")

SIZE = 64
RTOL_OF_MAX = 1e-4


def _timm(name="resnet18", **kwargs):
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, **kwargs).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
    return model


def _run_torch(model, x):
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def _run_keras(model, x):
    return keras.ops.convert_to_numpy(model(x.transpose(0, 2, 3, 1), training=False))


def _close(got, expected):
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= RTOL_OF_MAX * np.abs(expected).max()


def _images(channels=3, seed=0):
    return np.random.default_rng(seed).standard_normal((2, channels, SIZE, SIZE)).astype("float32")


@pytest.fixture(scope="module")
def resnet18d_files(tmp_path_factory):
    """timm's resnet18d state dict as .pth and .safetensors."""
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("weights")
    reference = _timm("resnet18d")
    state = {k: v.contiguous() for k, v in reference.state_dict().items()}
    torch.save(state, folder / "r18d.pth")
    save_file(state, str(folder / "r18d.safetensors"))
    return reference, folder


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_weights_file_gives_timm_logits(resnet18d_files, suffix):
    reference, folder = resnet18d_files
    model = keras_resnet.ResNet18D(
        input_shape=(SIZE, SIZE, 3), classifier_activation=None, weights=folder / f"r18d{suffix}"
    )
    x = _images()
    _close(_run_keras(model, x), _run_torch(reference, x))


def test_new_head_keeps_backbone_and_says_so(resnet18d_files, caplog):
    reference, folder = resnet18d_files
    with caplog.at_level(logging.WARNING, logger="keras_resnet"):
        model = keras_resnet.ResNet18D(
            input_shape=(SIZE, SIZE, 3), num_classes=10, weights=folder / "r18d.pth"
        )
    notes = [r.getMessage() for r in caplog.records if r.name == "keras_resnet"]
    assert len(notes) == 1 and "classifier 'fc' kept new (10 classes" in notes[0]
    assert "1000 classes" in notes[0]
    headless = keras_resnet.feature_extractor(model)
    x = _images(seed=2)
    got = keras.ops.convert_to_numpy(headless(x.transpose(0, 2, 3, 1), training=False)["P5"])
    _close(got, _run_torch(reference.forward_features, x).transpose(0, 2, 3, 1))


def test_include_top_false_takes_the_backbone(resnet18d_files, caplog):
    reference, folder = resnet18d_files
    with caplog.at_level(logging.WARNING, logger="keras_resnet"):
        model = keras_resnet.get_model(
            "resnet18d",
            include_top=False,
            pooling="avg",
            input_shape=(SIZE, SIZE, 3),
            weights=str(folder / "r18d.safetensors"),
        )
    assert any("no classifier" in r.getMessage() for r in caplog.records)
    reference.reset_classifier(0)
    x = _images(seed=3)
    _close(_run_keras(model, x), _run_torch(reference, x))


@pytest.mark.parametrize("channels", [1, 4])
def test_input_channels_adapted_as_timm(tmp_path, channels):
    """timm's own in_chans adaptation (adapt_input_conv on its conv1) is the reference."""
    from timm.models import adapt_input_conv

    rgb = _timm("resnet18")
    path = tmp_path / "r18.pth"
    torch.save(rgb.state_dict(), path)
    reference = _timm("resnet18", in_chans=channels)
    state = dict(rgb.state_dict())
    state["conv1.weight"] = adapt_input_conv(channels, state["conv1.weight"])
    reference.load_state_dict(state)
    model = keras_resnet.ResNet18(
        input_shape=(SIZE, SIZE, channels), classifier_activation=None, weights=path
    )
    x = _images(channels, seed=channels)
    _close(_run_keras(model, x), _run_torch(reference, x))


def test_keras_weights_file_round_trip(tmp_path):
    model = keras_resnet.ResNet18(input_shape=(32, 32, 3), stem="cifar", width=0.125)
    path = tmp_path / "tiny.weights.h5"
    model.save_weights(path)
    loaded = keras_resnet.ResNet18(input_shape=(32, 32, 3), stem="cifar", width=0.125, weights=path)
    for a, b in zip(model.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    other = keras_resnet.ResNet18(input_shape=(32, 32, 3), stem="cifar", width=0.25)
    before = other.get_weights()
    with pytest.raises(ValueError, match=r"tiny\.weights\.h5.*does not fit"):
        keras_resnet.load_weights(other, path)
    for a, b in zip(before, other.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def _write(path, content: bytes):
    path.write_bytes(content)
    return path


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda d: _write(d / "empty.pt", b""), r"empty\.pt' is empty"),
        (lambda d: _write(d / "text.pt", b"this is not a checkpoint\n"), r"text\.pt' could not"),
        (
            lambda d: _write(d / "bad.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00{}"),
            r"bad\.safetensors' could not be read as safetensors",
        ),
        (lambda d: d / "missing.pth", r"not found.*missing\.pth"),
        (lambda d: _write(d / "weights.npz", b"x"), r"weights must be a \.weights\.h5"),
    ],
)
@pytest.mark.one_backend("torch")
def test_bad_files_are_refused_in_one_line(tmp_path, make, match):
    path = make(tmp_path)
    model = keras_resnet.ResNet18(input_shape=(32, 32, 3), stem="cifar", width=0.125)
    before = model.get_weights()
    with pytest.raises(ValueError, match=match) as error:
        keras_resnet.load_weights(model, path)
    assert "\n" not in str(error.value)
    for a, b in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.one_backend("torch")
def test_truncated_file_is_refused(tmp_path):
    full = tmp_path / "full.pt"
    torch.save(torchvision.models.resnet18().state_dict(), full)
    truncated = _write(tmp_path / "cut.pt", full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"cut\.pt' could not be read") as error:
        keras_resnet.read_state_dict(truncated)
    assert "\n" not in str(error.value)


def test_other_mismatches_still_fail_and_leave_the_model_unchanged(tmp_path):
    path = tmp_path / "r34.pth"
    torch.save(torchvision.models.resnet34().state_dict(), path)
    model = keras_resnet.ResNet18(input_shape=(SIZE, SIZE, 3), num_classes=10)
    before = model.get_weights()
    with pytest.raises(ValueError, match=r"layer1\.2.*no matching layer"):
        keras_resnet.load_weights(model, path)
    for a, b in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    # ResNet-D weights (deep stem) into a plain ResNet: refused, not half-loaded.
    with pytest.raises(ValueError, match=r"conv1\.0\.weight"):
        keras_resnet.load_timm_weights(model, _timm("resnet18d").state_dict(), adapt=True)


def test_upper_case_suffixes_load_like_lower_case(resnet18d_files, tmp_path):
    _, folder = resnet18d_files  # its reference may have lost its head to another test
    reference = timm.create_model("resnet18d", pretrained=False).eval()
    reference.load_state_dict(torch.load(folder / "r18d.pth", weights_only=True))
    x = _images(seed=4)
    expected = _run_torch(reference, x)
    for source, upper in (("r18d.pth", "R18D.PTH"), ("r18d.safetensors", "R18D.SafeTensors")):
        path = tmp_path / upper
        path.write_bytes((folder / source).read_bytes())
        model = keras_resnet.ResNet18D(
            input_shape=(SIZE, SIZE, 3), classifier_activation=None, weights=str(path)
        )
        _close(_run_keras(model, x), expected)


@pytest.mark.one_backend("torch")
def test_upper_case_keras_suffix_round_trip(tmp_path):
    model = keras_resnet.ResNet18(input_shape=(32, 32, 3), stem="cifar", width=0.125)
    lower = tmp_path / "tiny.weights.h5"
    model.save_weights(lower)
    upper = tmp_path / "TINY.WEIGHTS.H5"
    upper.write_bytes(lower.read_bytes())
    loaded = keras_resnet.ResNet18(
        input_shape=(32, 32, 3), stem="cifar", width=0.125, weights=str(upper)
    )
    for a, b in zip(model.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["TINY.WEIGHTS.H5", "tiny.weights.h5"]


@pytest.mark.one_backend("torch")
def test_state_dict_mismatch_says_what_to_pass(resnet18d_files, tmp_path):
    _, folder = resnet18d_files
    plain = keras_resnet.ResNet18(input_shape=(SIZE, SIZE, 3))
    with pytest.raises(ValueError) as error:
        keras_resnet.load_weights(plain, folder / "r18d.pth")
    text = str(error.value)
    assert "\n" not in text and repr(str(folder / "r18d.pth")) in text
    assert (
        "the weights are for stem='deep', downsample='avg': pass stem='deep' and "
        "downsample='avg' (--stem deep --downsample avg) (11 problems;" in text
    )

    # One problem is "1 problem".
    r18 = tmp_path / "r18.pth"
    torch.save(_timm("resnet18").state_dict(), r18)
    cifar = keras_resnet.ResNet18(input_shape=(32, 32, 3), stem="cifar")
    with pytest.raises(ValueError) as error:
        keras_resnet.load_weights(cifar, r18)
    text = str(error.value)
    assert "pass stem='imagenet' (--stem imagenet) (1 problem; the model was left" in text
    assert "conv1_conv/kernel: shape (3, 3, 3, 64) in the model, (7, 7, 3, 64)" in text

    # Another depth and block: the architecture to build.
    r50 = tmp_path / "r50.pth"
    torch.save(torchvision.models.resnet50().state_dict(), r50)
    with pytest.raises(
        ValueError,
        match=r"the weights are for resnet50: build that architecture "
        r"\(get_model\('resnet50'\), --model resnet50\) \(188 problems;",
    ):
        keras_resnet.load_weights(plain, r50)
