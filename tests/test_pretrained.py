"""Pretrained weights by name (keras_resnet.pretrained): the registry, the download into Keras'
cache with its hash check, offline mode and mirrors, the builders' `weights="imagenet"`, and
ImageNet's class names. Nothing is downloaded from the internet: randomly initialized timm and
torchvision models stand in for the published files, served from `file://` URLs and from an HTTP
server on 127.0.0.1."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import logging
import sys
import threading
from pathlib import Path

import keras
import numpy as np
import pytest

import keras_resnet
from keras_resnet import pretrained
from keras_resnet.config import ARCHITECTURES, ResNetConfig

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")  # imported first by conftest.py
timm = pytest.importorskip("timm")

SIZE = 64
RTOL_OF_MAX = 1e-4  # tests/test_parity.py's tolerance: max|ours - ref| <= 1e-4 * max|ref|
MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)  # not ImageNet's, so that the test sees which


def _randomize_bn(model, seed=1):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(n, generator=generator) * 0.1)
    return model.eval()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """Stand-ins for published files: timm's resnet18 as .safetensors (timm's HF layout) and
    torchvision's resnet18 as a torch.hub-named .pth."""
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("published")
    torch.manual_seed(0)
    timm_model = _randomize_bn(timm.create_model("resnet18", pretrained=False))
    save_file(
        {k: v.contiguous() for k, v in timm_model.state_dict().items()},
        str(folder / "model.safetensors"),
    )
    torch.manual_seed(1)
    tv_model = _randomize_bn(torchvision.models.resnet18(weights=None), seed=2)
    scratch = folder / "scratch.pth"
    torch.save(tv_model.state_dict(), scratch)
    prefix = _sha256(scratch)[:8]
    tv_file = folder / f"resnet18-{prefix}.pth"
    scratch.rename(tv_file)
    return {
        "folder": folder,
        "timm": timm_model,
        "timm_file": folder / "model.safetensors",
        "torchvision": tv_model,
        "tv_file": tv_file,
        "tv_prefix": prefix,
    }


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A fresh KERAS_HOME, no offline mode or mirror, and a registry restored afterwards."""
    home = tmp_path / "keras_home"
    monkeypatch.setenv("KERAS_HOME", str(home))
    monkeypatch.delenv(pretrained.OFFLINE_ENV, raising=False)
    monkeypatch.delenv(pretrained.MIRROR_ENV, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setattr(pretrained, "_REGISTRY", dict(pretrained._REGISTRY))
    monkeypatch.setattr(pretrained, "_DEFAULTS", dict(pretrained._DEFAULTS))
    return home / "models"


class _Server:
    """A static file server on 127.0.0.1 in a thread; `requests` lists the paths asked for."""

    def __init__(self, folder: Path):
        requests = self.requests = []

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args):
                requests.append(self.path)

        handler = functools.partial(Handler, directory=str(folder))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def server(published):
    served = _Server(published["folder"])
    yield served
    served.close()


def _register_timm(name="resnet18.stand_in", origin=None, published=None, **kwargs):
    kwargs.setdefault("sha256", _sha256(published["timm_file"]))
    return keras_resnet.pretrained.register_weights(
        name,
        origin or published["timm_file"].as_uri(),
        model="resnet18",
        format="timm",
        mean=MEAN,
        std=STD,
        interpolation="bicubic",
        **kwargs,
    )


def _cache_listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def _one_line(error) -> str:
    text = str(error.value)
    assert "\n" not in text
    return text


# ---------------------------------------------------------------------------------------------
# Download, cache, hash
# ---------------------------------------------------------------------------------------------


@pytest.mark.one_backend("tensorflow")
def test_download_is_cached_and_hash_checked(cache, published, server):
    entry = _register_timm(origin=f"{server.url}/model.safetensors", published=published)
    path = pretrained.weights_file(entry)
    assert path == cache / "resnet18.stand_in.safetensors"
    assert path.read_bytes() == published["timm_file"].read_bytes()
    assert _cache_listing(cache) == ["resnet18.stand_in.safetensors"]  # no scratch left
    assert server.requests == ["/model.safetensors"]
    assert pretrained.weights_file("RESNET18.stand_in") == path  # cached: no second request
    assert server.requests == ["/model.safetensors"]

    # torch.hub's check: a prefix of the sha256, as in torchvision's file names.
    tv = pretrained.register_weights(
        "resnet18.tv_stand_in",
        f"{server.url}/{published['tv_file'].name}",
        model="resnet18",
        sha256=published["tv_prefix"],
        file_name=published["tv_file"].name,
    )
    assert pretrained.weights_file(tv).read_bytes() == published["tv_file"].read_bytes()


@pytest.mark.one_backend("tensorflow")
def test_wrong_hash_or_cut_file_leaves_nothing_in_the_cache(cache, published, server, tmp_path):
    wrong = "0" * 64
    _register_timm(origin=f"{server.url}/model.safetensors", published=published, sha256=wrong)
    with pytest.raises(ValueError, match=r"sha256 [0-9a-f]{64}, expected 0{64}") as error:
        pretrained.weights_file("resnet18.stand_in")
    assert "nothing was cached" in _one_line(error)
    assert _cache_listing(cache) == []
    with pytest.raises(ValueError, match="expected 0000"):  # the next call downloads again
        pretrained.weights_file("resnet18.stand_in")
    assert server.requests == ["/model.safetensors"] * 2

    # A cut .safetensors file with no registered hash: its header does not read whole.
    cut = tmp_path / "cut.safetensors"
    data = published["timm_file"].read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    _register_timm("resnet18.cut", origin=cut.as_uri(), published=published, sha256=None)
    with pytest.raises(ValueError, match="not a whole safetensors file") as error:
        pretrained.weights_file("resnet18.cut")
    _one_line(error)
    assert _cache_listing(cache) == []

    # A failed download (404).
    _register_timm("resnet18.gone", origin=f"{server.url}/gone.safetensors", published=published)
    with pytest.raises(ValueError, match=r"could not download weights 'resnet18.gone'.*404"):
        pretrained.weights_file("resnet18.gone")
    assert _cache_listing(cache) == []


@pytest.mark.one_backend("tensorflow")
def test_offline_names_the_expected_path_and_uses_the_cache(cache, published, server, monkeypatch):
    entry = _register_timm(origin=f"{server.url}/model.safetensors", published=published)
    monkeypatch.setenv(pretrained.OFFLINE_ENV, "1")
    with pytest.raises(ValueError, match="KERAS_RESNET_OFFLINE=1") as error:
        keras_resnet.ResNet18(weights="resnet18.stand_in", input_shape=(SIZE, SIZE, 3))
    assert str(cache / "resnet18.stand_in.safetensors") in _one_line(error)
    assert server.requests == []  # the network was never touched

    monkeypatch.setenv(pretrained.OFFLINE_ENV, "0")
    path = pretrained.weights_file(entry)
    monkeypatch.setenv(pretrained.OFFLINE_ENV, "1")
    assert pretrained.weights_file(entry) == path
    assert server.requests == ["/model.safetensors"]

    monkeypatch.setenv(pretrained.OFFLINE_ENV, "maybe")
    with pytest.raises(ValueError, match="KERAS_RESNET_OFFLINE must be 1 .* received"):
        pretrained.weights_file(_register_timm("resnet18.other", published=published))


@pytest.mark.one_backend("tensorflow")
def test_mirror_folder_and_mirror_url(cache, published, server, tmp_path, monkeypatch):
    unreachable = "http://127.0.0.1:9/nowhere/model.safetensors"  # port 9: nothing listens
    entry = _register_timm(origin=unreachable, published=published)
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / entry.file_name).write_bytes(published["timm_file"].read_bytes())

    # A folder, also offline (a folder is not the network).
    monkeypatch.setenv(pretrained.MIRROR_ENV, str(mirror))
    monkeypatch.setenv(pretrained.OFFLINE_ENV, "1")
    path = pretrained.weights_file(entry)
    assert (
        path == cache / entry.file_name
        and path.read_bytes() == (mirror / entry.file_name).read_bytes()
    )

    missing = _register_timm("resnet18.missing", origin=unreachable, published=published)
    with pytest.raises(ValueError, match="not in the mirror folder") as error:
        pretrained.weights_file(missing)
    assert str(mirror.resolve() / "resnet18.missing.safetensors") in _one_line(error)

    # A URL prefix: the file is asked for by its cache name.
    monkeypatch.delenv(pretrained.OFFLINE_ENV)
    (published["folder"] / "sub").mkdir(exist_ok=True)
    (published["folder"] / "sub" / "resnet18.url.safetensors").write_bytes(
        published["timm_file"].read_bytes()
    )
    monkeypatch.setenv(pretrained.MIRROR_ENV, f"{server.url}/sub/")
    by_url = _register_timm("resnet18.url", origin=unreachable, published=published)
    assert pretrained.weights_file(by_url).read_bytes() == published["timm_file"].read_bytes()
    assert server.requests == ["/sub/resnet18.url.safetensors"]

    monkeypatch.setenv(pretrained.MIRROR_ENV, str(tmp_path / "no_such_folder"))
    with pytest.raises(ValueError, match="KERAS_RESNET_WEIGHTS_MIRROR must be a folder"):
        pretrained.weights_file(
            _register_timm("resnet18.x", origin=unreachable, published=published)
        )


# ---------------------------------------------------------------------------------------------
# The builders
# ---------------------------------------------------------------------------------------------


def _logits(model, images_nchw):
    return keras.ops.convert_to_numpy(model(images_nchw.transpose(0, 2, 3, 1), training=False))


def _close(got, expected):
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= RTOL_OF_MAX * np.abs(expected).max()


def _reference(model, images_nchw):
    with torch.no_grad():
        return model(torch.from_numpy(images_nchw)).numpy()


def test_builder_by_name_gives_timm_logits_on_raw_pixels(cache, published):
    entry = _register_timm(published=published)
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 3, SIZE, SIZE)).astype("float32")
    mean = np.array(MEAN, "float32")[None, :, None, None]
    std = np.array(STD, "float32")[None, :, None, None]
    normalized = (pixels / 255 - mean) / std
    expected = _reference(published["timm"], normalized)

    model = keras_resnet.ResNet18(
        weights="resnet18.stand_in", input_shape=(SIZE, SIZE, 3), classifier_activation=None
    )
    mean_255, std_255 = entry.normalization
    np.testing.assert_allclose(mean_255, np.array(MEAN) * 255)
    np.testing.assert_allclose(std_255, np.array(STD) * 255)
    assert "normalize" in [layer.name for layer in model.layers]
    _close(_logits(model, pixels), expected)

    # The tag alone, and "imagenet" when it stands for these weights.
    pretrained._DEFAULTS["resnet18"] = "resnet18.stand_in"
    for spec in ("stand_in", "imagenet"):
        again = keras_resnet.get_model(
            "resnet18", weights=spec, input_shape=(SIZE, SIZE, 3), classifier_activation=None
        )
        _close(_logits(again, pixels), expected)

    # normalization=None: the bare network, fed normalized images.
    bare = keras_resnet.ResNet18(
        weights="stand_in",
        normalization=None,
        input_shape=(SIZE, SIZE, 3),
        classifier_activation=None,
    )
    assert "normalize" not in [layer.name for layer in bare.layers]
    _close(_logits(bare, normalized.astype("float32")), expected)

    # Another class count: the backbone, a new head.
    ten = keras_resnet.ResNet18(weights="stand_in", num_classes=10, input_shape=(SIZE, SIZE, 3))
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(ten.get_layer("conv1_conv").kernel),
        published["timm"].conv1.weight.detach().numpy().transpose(2, 3, 1, 0),
    )
    assert ten.get_layer("fc").kernel.shape == (512, 10)


def test_torchvision_pth_by_name_and_build_model(cache, published):
    pretrained.register_weights(
        "resnet18.TV_STAND_IN",
        published["tv_file"].as_uri(),
        model="resnet18",
        sha256=published["tv_prefix"],
        file_name=published["tv_file"].name,
    )
    pixels = np.random.default_rng(1).uniform(0, 255, (2, 3, SIZE, SIZE)).astype("float32")
    mean = np.array((0.485, 0.456, 0.406), "float32")[None, :, None, None]
    std = np.array((0.229, 0.224, 0.225), "float32")[None, :, None, None]
    expected = _reference(published["torchvision"], (pixels / 255 - mean) / std)
    model = keras_resnet.ResNet18(
        weights="tv_stand_in", input_shape=(SIZE, SIZE, 3), classifier_activation=None
    )
    _close(_logits(model, pixels), expected)

    # build_model, what training calls: the config's normalization as given.
    config = ResNetConfig.named(
        "resnet18",
        input_shape=(SIZE, SIZE, 3),
        classifier_activation=None,
        normalization="imagenet",
    )
    built = keras_resnet.build_model(config, weights="resnet18.tv_stand_in")
    _close(_logits(built, pixels), expected)


@pytest.mark.one_backend("tensorflow")
def test_mismatch_says_what_to_pass(cache, published):
    _register_timm(published=published)
    with pytest.raises(ValueError) as error:
        keras_resnet.ResNet18(weights="stand_in", stem="cifar", input_shape=(32, 32, 3))
    text = _one_line(error)
    assert "pass stem='imagenet' (--stem imagenet)" in text
    assert str(cache / "resnet18.stand_in.safetensors") in text
    assert "(1 problem;" in text and "1 problems" not in text
    assert text.startswith("weights='stand_in' (resnet18.stand_in): ")

    # What training builds: a CIFAR-stem ResNet-18 config through build_model.
    config = ResNetConfig.named("resnet18", stem="cifar", input_shape=(32, 32, 1))
    with pytest.raises(ValueError, match=r"--stem imagenet"):
        keras_resnet.build_model(config, weights="resnet18.stand_in")


@pytest.mark.one_backend("tensorflow")
def test_unknown_or_foreign_names_are_refused_in_one_line(cache):
    with pytest.raises(ValueError, match="unknown weights 'nope' for resnet18") as error:
        keras_resnet.ResNet18(weights="nope")
    text = _one_line(error)
    assert "imagenet (= resnet18.a1_in1k)" in text and "resnet18.IMAGENET1K_V1" in text
    assert "resnet50" not in text
    with pytest.raises(ValueError, match="'resnet50.a1_in1k' are for resnet50, not resnet18"):
        keras_resnet.ResNet18(weights="resnet50.a1_in1k")
    with pytest.raises(ValueError, match="named architectures only"):
        keras_resnet.ResNet((1, 1, 1, 1), "basic", weights="imagenet")
    assert _cache_listing(cache) == []  # nothing was downloaded


@pytest.mark.one_backend("tensorflow")
def test_torch_missing_is_one_line_naming_pip_install(cache, published, monkeypatch):
    model = keras_resnet.ResNet18(input_shape=(SIZE, SIZE, 3))
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    with pytest.raises(ValueError, match="needs torch: pip install torch") as error:
        keras_resnet.load_weights(model, published["tv_file"])
    _one_line(error)


@pytest.mark.one_backend("tensorflow")
def test_other_input_channels_keep_the_config_normalization(cache, published, caplog):
    _register_timm(published=published)
    with caplog.at_level(logging.WARNING, logger="keras_resnet"):
        model = keras_resnet.ResNet18(weights="stand_in", input_shape=(SIZE, SIZE, 1))
    assert "normalize" not in [layer.name for layer in model.layers]
    notes = [r.getMessage() for r in caplog.records if r.name == "keras_resnet"]
    assert any("normalization not set from the weights resnet18.stand_in" in n for n in notes)
    assert any("conv1_conv adapted from 3 input channels to 1" in n for n in notes)


# ---------------------------------------------------------------------------------------------
# Class names
# ---------------------------------------------------------------------------------------------


@pytest.mark.one_backend("tensorflow")
def test_imagenet_classes_are_torchvisions():
    from torchvision.models._meta import _IMAGENET_CATEGORIES

    classes = keras_resnet.pretrained.imagenet_classes()
    assert len(classes) == 1000
    assert list(classes) == list(_IMAGENET_CATEGORIES)


@pytest.mark.one_backend("tensorflow")
def test_decode_predictions():
    probabilities = np.full((2, 1000), 1e-4, dtype="float32")
    probabilities[0, [207, 3, 999]] = [0.5, 0.3, 0.3]  # 3 and 999 tie: the lower index first
    probabilities[1, 1] = 0.9
    decoded = pretrained.decode_predictions(probabilities, top=3)
    assert decoded[0] == [
        (207, "golden retriever", pytest.approx(0.5)),
        (3, "tiger shark", pytest.approx(0.3)),
        (999, "toilet tissue", pytest.approx(0.3)),
    ]
    assert decoded[1][0] == (1, "goldfish", pytest.approx(0.9))
    assert all(isinstance(value, float) for _, _, value in decoded[0])
    assert pretrained.decode_predictions(keras.ops.convert_to_tensor(probabilities[1]), top=1) == [
        [(1, "goldfish", pytest.approx(0.9))]
    ]
    assert len(pretrained.decode_predictions(probabilities)[0]) == 5
    with pytest.raises(ValueError, match=r"shape \(batch, 1000\), received shape \(2, 10\)"):
        pretrained.decode_predictions(np.zeros((2, 10)))
    with pytest.raises(ValueError, match=r"top must be an integer in \[1, 1000\], received top=0"):
        pretrained.decode_predictions(probabilities, top=0)


# ---------------------------------------------------------------------------------------------
# The registry
# ---------------------------------------------------------------------------------------------


@pytest.mark.one_backend("tensorflow")
def test_registry_entries_are_well_formed():
    names = pretrained.list_weights()
    assert len(names) == len(set(n.lower() for n in names))
    files = [pretrained.get_weights(n).file_name for n in names]
    assert len(files) == len(set(files))
    for name in names:
        entry = pretrained.get_weights(name)
        assert entry.name == name and name.startswith(f"{entry.model}.")
        ResNetConfig.named(entry.model)  # buildable here
        assert entry.origin.startswith("https://")
        assert entry.num_classes == 1000 and entry.license in ("bsd-3-clause", "apache-2.0")
        assert entry.top1 is None or 60 < entry.top1 < 90
        if entry.format == "torchvision":
            assert entry.origin == f"https://download.pytorch.org/models/{entry.file_name}"
            assert entry.file_name.endswith(f"-{entry.sha256}.pth") and len(entry.sha256) == 8
        else:
            assert entry.format == "timm" and entry.sha256 is None
            assert entry.origin == (
                f"https://huggingface.co/timm/{name}/resolve/main/model.safetensors"
            )
            assert entry.file_name == f"{name}.safetensors"
        config = entry.data_config
        assert tuple(config) == pretrained.DATA_CONFIG_KEYS
        assert config["input_size"][0] == 3 and 160 <= config["input_size"][1] <= 320
        assert config["input_size"][1] == config["input_size"][2]
        assert all(0 < v < 1 for v in config["mean"] + config["std"])
        assert 0.8 <= config["crop_pct"] <= 1.0
        assert config["crop_mode"] == "center"
        assert config["interpolation"] in ("bilinear", "bicubic")
    # "imagenet" for every named architecture: its best .safetensors entry.
    assert set(pretrained._DEFAULTS) == set(ARCHITECTURES)
    for model in ARCHITECTURES:
        best = pretrained.get_weights("imagenet", model)
        candidates = [
            pretrained.get_weights(n)
            for n in pretrained.list_weights(model)
            if pretrained.get_weights(n).file_name.endswith(".safetensors")
        ]
        assert best.model == model
        assert best.top1 == max(e.top1 for e in candidates if e.top1 is not None)


@pytest.mark.one_backend("tensorflow")
def test_registry_agrees_with_torchvision_and_timm():
    """Every number of the tables (registered or not) as torchvision 0.29 and timm 1.0 give it."""
    for model, enum, tag, file_name, top1, config in pretrained._TORCHVISION:
        weights = getattr(torchvision.models, enum)[tag]
        transforms = weights.transforms()
        assert weights.url == f"https://download.pytorch.org/models/{file_name}"
        assert weights.meta["_metrics"]["ImageNet-1K"]["acc@1"] == top1
        assert config["crop_pct"] == pytest.approx(
            transforms.crop_size[0] / transforms.resize_size[0]
        )
        assert config["interpolation"] == transforms.interpolation.value
        assert tuple(transforms.mean) == pretrained._IMAGENET_MEAN
        assert tuple(transforms.std) == pretrained._IMAGENET_STD
        assert getattr(torchvision.models, model)  # torchvision's builder of the same name
    for name, license_, _, config in pretrained._TIMM:
        cfg = timm.models.get_pretrained_cfg(name).to_dict()
        assert cfg["hf_hub_id"] == f"timm/{name}" and cfg["license"] == license_
        full = {**pretrained._DEFAULT_DATA_CONFIG, **config}
        assert full["input_size"] == (cfg.get("test_input_size") or cfg["input_size"])
        assert full["crop_pct"] == (cfg.get("test_crop_pct") or cfg["crop_pct"])
        assert full["interpolation"] == cfg["interpolation"]
        assert full["mean"] == cfg["mean"] and full["std"] == cfg["std"]
        assert cfg["num_classes"] == 1000


@pytest.mark.one_backend("tensorflow")
def test_register_weights_refuses_bad_values(cache):
    good = {"model": "resnet18"}
    url = "https://example.com/w.safetensors"
    cases = [
        (("imagenet", url), good, "name must be"),
        (("x.pth", url), good, "name must be"),
        (("a b", url), good, "name must be"),
        (
            ("resnet18.x", url),
            {"model": "resnet19"},
            "model must be one of .* received model='resnet19'",
        ),
        (("resnet18.x", "ftp://example.com/w.pth"), good, "origin must be an http"),
        (("resnet18.x", "https://example.com/w"), good, "pass file_name"),
        (("resnet18.x", url), {**good, "sha256": "XYZ"}, "sha256 must be 8 to 64"),
        (("resnet18.x", url), {**good, "format": "onnx"}, "format must be one of"),
        (("resnet18.x", url), {**good, "format": "keras"}, "does not fit file_name"),
        (
            ("resnet18.x", url),
            {**good, "resize": 256},
            r"unknown data config key\(s\) \['resize'\]",
        ),
        (("resnet18.x", url), {**good, "crop_pct": 1.5}, r"crop_pct must be a number in \(0, 1\]"),
        (("resnet18.x", url), {**good, "mean": (0.5, 0.5)}, "mean must be 3 numbers"),
        (("resnet18.x", url), {**good, "std": (0.5, 0.5, 0)}, "std must be 3 numbers"),
        (("resnet18.x", url), {**good, "interpolation": "nearest"}, "interpolation must be one of"),
        (("resnet18.x", url), {**good, "input_size": (224, 224)}, "input_size must be"),
        (("resnet18.x", url), {**good, "top1": 101}, r"top1 must be a percentage"),
    ]
    for args, kwargs, match in cases:
        with pytest.raises(ValueError, match=match):
            pretrained.register_weights(*args, **kwargs)
    entry = pretrained.register_weights("resnet18.x", url, model="ResNet-18", crop_pct=1)
    assert entry.model == "resnet18" and entry.file_name == "resnet18.x.safetensors"
    assert dict(entry.data_config) == {**pretrained._DEFAULT_DATA_CONFIG, "crop_pct": 1.0}


@pytest.mark.one_backend("tensorflow")
def test_resolve_weights_keeps_paths():
    assert pretrained.resolve_weights(None, "resnet18") == (None, None)
    assert pretrained.resolve_weights("R18.PTH", "resnet18") == ("R18.PTH", None)
    assert pretrained.resolve_weights("model.Weights.H5", "resnet18") == ("model.Weights.H5", None)
    assert pretrained.resolve_weights("runs/r18/latest", "resnet18") == ("runs/r18/latest", None)
    assert pretrained.resolve_weights(Path("imagenet"), "resnet18") == (Path("imagenet"), None)


@pytest.mark.one_backend("tensorflow")
def test_architecture_name_goes_by_blocks(cache, published):
    name = pretrained.architecture_name
    assert name(ResNetConfig(stage_blocks=(3, 4, 6, 3), block="bottleneck")) == "resnet50"
    deep = ResNetConfig(
        stage_blocks=(3, 4, 6, 3), block="bottleneck", stem="deep", downsample="avg"
    )
    assert name(deep) == "resnet50d"
    assert name(ResNetConfig(stage_blocks=(3, 4, 6, 3), block="bottleneck", stem="cifar")) == (
        "resnet50"
    )
    # A name whose blocks agree wins over the stem; one whose blocks differ does not.
    assert name(ResNetConfig.named("resnet50d", stem="cifar", downsample="conv")) == "resnet50d"
    assert name(ResNetConfig.named("resnet18", stage_blocks=(3, 4, 6, 3))) == "resnet34"
    assert name(ResNetConfig.named("resnet50", width_per_group=128)) == "wide_resnet50_2"
    assert name(ResNetConfig(stage_blocks=(1, 1, 1, 1), name="tiny")) == "tiny"

    _register_timm(published=published)
    path, entry = pretrained.resolve_weights("stand_in", ResNetConfig(name="anything"))
    assert entry.name == "resnet18.stand_in" and path == cache / entry.file_name


@pytest.mark.slow  # a fresh interpreter: about 30 s of CPU, most of it importing
@pytest.mark.one_backend("jax")
def test_safetensors_weights_load_without_torch(published, tmp_path):
    """`weights=` with a .safetensors entry on JAX: torch is never imported."""
    import os
    import subprocess

    script = f"""
import sys
import keras_resnet
from keras_resnet import pretrained
pretrained.register_weights(
    "resnet18.stand_in", {published["timm_file"].as_uri()!r}, model="resnet18", format="timm"
)
model = keras_resnet.ResNet18(weights="stand_in", input_shape=(32, 32, 3))
print("torch" in sys.modules, [layer.name for layer in model.layers][1])
"""
    env = {**os.environ, "KERAS_BACKEND": "jax", "KERAS_HOME": str(tmp_path / "home")}
    env.pop(pretrained.OFFLINE_ENV, None)
    env.pop(pretrained.MIRROR_ENV, None)
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[-1] == "False normalize"


@pytest.mark.one_backend("tensorflow")
def test_train_fine_tunes_from_a_registered_name_through_a_mirror(
    cache, published, tmp_path, monkeypatch, caplog
):
    """`keras-resnet train --weights resnet18.a1_in1k` on a machine without internet: the file
    comes from a mirror folder (a stand-in of timm's file under the entry's name), a new head
    takes the folder's 3 classes, and the run's preprocessing record takes the weights' mean,
    std and interpolation (ImageNet's, bicubic), not the data's."""
    from PIL import Image

    from keras_resnet.cli import train as train_cli

    entry = pretrained.get_weights("resnet18.a1_in1k")
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / entry.file_name).write_bytes(published["timm_file"].read_bytes())
    monkeypatch.setenv(pretrained.MIRROR_ENV, str(mirror))
    monkeypatch.setenv(pretrained.OFFLINE_ENV, "1")
    rng = np.random.default_rng(0)
    for label in range(3):
        folder = tmp_path / "photos" / f"class{label}"
        folder.mkdir(parents=True)
        for i in range(8):
            pixels = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
            pixels[..., label] = 255
            Image.fromarray(pixels).save(folder / f"{i}.png")
    run = tmp_path / "run"
    argv = [
        "--dataset", str(tmp_path / "photos"), "--model", "resnet18", "--stem", "imagenet",
        "--image-size", "48", "--weights", "resnet18.a1_in1k", "--epochs", "1",
        "--batch-size", "8", "--val-size", "0.25", "--output-dir", str(run), "--verbose", "0",
        "--no-tensorboard",
    ]  # fmt: skip
    with caplog.at_level(logging.INFO, logger="keras_resnet"):
        assert train_cli.main(argv) == 0
    assert "weights: resnet18.a1_in1k loaded into resnet18" in caplog.text
    assert (cache / entry.file_name).is_file()  # taken into the Keras cache from the mirror
    record = json.loads((run / "config.json").read_text())["preprocessing"]
    data_config = entry.data_config
    assert record["mean"] == pytest.approx([255 * m for m in data_config["mean"]])
    assert record["std"] == pytest.approx([255 * s for s in data_config["std"]])
    assert record["interpolation"] == data_config["interpolation"] == "bicubic"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["class_names"] == ["class0", "class1", "class2"]
    model = keras.saving.load_model(run / "model.keras", compile=False)
    assert model.output_shape == (None, 3)
