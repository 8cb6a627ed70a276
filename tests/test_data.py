"""Data loading (TFDS from local IDX files; numpy IDX reader without TensorFlow), augmentation.

Loading is numpy and TFDS whatever the Keras backend: those tests run on TensorFlow only
(`one_backend`, tests/conftest.py); the augmentation layers run on every backend."""

from __future__ import annotations

import gzip
import json
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from idx_files import make_idx_folder, write_idx

from keras_resnet import data as data_lib
from keras_resnet.data import tfds_source

REPO = Path(__file__).resolve().parents[1]
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture
def idx_folder(tmp_path):
    return make_idx_folder(tmp_path / "fashion-mnist")


@pytest.mark.one_backend("tensorflow")
def test_read_idx_round_trip(tmp_path):
    array = np.arange(2 * 3 * 5, dtype=np.uint8).reshape(2, 3, 5)
    for name in ("a-idx3-ubyte.gz", "b-idx3-ubyte"):
        write_idx(tmp_path / name, array)
        out = data_lib.read_idx(tmp_path / name)
        assert out.dtype == np.uint8 and out.shape == (2, 3, 5)
        np.testing.assert_array_equal(out, array)


@pytest.mark.one_backend("tensorflow")
def test_read_idx_rejects_other_files(tmp_path):
    (tmp_path / "x.gz").write_bytes(gzip.compress(b"not an idx file"))
    with pytest.raises(ValueError, match="not an IDX file"):
        data_lib.read_idx(tmp_path / "x.gz")
    truncated = b"\x00\x00\x08\x01" + struct.pack(">I", 10) + b"\x01\x02"
    (tmp_path / "y").write_bytes(truncated)
    with pytest.raises(ValueError, match="header says shape"):
        data_lib.read_idx(tmp_path / "y")


@pytest.mark.one_backend("tensorflow")
def test_load_idx(idx_folder):
    data = data_lib.load_dataset("fashion_mnist", source_dir=idx_folder, loader="idx")
    assert data.x_train.shape == (120, 28, 28, 1) and data.x_train.dtype == np.uint8
    assert data.x_test.shape == (40, 28, 28, 1)
    assert data.y_train.dtype == np.int64 and sorted(set(data.y_train.tolist())) == list(range(10))
    assert data.image_shape == (28, 28, 1) and data.num_classes == 10
    assert data.class_names[0] == "T-shirt/top" and data.class_names[9] == "Ankle boot"
    assert data.source == f"idx:{idx_folder}"
    # The stripe of class k is where make_idx_folder put it.
    k = int(data.y_train[0])
    assert (data.x_train[0, 4:24, 2 * k + 4, 0] == 250).all()


@pytest.mark.one_backend("tensorflow")
def test_source_dir_from_environment(tmp_path, monkeypatch):
    make_idx_folder(tmp_path / "root" / "fashion-mnist")  # a parent folder holding fashion-mnist/
    monkeypatch.setenv(data_lib.ENV_SOURCE_DIR, str(tmp_path / "root"))
    assert data_lib.find_source_dir("fashion_mnist") == tmp_path / "root" / "fashion-mnist"
    # An explicit source_dir is the only place looked at.
    assert data_lib.find_source_dir("fashion_mnist", tmp_path) is None


@pytest.mark.one_backend("tensorflow")
def test_missing_data_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./.data
    with pytest.raises(data_lib.DataNotFoundError) as info:
        data_lib.load_dataset("fashion_mnist", source_dir=tmp_path, loader="idx")
    message = str(info.value)
    assert "apt-get install dataset-fashion-mnist" in message and "--source-dir" in message
    assert len(message.splitlines()) == 1
    with pytest.raises(data_lib.DataNotFoundError, match="source_dir is not a folder"):
        data_lib.load_dataset("fashion_mnist", source_dir=tmp_path / "nope")


@pytest.mark.one_backend("tensorflow")
def test_bad_arguments(idx_folder):
    with pytest.raises(ValueError, match="loader must be one of"):
        data_lib.load_dataset("fashion_mnist", loader="pickle")
    with pytest.raises(ValueError, match="dataset must be one of .* received dataset='cifar10'"):
        data_lib.load_dataset("cifar10", source_dir=idx_folder, loader="idx")


@pytest.mark.one_backend("tensorflow")
def test_subset_and_stats(idx_folder):
    data = data_lib.load_dataset("fashion_mnist", source_dir=idx_folder, loader="idx")
    small = data_lib.subset(data, 50, 10, seed=3)
    assert len(small.x_train) == len(small.y_train) == 50 and len(small.x_test) == 10
    again = data_lib.subset(data, 50, 10, seed=3)
    np.testing.assert_array_equal(small.y_train, again.y_train)
    images = np.array([[[[0]], [[2]]], [[[4]], [[6]]]], dtype=np.uint8)  # (2, 2, 1, 1)
    mean, std = data_lib.channel_stats(images)
    assert mean == [3.0] and std == pytest.approx([np.sqrt(5.0)])


NO_TF_SCRIPT = textwrap.dedent("""
    import importlib.abc, json, sys

    class Block(importlib.abc.MetaPathFinder):  # as on a machine where TensorFlow is absent
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("tensorflow", "tensorflow_datasets"):
                raise ImportError(f"No module named {name!r}")

    sys.meta_path.insert(0, Block())
    from keras_resnet import data
    d = data.load_dataset("fashion_mnist", source_dir=sys.argv[1])
    print(json.dumps({"tfds": data.tfds_available(), "source": d.source,
                      "shape": list(d.x_train.shape), "labels": d.y_test[:5].tolist(),
                      "tf_imported": "tensorflow" in sys.modules}))
""")


@pytest.mark.one_backend("tensorflow")
def test_load_without_tensorflow(idx_folder):
    """loader='auto' falls back to the IDX reader where TensorFlow cannot be imported."""
    # keras_resnet imports keras: without TensorFlow, Keras runs on JAX (or PyTorch).
    import importlib.util

    backend = "jax" if importlib.util.find_spec("jax") else "torch"
    env = {**os.environ, "PYTHONPATH": str(REPO), "KERAS_BACKEND": backend}
    result = subprocess.run(
        [sys.executable, "-c", NO_TF_SCRIPT, str(idx_folder)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    expected = data_lib.load_dataset("fashion_mnist", source_dir=idx_folder, loader="idx")
    assert out == {
        "tfds": False,
        "source": f"idx:{idx_folder}",
        "shape": [120, 28, 28, 1],
        "labels": expected.y_test[:5].tolist(),
        "tf_imported": False,
    }


def _sorted_examples(x: np.ndarray, y: np.ndarray):
    """Examples in a canonical order (TFDS stores them shuffled)."""
    keys = [bytes([label]) + image.tobytes() for image, label in zip(x, y, strict=True)]
    order = np.argsort(np.array(keys, dtype=object))
    return x[order], y[order]


@pytest.mark.skipif(not data_lib.tfds_available(), reason="needs tensorflow-datasets")
@pytest.mark.skipif(not DEBIAN_DIR.is_dir(), reason="needs apt-get install dataset-fashion-mnist")
@pytest.mark.one_backend("tensorflow")
def test_tfds_prepares_from_local_files_once(tmp_path, monkeypatch):
    """TFDS builds fashion_mnist from the Debian files (no download, no checksum error), caches
    it, and the second load reads the cache; the examples equal the IDX reader's."""
    data = data_lib.load_dataset("fashion_mnist", data_dir=tmp_path)
    assert data.source == f"tfds:{tmp_path}"
    assert (tmp_path / "fashion_mnist" / "3.0.1" / "dataset_info.json").is_file()
    assert data.x_train.shape == (60000, 28, 28, 1) and data.x_test.shape == (10000, 28, 28, 1)

    def no_rebuild(*args, **kwargs):
        raise AssertionError("the prepared dataset was rebuilt")

    monkeypatch.setattr(tfds_source, "local_builder", no_rebuild)
    again = data_lib.load_dataset("fashion_mnist", data_dir=tmp_path)
    np.testing.assert_array_equal(again.y_test, data.y_test)

    reference = data_lib.load_dataset("fashion_mnist", source_dir=DEBIAN_DIR, loader="idx")
    for split in ("test",):  # the test split (10000) is enough to compare and is fast
        x, y = _sorted_examples(getattr(data, f"x_{split}"), getattr(data, f"y_{split}"))
        rx, ry = _sorted_examples(
            getattr(reference, f"x_{split}"), getattr(reference, f"y_{split}")
        )
        np.testing.assert_array_equal(y, ry)
        np.testing.assert_array_equal(x, rx)


@pytest.mark.skipif(not data_lib.tfds_available(), reason="needs tensorflow-datasets")
@pytest.mark.one_backend("tensorflow")
def test_tfds_unknown_or_unprepared(tmp_path):
    with pytest.raises(ValueError, match="received dataset='no_such_dataset'"):
        data_lib.load_dataset("no_such_dataset", data_dir=tmp_path)
    # Not prepared and no local source: a message, never a download attempt.
    with pytest.raises(data_lib.DataNotFoundError, match="no prepared cifar10 data under"):
        data_lib.load_dataset("cifar10", data_dir=tmp_path, loader="tfds")


# --- augmentation (runs on the current backend) ---


def test_random_pad_crop_is_a_per_image_crop_of_the_padded_image():
    import keras

    layer = data_lib.augmentation((12, 12, 1), pad=2, flip=False, erasing=0, seed=1)
    x = np.arange(16 * 12 * 12, dtype="float32").reshape(16, 12, 12, 1) + 1
    y = keras.ops.convert_to_numpy(layer(x, training=True))
    offsets = set()
    for i in range(16):
        padded = np.pad(x[i, :, :, 0], 2)
        found = [
            (r, c)
            for r in range(5)
            for c in range(5)
            if np.array_equal(padded[r : r + 12, c : c + 12], y[i, :, :, 0])
        ]
        assert len(found) == 1, f"image {i} is not a crop of its padded self"
        offsets.add(found[0])
    assert len(offsets) > 1  # one draw per image, not one per batch
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(x, training=False)), x)


def test_augmentation_is_identity_at_inference_and_serializable():
    import keras

    augment = data_lib.augmentation((28, 28, 1), seed=0)
    assert [layer.name for layer in augment.layers] == [
        "random_crop",
        "random_flip",
        "random_erasing",
    ]
    x = np.random.default_rng(0).integers(0, 256, (8, 28, 28, 1)).astype("float32")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(augment(x, training=False)), x)
    trained = keras.ops.convert_to_numpy(augment(x, training=True))
    assert trained.shape == x.shape and not np.array_equal(trained, x)
    assert trained.min() >= 0 and trained.max() <= 255  # stays in pixel units
    clone = keras.Sequential.from_config(augment.get_config())
    assert [layer.name for layer in clone.layers] == [layer.name for layer in augment.layers]
    assert clone.layers[0].padding == 4


# --- inputs checked at the door ---


@pytest.mark.one_backend("tensorflow")
def test_corrupt_or_truncated_gz_is_a_one_line_error(idx_folder):
    path = idx_folder / "train-images-idx3-ubyte.gz"
    whole = path.read_bytes()
    for broken in (whole[: len(whole) // 2], b"\x1f\x8b" + bytes(range(200))):
        path.write_bytes(broken)
        for read in (data_lib.read_idx, data_lib.idx_header):
            with pytest.raises(data_lib.IdxError) as info:
                read(path)
            assert str(path) in str(info.value) and len(str(info.value).splitlines()) == 1
        with pytest.raises(data_lib.IdxError, match="cannot be read"):
            data_lib.load_dataset("fashion_mnist", source_dir=idx_folder, loader="idx")


@pytest.mark.one_backend("tensorflow")
def test_check_idx_folder_counts(idx_folder):
    assert data_lib.check_idx_folder(idx_folder) == {"train": 120, "test": 40}
    # A labels file whose header is right but which holds fewer labels than it declares.
    labels = idx_folder / "train-labels-idx1-ubyte.gz"
    payload = gzip.decompress(labels.read_bytes())
    labels.write_bytes(gzip.compress(payload[:-20]))
    with pytest.raises(data_lib.IdxError, match=r"header says shape \(120,\).*holds 100"):
        data_lib.check_idx_folder(idx_folder)
    # Consistent files, but fewer labels than images.
    write_idx(labels, np.zeros(100, np.uint8))
    with pytest.raises(data_lib.IdxError, match="train images and labels differ in number"):
        data_lib.check_idx_folder(idx_folder)


def _short_labels_folder(folder: Path, n_labels: int) -> Path:
    """Debian's Fashion-MNIST with a train labels file declaring 60000 labels but holding
    `n_labels`: the file TFDS once trained on "successfully"."""
    folder.mkdir()
    for stem in data_lib.IDX_FILES.values():
        if stem != "train-labels-idx1-ubyte":
            (folder / f"{stem}.gz").symlink_to(DEBIAN_DIR / f"{stem}.gz")
    labels = data_lib.read_idx(DEBIAN_DIR / "train-labels-idx1-ubyte.gz")
    header = b"\x00\x00\x08\x01" + struct.pack(">I", 60000)
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(header + labels[:n_labels].tobytes(), compresslevel=1)
    )
    return folder


@pytest.mark.skipif(not data_lib.tfds_available(), reason="needs tensorflow-datasets")
@pytest.mark.skipif(not DEBIAN_DIR.is_dir(), reason="needs apt-get install dataset-fashion-mnist")
@pytest.mark.one_backend("tensorflow")
def test_tfds_refuses_inconsistent_source_before_caching(tmp_path):
    bad = _short_labels_folder(tmp_path / "bad", 100)
    cache = tmp_path / "tfds"
    with pytest.raises(data_lib.IdxError, match="holds 100") as info:
        data_lib.load_dataset("fashion_mnist", source_dir=bad, data_dir=cache)
    assert str(bad) in str(info.value) and len(str(info.value).splitlines()) == 1
    assert not (cache / "fashion_mnist").exists()  # nothing prepared, nothing cached


@pytest.mark.slow
@pytest.mark.skipif(not data_lib.tfds_available(), reason="needs tensorflow-datasets")
@pytest.mark.skipif(not DEBIAN_DIR.is_dir(), reason="needs apt-get install dataset-fashion-mnist")
@pytest.mark.one_backend("tensorflow")
def test_tfds_refuses_cache_that_disagrees_with_source(tmp_path):
    """A cache prepared from the short labels file (as before the check) is refused once the
    source is whole, with a message saying to delete it; it is not trained on."""
    import tempfile

    import tensorflow_datasets as tfds

    bad = _short_labels_folder(tmp_path / "bad", 100)
    cache = tmp_path / "tfds"
    with tempfile.TemporaryDirectory() as extract:
        builder = tfds_source.local_builder("fashion_mnist", bad, str(cache), Path(extract))
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(try_download_gcs=False)
        )
    assert builder.info.splits["train"].num_examples == 100  # what TFDS makes of the bad file
    with pytest.raises(data_lib.IdxError, match="delete .* to rebuild") as info:
        data_lib.load_dataset("fashion_mnist", source_dir=DEBIAN_DIR, data_dir=cache)
    message = str(info.value)
    assert "'train': 100" in message and "'train': 60000" in message


@pytest.mark.one_backend("tensorflow")
def test_channel_stats_are_exact_and_do_not_copy_the_images_to_float64():
    """A float64 copy of a 1,000-image 224 px sample took 2.3 GB; the sums run in chunks."""
    import tracemalloc

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (400, 224, 224, 3), dtype=np.uint8)  # 60 M values
    tracemalloc.start()
    mean, std = data_lib.channel_stats(images)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 300 * 2**20, peak  # the whole-array float64 copy alone is 482 MB
    flat = images[:40].reshape(-1, 3).astype(np.float64)  # the reference on a part ...
    part_mean, part_std = data_lib.channel_stats(images[:40])
    np.testing.assert_allclose(part_mean, flat.mean(0), rtol=0, atol=1e-9)
    np.testing.assert_allclose(part_std, flat.std(0), rtol=0, atol=1e-9)
    assert all(120 < m < 135 for m in mean) and all(70 < s < 77 for s in std)
