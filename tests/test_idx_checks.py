"""IDX files that are not what their names say, read with `--loader idx` (numpy) and checked for
TFDS (`check_idx_folder`): swapped images and labels files, a split's files of other sizes,
labels outside the dataset's classes, a wrong magic number. Each is one line naming the file,
never an IndexError mid-run. Backend-agnostic: one backend."""

from __future__ import annotations

import gzip
import os
import shutil

import numpy as np
import pytest
from idx_files import make_idx_folder, write_idx

from keras_resnet import data as data_lib
from keras_resnet.cli import train as train_cli

pytestmark = pytest.mark.one_backend("tensorflow")

IMAGES = "train-images-idx3-ubyte.gz"
LABELS = "train-labels-idx1-ubyte.gz"


@pytest.fixture
def idx_folder(tmp_path):
    return make_idx_folder(tmp_path / "fashion-mnist", 120, 40)


def _swap(folder, a: str, b: str) -> None:
    (folder / a).rename(folder / "swap")
    (folder / b).rename(folder / a)
    (folder / "swap").rename(folder / b)


def _idx_error(folder) -> str:
    """The one-line error of both readers (numpy's and the TFDS path's header check)."""
    with pytest.raises(data_lib.IdxError) as info:
        data_lib.load_dataset("fashion_mnist", source_dir=folder, loader="idx")
    message = str(info.value)
    assert "\n" not in message
    return message


def test_swapped_images_and_labels_files_name_the_file(idx_folder):
    _swap(idx_folder, IMAGES, LABELS)
    message = _idx_error(idx_folder)
    assert message.startswith(f"{idx_folder / IMAGES} must hold 3-D images")
    with pytest.raises(data_lib.IdxError, match=f"^{idx_folder / IMAGES} must hold 3-D"):
        data_lib.check_idx_folder(idx_folder)


def test_an_images_file_in_place_of_labels_names_the_file(idx_folder):
    shutil.copy(idx_folder / IMAGES, idx_folder / LABELS)
    assert _idx_error(idx_folder).startswith(f"{idx_folder / LABELS} must hold 1-D labels")


def test_labels_of_the_other_split_are_refused(idx_folder):
    _swap(idx_folder, LABELS, "t10k-labels-idx1-ubyte.gz")
    assert _idx_error(idx_folder) == (
        f"{idx_folder}: train images and labels differ in number (120 in {IMAGES}, 40 in {LABELS})"
    )


def test_labels_outside_the_classes_name_the_file(idx_folder):
    write_idx(idx_folder / LABELS, np.arange(120, dtype=np.uint8) % 13)
    message = _idx_error(idx_folder)
    assert message == (
        f"{idx_folder / LABELS}: labels must be in [0, 9] (10 classes), found 12 (is it a "
        "labels file of this dataset?)"
    )


def test_a_wrong_magic_names_the_file(idx_folder):
    path = idx_folder / "t10k-images-idx3-ubyte.gz"
    write_idx(path, np.zeros((40, 28, 28), np.uint8))
    payload = bytearray(gzip.decompress(path.read_bytes()))
    payload[2] = 0x0D  # float32 values, not unsigned bytes
    path.write_bytes(gzip.compress(bytes(payload)))
    assert _idx_error(idx_folder) == f"{path} is not an IDX file of unsigned bytes"


def test_train_command_with_swapped_files_is_one_line(idx_folder, tmp_path, capsys):
    _swap(idx_folder, IMAGES, LABELS)
    out = tmp_path / "runs"
    argv = ["--source-dir", os.fspath(idx_folder), "--loader", "idx", "--width", "0.125"]
    argv += ["--epochs", "1", "--output-dir", os.fspath(out), "--no-tensorboard"]
    with pytest.raises(SystemExit) as info:
        train_cli.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and "IndexError" not in err
    assert f"{idx_folder / IMAGES} must hold 3-D images" in err
    assert not list(out.rglob("config.json"))  # no run was started
