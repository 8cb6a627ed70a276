"""Files written whole (`keras_resnet.utils.atomic_path`) get the mode any new file gets: 0o666
less the umask (folders 0o777 less it), as the exports and `open()` give, not the 0o600 of
`tempfile.mkstemp`: a run folder, its models, and a cache can be read by whoever the umask lets
read them. Checked under the umasks 0o022 and 0o027; files are the same on every backend (one
backend)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import keras
import numpy as np
import pytest
from idx_files import make_idx_folder
from PIL import Image
from test_train import tiny

from keras_resnet import data as data_lib
from keras_resnet import training
from keras_resnet.data import cache as data_cache
from keras_resnet.utils import atomic_path, write_text_atomic

pytestmark = pytest.mark.one_backend("tensorflow")


@pytest.fixture(params=[0o022, 0o027], ids=["umask022", "umask027"])
def umask(request):
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def modes(folder: Path) -> dict[str, int]:
    """The permission bits of everything under `folder` (relative paths)."""
    return {os.fspath(path.relative_to(folder)): mode(path) for path in sorted(folder.rglob("*"))}


def test_atomic_writes_take_the_umask(tmp_path, umask):
    write_text_atomic(tmp_path / "new" / "deeper" / "notes.txt", "text")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    with atomic_path(tmp_path / "new" / "model.keras") as tmp:
        model.save(tmp)
    with atomic_path(tmp_path / "new" / "epoch.weights.h5") as tmp:
        model.save_weights(tmp)
    assert modes(tmp_path / "new") == {
        "deeper": 0o777 & ~umask,
        "deeper/notes.txt": 0o666 & ~umask,
        "epoch.weights.h5": 0o666 & ~umask,
        "model.keras": 0o666 & ~umask,
    }
    assert (tmp_path / "new" / "deeper" / "notes.txt").read_text() == "text"


def test_a_replaced_file_takes_the_umask_too(tmp_path, umask):
    target = tmp_path / "config.json"
    target.write_text("old")
    os.chmod(target, 0o600)
    write_text_atomic(target, "new")
    assert mode(target) == 0o666 & ~umask and target.read_text() == "new"


@pytest.mark.slow
def test_a_training_run_folder_takes_the_umask(tmp_path):
    """Every file and folder of a run (50 s on the 2-core CPU machine), umask 0o027."""
    umask = 0o027
    previous = os.umask(umask)
    try:
        run_dir = _train_one_epoch(tmp_path)
    finally:
        os.umask(previous)
    found = modes(run_dir)
    assert {"model.keras", "metrics.json", "config.json", "history.csv"} <= set(found)
    assert "checkpoints/best.keras" in found
    expected = {
        name: 0o777 & ~umask if (run_dir / name).is_dir() else 0o666 & ~umask for name in found
    }
    assert found == expected


def _train_one_epoch(tmp_path: Path) -> Path:
    folder = make_idx_folder(tmp_path / "fashion-mnist", 200, 40)
    dataset = data_lib.load_dataset("fashion_mnist", source_dir=folder, loader="idx")
    config = tiny(tmp_path, epochs=1, val_size=40, batch_size=40)
    return Path(training.train(config, dataset=dataset)["run_dir"])


def test_a_cache_folder_takes_the_umask(tmp_path, umask):
    for split, count in (("train", 3), ("val", 2)):
        for name in ("a", "b"):
            (tmp_path / "data" / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                image = np.full((20, 20, 3), 9 * i, np.uint8)
                Image.fromarray(image).save(tmp_path / "data" / split / name / f"{i}.png")
    source = data_lib.open_dataset(tmp_path / "data", image_size=16, log_dir=tmp_path / "log")
    data_cache.open_cache(source, tmp_path / "cache", processes=False, log=lambda _: None)
    found = modes(tmp_path / "cache")
    assert sorted(found) == [
        ".lock",
        "cache.json",
        "train.meta.npy",
        "train.u8",
        "val.meta.npy",
        "val.u8",
    ]
    assert set(found.values()) == {0o666 & ~umask}
    assert mode(tmp_path / "cache") == 0o777 & ~umask
