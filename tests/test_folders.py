"""Image-folder datasets: layouts, both streaming pipelines, the ImageNet recipe, bad input,
bounded memory. Folders are generated from Fashion-MNIST's IDX files in each test.

Decoding (Pillow, OpenCV), layouts and both pipelines are the same whatever the Keras backend:
those tests run on TensorFlow only (`one_backend`, tests/conftest.py); the fit from a folder and
the pipeline chosen per backend run on every backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from keras_resnet import data as data_lib
from keras_resnet.data import decode, pipelines, recipe

REPO = Path(__file__).resolve().parents[1]
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ["Bag", "Sneaker", "Trouser"]  # sorted; Fashion-MNIST labels 8, 7, 1
FMNIST_LABEL = {"Bag": 8, "Sneaker": 7, "Trouser": 1}


def fmnist_images(n_per_class: int, offset: int = 0) -> dict[str, np.ndarray]:
    """`n_per_class` 28x28 Fashion-MNIST test images of each of CLASSES (synthetic stripes when
    the Debian files are absent)."""
    if DEBIAN_DIR.is_dir():
        x = data_lib.read_idx(DEBIAN_DIR / "t10k-images-idx3-ubyte.gz")
        y = data_lib.read_idx(DEBIAN_DIR / "t10k-labels-idx1-ubyte.gz")
        return {name: x[y == FMNIST_LABEL[name]][offset : offset + n_per_class] for name in CLASSES}
    rng = np.random.default_rng(offset)
    out = {}
    for k, name in enumerate(CLASSES):
        images = rng.integers(0, 60, (n_per_class, 28, 28), dtype=np.uint8)
        images[:, 4:24, 6 * k + 4 : 6 * k + 8] = 250
        out[name] = images
    return out


def write_split(folder: Path, n_per_class: int, fmt: str = "png", offset: int = 0) -> None:
    for name, images in fmnist_images(n_per_class, offset).items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(images):
            options = {"quality": 95} if fmt == "jpg" else {}
            Image.fromarray(image, "L").save(folder / name / f"{offset + i:05d}.{fmt}", **options)


@pytest.fixture
def split_folder(tmp_path):
    """PATH/train (10 per class, PNG), PATH/val (4 per class, JPEG), PATH/test (3, PNG)."""
    root = tmp_path / "fmnist"
    write_split(root / "train", 10, "png")
    write_split(root / "val", 4, "jpg", offset=100)
    write_split(root / "test", 3, "png", offset=200)
    return root


def batches_of(data) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(data, pipelines.FolderPyDataset):
        pairs = [data[i] for i in range(len(data))]
    else:
        pairs = [(np.asarray(x), np.asarray(y)) for x, y in data]
    return np.concatenate([x for x, _ in pairs]), np.concatenate([y for _, y in pairs])


@pytest.mark.one_backend("tensorflow")
def test_split_layout(split_folder):
    source = data_lib.open_dataset(split_folder, image_size=32)
    assert isinstance(source, data_lib.FolderSource)
    assert source.class_names == CLASSES and source.num_classes == 3
    assert source.counts == {"train": 30, "val": 12, "test": 9}
    assert source.image_shape == (32, 32, 3)
    paths, labels = source.files["val"]
    assert [Path(os.fsdecode(p)).parent.name for p in paths] == [CLASSES[k] for k in labels]
    assert source.skipped() == {"ignored_non_images": 0, "skipped": 0, "first_skipped": []}


PIPELINES = [
    pytest.param(
        "tf.data",
        marks=pytest.mark.skipif(not data_lib.installed("tensorflow"), reason="no TensorFlow"),
    ),
    "PyDataset",
]


@pytest.mark.parametrize("pipeline", PIPELINES)
@pytest.mark.one_backend("tensorflow")
def test_pipelines_yield_shapes_labels_and_crops(split_folder, pipeline):
    source = data_lib.open_dataset(split_folder, image_size=32, channels=1)
    if pipeline == "tf.data":
        make = pipelines.tf_dataset
    else:
        make = pipelines.FolderPyDataset
    x, y = batches_of(make(source, "val", 5, train=False))
    assert x.shape == (12, 32, 32, 1) and x.dtype == np.uint8 and y.dtype == np.int64
    np.testing.assert_array_equal(y, source.files["val"][1])  # eval keeps file order
    # Eval crop of each file: the same pixels through either pipeline.
    expected = decode.recipe_crop(source.path(source.files["val"][0][0]), 32, 1, train=False)
    np.testing.assert_array_equal(x[0], expected)
    x, y = batches_of(make(source, "train", 8, train=True, seed=1))
    assert x.shape == (24, 32, 32, 1)  # 30 images, the last partial batch dropped
    assert set(y.tolist()) <= {0, 1, 2} and np.bincount(y, minlength=3).max() <= 10


@pytest.mark.one_backend("tensorflow")
@pytest.mark.skipif(not data_lib.installed("tensorflow"), reason="no TensorFlow")
def test_tf_data_pipeline_logs_no_autograph_warning(split_folder, caplog, capfd):
    """Every folder run on TensorFlow printed AutoGraph's 'could not transform <lambda>'
    warnings (two lambdas on one line, which AutoGraph cannot tell apart)."""
    source = data_lib.open_dataset(split_folder, image_size=32, channels=1)
    with caplog.at_level("WARNING"):
        batches_of(pipelines.tf_dataset(source, "train", 8, train=True, seed=1))
    printed = caplog.text + "".join(capfd.readouterr())
    assert "could not transform" not in printed, printed


def test_dataset_picks_tf_data_on_tensorflow(split_folder):
    import keras

    source = data_lib.open_dataset(split_folder, image_size=32)
    data = source.dataset("train", 4)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        assert isinstance(data, tf.data.Dataset)
    else:
        assert isinstance(data, pipelines.FolderPyDataset)


@pytest.mark.one_backend("tensorflow")
def test_folder_dataset_in_memory_for_benchmarks(split_folder):
    """`folder_dataset` (benchmark.py's `--data folder:PATH`): eval crops in a `Dataset`."""
    from keras_resnet.data.folders import folder_dataset

    data = folder_dataset(split_folder, image_size=(32, 32), limit=7, workers=2)
    assert isinstance(data, data_lib.Dataset) and data.class_names == CLASSES
    assert data.x_train.shape == (7, 32, 32, 3) and data.x_test.shape == (7, 32, 32, 3)
    assert data.source == f"folder:{split_folder}" and data.name == "fmnist"


def test_model_fit_and_evaluate_from_a_folder(split_folder):
    """The batches go straight into `model.fit` on the current backend (uint8 in)."""
    import keras

    source = data_lib.open_dataset(split_folder, image_size=16)
    model = keras.Sequential(
        [
            keras.Input(source.image_shape),
            keras.layers.Rescaling(1 / 255),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(source.num_classes, activation="softmax"),
        ]
    )
    model.compile("sgd", "sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(source.dataset("train", 8), epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2
    results = model.evaluate(source.dataset("val", 8), verbose=0, return_dict=True)
    assert 0 <= results["accuracy"] <= 1


@pytest.mark.one_backend("tensorflow")
def test_class_layout_with_val_size(tmp_path):
    write_split(tmp_path / "d", 10, "jpg")
    source = data_lib.open_dataset(tmp_path / "d", val_size=0.2, seed=3)
    assert source.counts == {"train": 24, "val": 6}
    kept, held = data_lib.split(30, 0.2, seed=3)
    assert len(held) == 6 and len(kept) == 24
    everything = set(source.files["train"][0].tolist()) | set(source.files["val"][0].tolist())
    assert len(everything) == 30
    assert data_lib.open_dataset(tmp_path / "d", val_size=7).counts == {"train": 23, "val": 7}


@pytest.mark.one_backend("tensorflow")
def test_split_is_the_training_convention():
    kept, held = data_lib.split(10, 3, seed=5)
    order = np.random.default_rng(5).permutation(10)
    np.testing.assert_array_equal(held, np.sort(order[:3]))
    np.testing.assert_array_equal(kept, np.sort(order[3:]))
    for bad in (10, -1, 1.0, 0.0, "3", True):
        with pytest.raises(ValueError, match="val_size"):
            data_lib.split(10, bad)


@pytest.mark.one_backend("tensorflow")
def test_cache_gives_the_streamed_eval_pixels_and_train_crops(split_folder, tmp_path):
    (split_folder / "train" / "Bag" / "bad.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    source = data_lib.open_dataset(split_folder, image_size=32, log_dir=tmp_path / "log")
    # Threads: forking here, after an earlier test's TensorFlow fit in this process, once left
    # the workers blocked on a lock copied mid-use (the forked build is tested in test_gpu_crop).
    cache = data_lib.build_cache(source, tmp_path / "cache", side=48, workers=2, processes=False)
    info = data_lib.cache_info(cache)
    assert info["splits"]["train"] == {"count": 30, "size": 48} and info["class_names"] == CLASSES
    assert source.skipped()["skipped"] == 1
    x, y = batches_of(data_lib.CachePyDataset(cache, "val", 5, train=False))
    streamed_x, streamed_y = batches_of(pipelines.FolderPyDataset(source, "val", 5, train=False))
    np.testing.assert_array_equal(x, streamed_x)
    np.testing.assert_array_equal(y, streamed_y)
    train = data_lib.CachePyDataset(cache, "train", 8, train=True, seed=0)
    x, y = batches_of(train)
    assert len(train) == 3 and x.shape == (24, 32, 32, 3) and x.dtype == np.uint8
    train.on_epoch_end()
    assert not np.array_equal(batches_of(train)[0], x)  # new crops and order each epoch
    assert data_lib.cache_info(tmp_path) is None


# --- bad input ---


def one_line_error(path, **options) -> str:
    with pytest.raises(data_lib.FolderError) as info:
        data_lib.open_dataset(path, **options)
    message = str(info.value)
    assert len(message.splitlines()) == 1
    return message


@pytest.mark.one_backend("tensorflow")
def test_one_class_empty_class_and_mismatched_splits(tmp_path):
    write_split(tmp_path / "one", 2)
    for name in CLASSES[1:]:
        for file in (tmp_path / "one" / name).iterdir():
            file.unlink()
        (tmp_path / "one" / name).rmdir()
    assert "one class folder ('Bag')" in one_line_error(tmp_path / "one")
    write_split(tmp_path / "empty", 2)
    (tmp_path / "empty" / "Coat").mkdir()
    (tmp_path / "empty" / "Coat" / "notes.txt").write_text("no images here")
    message = one_line_error(tmp_path / "empty")
    assert f"class folder {tmp_path / 'empty' / 'Coat'} holds no images" in message
    (tmp_path / "none").mkdir()
    assert "holds no class folders" in one_line_error(tmp_path / "none")
    write_split(tmp_path / "mixed" / "train", 2)
    write_split(tmp_path / "mixed" / "validation", 2)
    (tmp_path / "mixed" / "validation" / "Bag").rename(tmp_path / "mixed" / "validation" / "Bags")
    message = one_line_error(tmp_path / "mixed")
    assert str(tmp_path / "mixed" / "validation") in message
    assert "extra ['Bags'], missing ['Bag']" in message


@pytest.mark.one_backend("tensorflow")
def test_path_that_is_neither_folder_nor_name(tmp_path):
    for text in (str(tmp_path / "nope"), "./nope", "data/imagenet"):
        assert f"received dataset={text!r}" in one_line_error(text)
    (tmp_path / "file.png").write_bytes(b"x")
    assert "no such folder" in one_line_error(tmp_path / "file.png")


@pytest.mark.parametrize("pipeline", PIPELINES)
@pytest.mark.one_backend("tensorflow")
def test_bad_files_are_skipped_counted_and_named(split_folder, pipeline):
    bag = split_folder / "train" / "Bag"
    jpeg = (split_folder / "val" / "Bag" / "00100.jpg").read_bytes()
    (bag / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (bag / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    (bag / "empty.webp").write_bytes(b"")
    (bag / "README.txt").write_text("not an image")
    (bag / "labels.csv").write_text("a,b")
    source = data_lib.open_dataset(split_folder, image_size=32, log_dir=split_folder.parent / "l")
    assert source.counts["train"] == 33 and source.ignored == 2
    make = pipelines.tf_dataset if pipeline == "tf.data" else pipelines.FolderPyDataset
    x, y = batches_of(make(source, "train", 3, train=False))
    expected = 30 if pipeline == "tf.data" else 33  # PyDataset fills the gaps with later files
    assert x.shape == (expected, 32, 32, 3)
    report = source.skipped()
    assert report["ignored_non_images"] == 2 and report["skipped"] == 3
    assert sorted(Path(item["path"]).name for item in report["first_skipped"]) == [
        "empty.webp",
        "garbage.png",
        "truncated.jpg",
    ]
    assert all(item["reason"] for item in report["first_skipped"])
    json.dumps(report)  # goes into metrics.json as is


# --- image formats and modes ---


def picture(height=48, width=64) -> np.ndarray:
    """A smooth 8-bit RGB picture (gradients), so that resampling differences stay small."""
    yy, xx = np.mgrid[0:height, 0:width]
    channels = [xx * 255 // width, yy * 255 // height, (xx + yy) * 255 // (height + width)]
    return np.stack(channels, -1)


@pytest.mark.parametrize(
    "name,make",
    [
        ("rgb.jpg", lambda a: Image.fromarray(a.astype(np.uint8))),
        ("rgb.bmp", lambda a: Image.fromarray(a.astype(np.uint8))),
        ("rgb.webp", lambda a: Image.fromarray(a.astype(np.uint8))),
        ("rgba.png", lambda a: Image.fromarray(a.astype(np.uint8)).convert("RGBA")),
        ("palette.gif", lambda a: Image.fromarray(a.astype(np.uint8)).quantize(256)),
        ("palette.png", lambda a: Image.fromarray(a.astype(np.uint8)).quantize(256)),
    ],
)
@pytest.mark.one_backend("tensorflow")
def test_formats_and_modes_to_rgb(tmp_path, name, make):
    rgb = picture()
    make(rgb).save(tmp_path / name, **({"lossless": True} if name.endswith("webp") else {}))
    Image.fromarray(rgb.astype(np.uint8)).save(tmp_path / "reference.png")
    out = decode.recipe_crop(tmp_path / name, 32, 3, train=False)
    reference = decode.recipe_crop(tmp_path / "reference.png", 32, 3, train=False)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    tolerance = 12 if name.endswith((".jpg", ".gif")) or "palette" in name else 1
    assert np.abs(out.astype(int) - reference.astype(int)).mean() <= tolerance
    gray = decode.recipe_crop(tmp_path / name, 32, 1, train=False)
    assert gray.shape == (32, 32, 1)


@pytest.mark.one_backend("tensorflow")
def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    gray8 = picture()[..., 0].astype(np.uint8)
    Image.fromarray(gray8, "L").save(tmp_path / "g8.png")
    Image.fromarray(gray8.astype(np.uint16) * 257).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    out8 = decode.recipe_crop(tmp_path / "g8.png", 32, 3, train=False)
    out16 = decode.recipe_crop(tmp_path / "g16.png", 32, 3, train=False)
    assert np.abs(out8.astype(int) - out16.astype(int)).max() <= 1
    assert out16.max() > 200  # clipping at 255 would leave a white image instead


@pytest.mark.one_backend("tensorflow")
def test_gif_first_frame(tmp_path):
    frames = [Image.new("L", (40, 40), v) for v in (30, 220)]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    out = decode.recipe_crop(tmp_path / "a.gif", 16, 1, train=False)
    assert abs(int(out.mean()) - 30) <= 1


# --- the recipe's geometry ---


@pytest.mark.one_backend("tensorflow")
def test_eval_crop_matches_torchvision(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    from torchvision.transforms import v2

    rng = np.random.default_rng(0)
    for height, width in ((375, 500), (500, 333), (300, 300), (257, 1000)):
        small = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
        image = Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC)
        image.save(tmp_path / "p.png")
        ours = decode.recipe_crop(tmp_path / "p.png", 224, 3, train=False)
        pipeline = v2.Compose([v2.Resize(256), v2.CenterCrop(224)])
        theirs = np.asarray(pipeline(image))
        diff = np.abs(ours.astype(int) - theirs.astype(int))
        # One resampling of the box vs two steps (resize, then crop): same geometry, so only
        # rounding differs.
        assert diff.mean() < 1.0 and np.percentile(diff, 99) <= 4, (height, width, diff.mean())
    assert torchvision.__version__


@pytest.mark.one_backend("tensorflow")
def test_random_resized_crop_box_bounds(tmp_path):
    rng = np.random.default_rng(0)
    areas = []
    for _ in range(2000):
        left, top, right, bottom = recipe.random_resized_crop_box(rng, 375, 500)
        assert 0 <= left < right <= 500 and 0 <= top < bottom <= 375
        w, h = right - left, bottom - top
        areas.append(w * h / (375 * 500))
        assert 3 / 4 - 0.02 <= w / h <= 4 / 3 + 0.02 or w * h == 375 * 500
    assert 0.075 <= min(areas) and max(areas) <= 1.0
    # The same distribution as torchvision's draws (mean area of 2000 each, within 0.03).
    torch = pytest.importorskip("torch")
    from torchvision.transforms import RandomResizedCrop

    torch.manual_seed(0)
    image = torch.zeros(3, 375, 500)
    theirs = [
        h * w / (375 * 500)
        for _, _, h, w in (
            RandomResizedCrop.get_params(image, (0.08, 1.0), (3 / 4, 4 / 3)) for _ in range(2000)
        )
    ]
    assert abs(np.mean(areas) - np.mean(theirs)) < 0.03, (np.mean(areas), np.mean(theirs))
    Image.fromarray(picture().astype(np.uint8)).save(tmp_path / "p.png")
    crops = [decode.recipe_crop(tmp_path / "p.png", 16, 3, train=True, seed=s) for s in range(8)]
    again = decode.recipe_crop(tmp_path / "p.png", 16, 3, train=True, seed=0)
    np.testing.assert_array_equal(crops[0], again)  # a seed gives one crop
    assert len({c.tobytes() for c in crops}) == 8


# --- memory ---

# Peak RSS of this process (VmHWM): ru_maxrss would start from the parent's peak (pytest's) in a
# forked child on Linux.
PEAK_MB = """
def peak_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
"""
LARGE_SCRIPT = PEAK_MB + textwrap.dedent("""
    import json, sys
    from keras_resnet.data import decode
    before = peak_mb()
    out = decode.recipe_crop(sys.argv[1], 224, 3, train=sys.argv[2] == "train", seed=0)
    print(json.dumps({"shape": list(out.shape), "grew_mb": peak_mb() - before}))
""")


def run_python(script: str, *args, backend: str = "jax") -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "KERAS_BACKEND": backend}
    result = subprocess.run(
        [sys.executable, "-c", script, *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.one_backend("tensorflow")
def test_10000_pixel_jpeg_is_decoded_at_reduced_scale_and_png_refused(tmp_path):
    make = "from PIL import Image; import sys; Image.new('L', (10000, 10000), 90).save(sys.argv[1])"
    for name in ("big.jpg", "big.png"):
        subprocess.run([sys.executable, "-c", make, str(tmp_path / name)], check=True)
    for mode in ("train", "eval"):
        out = run_python(LARGE_SCRIPT, tmp_path / "big.jpg", mode)
        # A full decode would take 300 MB (RGB); at 1/8 scale it is under 5 MB.
        print(f"10000x10000 JPEG, {mode}: peak RSS grew {out['grew_mb']:.1f} MB")
        assert out["shape"] == [224, 224, 3] and out["grew_mb"] < 60, out
    with pytest.raises(decode.BadImage, match="over the .* decoded pixels allowed"):
        decode.recipe_crop(tmp_path / "big.png", 224, 3, train=False)


STREAM_SCRIPT = PEAK_MB + textwrap.dedent("""
    import json, sys
    from keras_resnet import data
    from keras_resnet.data import pipelines
    source = data.open_dataset(sys.argv[1], image_size=64)
    if sys.argv[2] == "tf.data":
        batches = pipelines.tf_dataset(source, "train", 32, train=True)
        n = sum(int(x.shape[0]) for x, _ in batches)
    else:
        batches = pipelines.FolderPyDataset(source, "train", 32, train=True, workers=2)
        n = sum(batches[i][0].shape[0] for i in range(len(batches)))
    print(json.dumps({"images": n, "peak_mb": peak_mb(), "tf": "tensorflow" in sys.modules}))
""")


@pytest.mark.slow
@pytest.mark.parametrize("pipeline", PIPELINES)
@pytest.mark.one_backend("tensorflow")
def test_peak_memory_does_not_grow_with_the_folder(tmp_path, pipeline):
    """One epoch over N and 10 N images: peak RSS differs by < 150 MB."""
    for name, per_class in (("small", 40), ("large", 400)):
        write_split(tmp_path / name, per_class, "png")
    backend = "tensorflow" if pipeline == "tf.data" else "jax"
    small = run_python(STREAM_SCRIPT, tmp_path / "small", pipeline, backend=backend)
    large = run_python(STREAM_SCRIPT, tmp_path / "large", pipeline, backend=backend)
    assert small["images"] == 96 and large["images"] == 1184
    assert large["tf"] == (pipeline == "tf.data")  # the PyDataset path needs no TensorFlow
    growth = large["peak_mb"] - small["peak_mb"]
    print(
        f"{pipeline}: peak RSS {small['peak_mb']:.0f} MB (120 images), "
        f"{large['peak_mb']:.0f} MB (1200 images), growth {growth:.0f} MB"
    )
    assert growth < 150, (small, large)
