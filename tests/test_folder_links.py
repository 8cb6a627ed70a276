"""Image folders under hostile layouts (keras_resnet.data.folders): links that loop back into
the dataset, file and folder names that are not UTF-8, class names that one-name-per-line
files cannot store. The scan and the decoding are the same whatever the Keras backend
(`one_backend`), except the tf.data pipeline, which runs on TensorFlow."""

from __future__ import annotations

import json
import os
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from keras_resnet import data as data_lib
from keras_resnet.data import decode, pipelines

pytestmark = pytest.mark.one_backend("tensorflow")


def write_images(folder: Path, count: int, value: int) -> None:
    """`count` 8x8 grayscale PNGs of one value, so that a pixel tells the class."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.fromarray(np.full((8, 8), value, np.uint8), "L").save(folder / f"{i}.png")


def one_line_folder_error(path, **options) -> str:
    with pytest.raises(data_lib.FolderError) as info:
        data_lib.open_dataset(path, **options)
    message = str(info.value)
    assert "\n" not in message
    return message


# --- links --------------------------------------------------------------------------------------


def test_links_that_loop_are_followed_once_per_real_folder(tmp_path):
    root = tmp_path / "data"
    write_images(root / "train" / "a", 3, 10)
    write_images(root / "train" / "b", 2, 200)
    write_images(root / "val" / "a", 1, 10)
    write_images(root / "val" / "b", 1, 200)
    write_images(tmp_path / "outside", 4, 10)  # more images of class a, outside the dataset
    links = {
        root / "train" / "a" / "dataset": "../..",  # the dataset folder: val/ and train/b
        root / "train" / "a" / "split": "..",  # train/: train/b's images
        root / "train" / "a" / "itself": ".",
        root / "train" / "b" / "other_class": "../a",
        root / "train" / "b" / "top": "/",  # above the dataset
        root / "train" / "a" / "more": os.fspath(tmp_path / "outside"),
        root / "train" / "b" / "more_again": os.fspath(tmp_path / "outside"),
    }
    for link, target in links.items():
        link.symlink_to(target)
    source = data_lib.open_dataset(root, image_size=8, channels=1)
    assert source.class_names == ["a", "b"]
    assert source.counts == {"train": 3 + 4 + 2, "val": 2}
    paths, labels = source.files["train"]
    assert labels.tolist() == [0] * 7 + [1] * 2
    for path, label in zip(paths, labels, strict=True):
        pixel = np.asarray(Image.open(source.path(path)))[0, 0]
        assert pixel == (10, 200)[label], path  # every image keeps its own class
    assert sorted(os.fsdecode(p) for p in paths[:7]) == sorted(
        [f"train/a/{i}.png" for i in range(3)] + [f"train/a/more/{i}.png" for i in range(4)]
    )


def test_a_class_folder_that_links_to_another_is_refused(tmp_path):
    write_images(tmp_path / "data" / "a", 2, 10)
    (tmp_path / "data" / "b").symlink_to("a")
    message = one_line_folder_error(tmp_path / "data", image_size=8)
    assert "are one folder" in message and os.fspath(tmp_path / "data" / "b") in message


# --- names --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "character", ["\n", "\r", "\f", "\v", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]
)
def test_a_class_name_with_a_line_break_is_refused(tmp_path, character):
    name = f"shoe{character}bag"
    write_images(tmp_path / "data" / "plain", 1, 10)
    write_images(tmp_path / "data" / name, 1, 10)
    assert len(name.splitlines()) == 2  # what a reader of class_names.txt would see
    message = one_line_folder_error(tmp_path / "data", image_size=8)
    assert repr(os.fspath(tmp_path / "data" / name)) in message
    assert "class_names.txt" in message


def test_a_class_name_with_a_byte_order_mark_is_refused(tmp_path):
    write_images(tmp_path / "data" / "\ufeffbag", 1, 10)
    write_images(tmp_path / "data" / "shoe", 1, 10)
    message = one_line_folder_error(tmp_path / "data", image_size=8)
    assert repr(os.fspath(tmp_path / "data" / "\ufeffbag")) in message


def test_a_class_folder_name_that_is_not_utf8_is_named_in_the_error(tmp_path):
    root = os.fsencode(tmp_path / "data")
    write_images(tmp_path / "data" / "shoe", 1, 10)
    os.makedirs(root + b"/caf\xe9")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(os.fsdecode(root + b"/caf\xe9/0.png"))
    message = one_line_folder_error(tmp_path / "data", image_size=8)
    assert repr(root + b"/caf\xe9") in message and "not UTF-8" in message


def test_class_names_round_trip_through_class_names_txt(tmp_path):
    """Names that open_dataset accepts read back line for line (tabs, spaces, accents, CJK),
    as class_names.txt is written and split on newlines."""
    names = sorted(["a\tb", " lead", "café", "鞋", "x" * 100])
    for value, name in enumerate(names):
        write_images(tmp_path / "data" / name, 1, value)
    source = data_lib.open_dataset(tmp_path / "data", image_size=8)
    assert source.class_names == names
    text = "".join(f"{name}\n" for name in source.class_names)
    assert text.encode("utf-8").decode("utf-8").split("\n")[:-1] == names
    assert text.splitlines() == names


# --- a file name that is not UTF-8, unreadable, in val/ -------------------------------------------


@pytest.fixture
def folder_with_a_bad_latin1_name(tmp_path) -> Path:
    root = tmp_path / "data"
    for split, count in (("train", 4), ("val", 2)):
        write_images(root / split / "a", count, 10)
        write_images(root / split / "b", count, 200)
    bad = os.fsencode(root / "val" / "a") + b"/caf\xe9\n\\x.png"  # Latin-1, a newline too
    with open(bad, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n cut short")
    return root


def _check_skipped(source) -> None:
    summary = source.skipped()
    assert summary["skipped"] == 1
    (first,) = summary["first_skipped"]
    assert first["path"].endswith("/val/a/caf\\xe9\\n\\\\x.png"), first["path"]
    assert "not a readable image" in first["reason"]
    json.dumps(summary)  # metrics.json can hold it


def test_an_unreadable_file_with_a_non_utf8_name_is_recorded(folder_with_a_bad_latin1_name):
    source = data_lib.open_dataset(folder_with_a_bad_latin1_name, image_size=8, channels=1)
    assert source.counts == {"train": 8, "val": 5}
    batches = pipelines.FolderPyDataset(source, "val", 5, train=False)
    x, y = batches[0]
    assert x.shape == (5, 8, 8, 1) and sorted(y.tolist()) == [0, 0, 0, 1, 1]
    _check_skipped(source)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="tf.data: TensorFlow")
def test_the_tf_data_pipeline_records_it_too(folder_with_a_bad_latin1_name):
    source = data_lib.open_dataset(folder_with_a_bad_latin1_name, image_size=8, channels=1)
    batches = list(pipelines.tf_dataset(source, "val", 8, train=False))
    assert sum(int(x.shape[0]) for x, _ in batches) == 4
    _check_skipped(source)


def test_skip_log_keeps_one_line_per_file_whatever_its_name(tmp_path):
    log = decode.SkipLog(tmp_path)
    names = [b"plain.png", b"caf\xe9.png", b"two\nlines.png", b"tab\there.png", b"back\\slash"]
    for name in names:
        log.record(os.fsdecode(b"/d/" + name), "not a readable image")
        log.record(b"/d/" + name, "again")  # bytes and str are the same file
    summary = log.summary()
    assert summary["count"] == 5
    shown = [entry["path"] for entry in summary["first"]]
    assert shown == [
        "/d/plain.png",
        "/d/caf\\xe9.png",
        "/d/two\\nlines.png",
        "/d/tab\\there.png",
        "/d/back\\\\slash",
    ]
    assert len((tmp_path / "skipped.tsv").read_bytes().split(b"\n")) == 11  # 10 lines
