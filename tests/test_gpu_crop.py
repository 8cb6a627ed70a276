"""The on-device random-resized crop (`data.gpu_crop`) and the cache batches that feed it.

Runs on every backend: `KERAS_BACKEND=jax|torch pytest tests/test_gpu_crop.py`."""

from __future__ import annotations

import time

import keras
import numpy as np
import pytest
from PIL import Image

from keras_resnet import data as data_lib
from keras_resnet.data import cache as cache_lib
from keras_resnet.data import gpu_crop, recipe


def smooth_image(height: int, width: int, seed: int = 0, cell: int = 6) -> np.ndarray:
    """A smooth RGB uint8 picture (bicubic upsampling of noise): bilinear crops of it are exact
    enough to compare two implementations."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (height // cell + 2, width // cell + 2, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC))


def numpy_bilinear(stored: np.ndarray, box, original, size: int) -> np.ndarray:
    """Reference: gather-based bilinear resize of `box` (original coordinates) of the squashed
    `stored` image, half-pixel centers, edges clamped."""
    (left, top, right, bottom), (height, width) = box, original
    side_h, side_w = stored.shape[:2]

    def axis(start, stop, original_len, stored_len):
        u = (start + (np.arange(size) + 0.5) * (stop - start) / size) * stored_len / original_len
        u = np.clip(u - 0.5, 0, stored_len - 1)
        lo = np.floor(u).astype(int)
        hi = np.minimum(lo + 1, stored_len - 1)
        return lo, hi, (u - lo)[:, None]

    y0, y1, fy = axis(top, bottom, height, side_h)
    x0, x1, fx = axis(left, right, width, side_w)
    img = stored.astype(np.float64)
    rows = img[y0] * (1 - fy[..., None]) + img[y1] * fy[..., None]
    return rows[:, x0] * (1 - fx) + rows[:, x1] * fx


def crop(images, boxes, sizes, size, flip=None):
    flip = None if flip is None else np.asarray(flip).reshape(-1, 1)
    out = gpu_crop.resized_crop(images, np.asarray(boxes, np.float32), sizes, size, flip)
    return keras.ops.convert_to_numpy(out)


def test_crop_is_the_box_drawn_in_original_coordinates():
    # A 300 x 500 original squashed to 64 x 64; the box is mapped back onto the squashed grid.
    original = np.array([[300, 500]], np.int32)
    full = smooth_image(300, 500)
    stored = np.asarray(Image.fromarray(full).resize((64, 64), Image.Resampling.BILINEAR))
    boxes = [(40, 30, 340, 270), (0, 0, 500, 300), (450, 250, 500, 300)]
    for box in boxes:
        ours = crop(stored[None], [box], original, 48)[0]
        reference = numpy_bilinear(stored, box, (300, 500), 48)
        assert np.abs(ours - reference).max() < 0.05, box  # same sampling, float32 rounding
        # Pillow's bilinear (no antialiasing when enlarging) on the same box of the same pixels.
        scaled = (box[0] * 64 / 500, box[1] * 64 / 300, box[2] * 64 / 500, box[3] * 64 / 300)
        if (scaled[2] - scaled[0]) <= 48 and (scaled[3] - scaled[1]) <= 48:
            pillow = Image.fromarray(stored).resize((48, 48), Image.Resampling.BILINEAR, box=scaled)
            diff = np.abs(ours - np.asarray(pillow, np.float64))
            assert diff.mean() < 2.0, (box, diff.mean())
    # On a picture without detail finer than the squashed grid, the crop of the squashed copy is
    # the crop of the original: the box lands on the same content.
    full = smooth_image(300, 500, cell=60)
    stored = np.asarray(Image.fromarray(full).resize((64, 64), Image.Resampling.BILINEAR))
    box = boxes[0]
    direct = np.asarray(
        Image.fromarray(full).resize((48, 48), Image.Resampling.BILINEAR, box=box), np.float64
    )
    assert np.abs(crop(stored[None], [box], original, 48)[0] - direct).mean() < 4.0


def test_flip_mirrors_the_crop():
    stored = smooth_image(40, 40)[None].repeat(2, 0)
    sizes = np.array([[200, 300]] * 2, np.int32)
    boxes = [(10, 20, 250, 180)] * 2
    out = crop(stored, boxes, sizes, 24, flip=[False, True])
    np.testing.assert_allclose(out[1], out[0][:, ::-1], atol=1e-3)
    assert np.abs(out[1] - out[0]).max() > 10  # the picture is not symmetric


def box_draws(height: int, width: int, n: int = 2000) -> np.ndarray:
    sizes = np.tile(np.array([[height, width]], np.int32), (n, 1))
    return keras.ops.convert_to_numpy(gpu_crop.random_boxes(sizes, keras.random.SeedGenerator(3)))


@pytest.mark.parametrize("height,width", [(375, 500), (500, 333), (100, 1000)])
def test_box_statistics_are_torchvisions(height, width):
    boxes = box_draws(height, width)
    left, top, right, bottom = boxes.T
    assert np.all(boxes == np.round(boxes))  # integer boxes, as torchvision's
    assert np.all((0 <= left) & (left < right) & (right <= width))
    assert np.all((0 <= top) & (top < bottom) & (bottom <= height))
    w, h = right - left, bottom - top
    area = w * h / (height * width)
    fallback = (w == width) | (h == height)  # the center crop, or a draw as large as the image
    assert np.all(area[~fallback] >= 0.08 - 0.01) and np.all(area <= 1.0)
    aspect = (w / h)[~fallback]
    assert np.all((aspect >= 3 / 4 - 0.05) & (aspect <= 4 / 3 + 0.05))
    # The same distribution as the package's port of torchvision's get_params (itself checked
    # against torchvision in test_folders): mean area and fallback rate over 2,000 draws each.
    rng = np.random.default_rng(0)
    theirs = np.array([recipe.random_resized_crop_box(rng, height, width) for _ in range(2000)])
    their_area = (theirs[:, 2] - theirs[:, 0]) * (theirs[:, 3] - theirs[:, 1]) / (height * width)
    assert abs(area.mean() - their_area.mean()) < 0.03, (area.mean(), their_area.mean())
    their_left_center = np.mean((theirs[:, 0] + theirs[:, 2]) / 2 / width)
    assert abs(np.mean((left + right) / 2 / width) - their_left_center) < 0.03


def test_mean_area_matches_torchvision():
    torch = pytest.importorskip("torch")
    from torchvision.transforms import RandomResizedCrop

    torch.manual_seed(0)
    image = torch.zeros(3, 375, 500)
    draws = (RandomResizedCrop.get_params(image, (0.08, 1.0), (3 / 4, 4 / 3)) for _ in range(2000))
    theirs = np.mean([h * w / (375 * 500) for _, _, h, w in draws])
    boxes = box_draws(375, 500)
    ours = np.mean((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) / (375 * 500))
    assert abs(ours - theirs) < 0.03, (ours, theirs)


def test_layer_modes_and_config():
    layer = gpu_crop.RandomResizedCrop(24, seed=1)
    stored = np.stack([smooth_image(40, 40, s) for s in range(4)])
    sizes = np.array([[300, 400], [400, 300], [100, 900], [50, 50]], np.int32)
    train = keras.ops.convert_to_numpy(layer(stored, sizes, training=True))
    assert train.shape == (4, 24, 24, 3) and train.dtype == np.float32
    assert 0 <= train.min() and train.max() <= 255
    again = keras.ops.convert_to_numpy(layer(stored, sizes, training=True))
    assert not np.allclose(train, again)  # the seed generator advances: new crops every call
    # Inference on already-cropped images (the cache's val split): the same pixels, as float32.
    val = stored[:, :24, :24]
    out = keras.ops.convert_to_numpy(layer(val, sizes, training=False))
    np.testing.assert_array_equal(out, val.astype(np.float32))
    # Inference on squashed images: the eval recipe's center box.
    out = keras.ops.convert_to_numpy(layer(stored, sizes, training=False))
    boxes = keras.ops.convert_to_numpy(gpu_crop.center_boxes(sizes, 24))
    np.testing.assert_allclose(out, crop(stored, boxes, sizes, 24), atol=1e-3)
    for (height, width), box in zip(sizes, boxes, strict=True):
        expected = recipe.eval_crop_box(int(height), int(width), 24)
        np.testing.assert_allclose(box, expected, atol=max(height, width) / 24)  # rounding
    clone = gpu_crop.RandomResizedCrop.from_config(layer.get_config())
    assert (clone.size, clone.scale, clone.ratio, clone.seed) == (24, (0.08, 1.0), (0.75, 4 / 3), 1)


def photo_folder(root, n_per_class: int = 8) -> None:
    for split, count in (("train", n_per_class), ("val", 2)):
        for k in range(2):
            folder = root / split / f"c{k}"
            folder.mkdir(parents=True)
            for i in range(count):
                height, width = (60, 90) if i % 2 else (90, 50)
                image = smooth_image(height, width, seed=100 * k + i)
                Image.fromarray(image).save(folder / f"{i}.jpg", quality=95)


def test_cache_batches_for_the_device_crop_and_fit(tmp_path):
    photo_folder(tmp_path / "photos")
    source = data_lib.open_dataset(tmp_path / "photos", image_size=16, log_dir=tmp_path / "log")
    folder = data_lib.build_cache(source, tmp_path / "cache", side=32, workers=2)
    train = data_lib.CachePyDataset(folder, "train", 4, train=True, crop_on_device=True)
    val = data_lib.CachePyDataset(folder, "val", 3, train=False, crop_on_device=True)
    x, y = train[0]
    assert x["image"].shape == (4, 32, 32, 3) and x["image"].dtype == np.uint8
    assert x["size"].dtype == np.int32 and {tuple(s) for s in x["size"]} <= {(60, 90), (90, 50)}
    assert len(train) == 4 and len(val) == 2 and val[1][0]["image"].shape == (1, 16, 16, 3)
    np.testing.assert_array_equal(val[0][0]["size"], [[16, 16]] * 3)
    seen = np.concatenate([train.rows(i) for i in range(len(train))])
    assert sorted(seen) == list(range(16))  # a permutation: each image once an epoch
    five = data_lib.CachePyDataset(folder, "train", 5, train=True, crop_on_device=True)
    assert len(five) == 3  # 16 // 5: the last partial batch (one image) is dropped
    rows = np.concatenate([five.rows(i) for i in range(len(five))])
    assert len(set(rows)) == 15 and set(rows) <= set(range(16))
    backbone = keras.Sequential(
        [keras.Input((16, 16, 3)), keras.layers.Rescaling(1 / 255), keras.layers.Flatten()]
        + [keras.layers.Dense(2, activation="softmax")]
    )
    model = gpu_crop.training_model(backbone, seed=0)
    model.compile("sgd", "sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(train, validation_data=val, epochs=2, verbose=0)
    assert len(history.history["val_accuracy"]) == 2
    # Validation through the wrapper is the backbone on the stored center crops.
    images = np.concatenate([val[i][0]["image"] for i in range(len(val))])
    expected = backbone.predict(images.astype(np.float32), verbose=0)
    got = model.predict(val, verbose=0)
    np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.one_backend("tensorflow")
def test_device_batches_are_a_gather(tmp_path):
    # A cache of 512 random 128-px images built by hand: the batches cost a memcpy per image.
    folder = tmp_path / "cache"
    folder.mkdir()
    n, side = 512, 128
    images = np.lib.format.open_memmap(folder / "train.u8", "w+", np.uint8, (n, side, side, 3))
    images[:] = np.random.default_rng(0).integers(0, 256, images.shape, dtype=np.uint8)
    images.flush()
    meta = np.column_stack([np.arange(n) % 10, np.full((n, 2), 300), np.ones(n)])
    np.save(folder / "train.meta.npy", meta.astype(np.int64))
    info = {"version": cache_lib.CACHE_VERSION, "image_size": 112, "side": side}
    (folder / "cache.json").write_text(__import__("json").dumps(info))
    batches = data_lib.CachePyDataset(folder, "train", 64, train=True, crop_on_device=True)
    start = time.perf_counter()
    count = sum(batches[i][0]["image"].shape[0] for i in range(len(batches)))
    rate = count / (time.perf_counter() - start)
    rows = batches.rows(0)
    np.testing.assert_array_equal(batches[0][0]["image"], images[rows])
    print(f"device-crop batches: {rate:,.0f} img/s at side {side}")
    assert count == n and rate > 2_000  # no per-image work (a 2-core shared machine: loose)


@pytest.mark.parametrize("processes,opencv", [(True, True), (False, True), (True, False)])
@pytest.mark.one_backend("tensorflow")
def test_cache_build_workers_give_the_same_cache(tmp_path, monkeypatch, processes, opencv):
    if not opencv:  # the Pillow fallback, where OpenCV is not installed
        monkeypatch.setattr(cache_lib, "opencv_module", lambda: None)
    photo_folder(tmp_path / "photos", n_per_class=5)
    (tmp_path / "photos" / "train" / "c0" / "cut.jpg").write_bytes(
        (tmp_path / "photos" / "train" / "c0" / "0.jpg").read_bytes()[:300]
    )
    source = data_lib.open_dataset(tmp_path / "photos", image_size=16, log_dir=tmp_path / "log")
    folder = data_lib.build_cache(
        source, tmp_path / "cache", side=24, workers=2, processes=processes
    )
    assert data_lib.cache_info(folder)["splits"]["train"] == {"count": 10, "size": 24}
    assert source.skipped()["skipped"] == 1  # the truncated file, reported from a worker too
    meta = np.load(folder / "train.meta.npy")
    stored = np.load(folder / "train.u8")
    for (label, height, width, ok), image, relative in zip(
        meta, stored, source.files["train"][0], strict=True
    ):
        if not ok:
            assert relative.endswith(b"cut.jpg")
            continue
        expected, size = cache_lib.squash(source.path(relative), 24, 3, opencv=False)
        assert (height, width) == size and label in (0, 1)
        if cache_lib.opencv_module() is None:
            np.testing.assert_array_equal(image, expected)
        else:  # OpenCV's area resize against Pillow's antialiased bilinear, on fine detail
            assert np.abs(image.astype(int) - expected.astype(int)).mean() < 5


@pytest.mark.one_backend("tensorflow")
def test_opencv_decode_matches_pillow(tmp_path):
    pytest.importorskip("cv2")
    image = smooth_image(600, 900, cell=24)
    Image.fromarray(image).save(tmp_path / "a.jpg", quality=95)
    fast, size = cache_lib.squash(tmp_path / "a.jpg", 128, 3)
    slow, same = cache_lib.squash(tmp_path / "a.jpg", 128, 3, opencv=False)
    assert size == same == (600, 900) and fast.shape == slow.shape == (128, 128, 3)
    assert np.abs(fast.astype(int) - slow.astype(int)).mean() < 3
    (tmp_path / "b.jpg").write_bytes((tmp_path / "a.jpg").read_bytes()[:-2000])
    with pytest.raises(data_lib.BadImage):  # OpenCV would decode it silently: Pillow reports
        cache_lib.squash(tmp_path / "b.jpg", 128, 3)
