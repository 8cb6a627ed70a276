"""The search on a folder streams: its train and validation parts are file
lists cut from the folder's training split (val/ and test/ never seen), a trial's process is sent
those lists and builds its streams itself, the final run streams through `training.train`, a
cache serves trials and final run alike, and the search's peak RSS does not grow with the number
of images."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from keras_resnet import data as data_lib
from keras_resnet import tuning
from keras_resnet.cli import tune as tune_cli
from keras_resnet.training import TrainConfig
from keras_resnet.training.inputs import FolderParts, part_stream
from keras_resnet.tuning import tuners as tuners_module

SPACE = dict(depths=(18,), block_kinds=("basic",), width_min=0.125, width_max=0.125)


def write_folder(root: Path, per_class: dict[str, int], *, size: int = 32, classes: int = 2):
    """root/<split>/c<k>/NNNNN.png: noise around a grey level per class (learnable, tiny)."""
    rng = np.random.default_rng(0)
    for split, count in per_class.items():
        for label in range(classes):
            folder = root / split / f"c{label}"
            folder.mkdir(parents=True, exist_ok=True)
            level = 60 + 120 * label / max(1, classes - 1)
            for i in range(count):
                pixels = np.clip(rng.normal(level, 30, (size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i:05d}.png")
    return root


@pytest.fixture(scope="module")
def split_folder(tmp_path_factory) -> Path:
    """train/ (2 x 60), val/ (2 x 10) and test/ (2 x 10) at 32 px."""
    root = tmp_path_factory.mktemp("tune_folders") / "images"
    return write_folder(root, {"train": 60, "val": 10, "test": 10})


def batches(stream) -> list:
    """Every (images, targets) batch of a stream as numpy: a tf.data dataset (evaluation on
    TensorFlow) or a PyDataset."""
    if hasattr(stream, "as_numpy_iterator"):
        return list(stream.as_numpy_iterator())
    return [tuple(np.asarray(part) for part in stream[i]) for i in range(len(stream))]


def options_for(folder: Path, tmp_path: Path, **overrides) -> tuning.SearchOptions:
    train = dict(dataset=str(folder), image_size=32, batch_size=16, verbose=0)
    train.update(overrides.pop("train", {}))
    values = dict(
        tuner="random",
        max_trials=1,
        max_epochs=1,
        validation_fraction=0.25,
        directory=str(tmp_path / "runs"),
        project_name="folder",
        final_epochs=0,
        output_dir=str(tmp_path / "final"),
        train=TrainConfig(**train),
    )
    values.update(overrides)
    return tuning.SearchOptions(**values)


def test_search_parts_are_file_lists_of_the_train_split(split_folder, tmp_path):
    space = tuning.SearchSpace(**SPACE)
    _, plan, _, parts = tuning.prepare_search(space, options_for(split_folder, tmp_path))
    assert isinstance(parts, FolderParts) and set(parts.folder.files) == {"train", "val"}
    train_paths, train_labels = plan.data.folder.files["train"]
    assert len(train_paths) == 120  # train/ itself: the folder's val/ is its own split
    kept, held = data_lib.split(120, 0.25, seed=0)  # the package's seeded split, as for arrays
    np.testing.assert_array_equal(parts.folder.files["val"][0], train_paths[held])
    np.testing.assert_array_equal(parts.folder.files["train"][0], train_paths[kept])
    np.testing.assert_array_equal(parts.folder.files["val"][1], train_labels[held])
    assert parts.part_counts == {"train": 90, "val": 30}
    assert all(p.startswith(b"train/") for p, _ in zip(*parts.folder.files["val"], strict=True))
    # A smaller train fraction keeps the same validation images.
    half = options_for(split_folder, tmp_path, train_fraction=0.5)
    _, _, _, half_parts = tuning.prepare_search(space, half)
    np.testing.assert_array_equal(half_parts.folder.files["val"][0], train_paths[held])
    assert half_parts.part_counts["train"] == 45
    assert set(half_parts.folder.files["train"][0]) <= set(train_paths[kept])
    # Each part streams at the trial's batch size: the train part drops its last partial batch.
    train_stream = part_stream(parts, "train", 16, train=True, seed=0)
    val_stream = part_stream(parts, "val", 16, train=False, seed=0)
    assert parts.small_images  # 32 px: whole images, the model's pad-crop and flip
    assert len(train_stream) == 90 // 16
    val_batches = batches(val_stream)
    assert [len(images) for images, _ in val_batches] == [16, 14]
    images, targets = val_batches[1]
    assert images.shape == (14, 32, 32, 3) and images.dtype == np.uint8
    assert targets.shape == (14, 2)


@pytest.mark.one_backend("tensorflow")
def test_trial_payload_holds_file_lists_not_images(tmp_path, monkeypatch):
    folder = write_folder(tmp_path / "big", {"train": 500}, size=32)  # 1,000 files
    sent = []

    def fake_trial(payload, work_dir, on_start=None):
        blob = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
        sent.append((len(blob), pickle.loads(blob)))
        metrics = {"val_accuracy": 0.5, "val_loss": 1.0, "params": 1, "flops": 1}
        return {**metrics, "seconds": 0.1, "epochs": 1}, 0

    monkeypatch.setattr(tuners_module, "run_trial_in_process", fake_trial)
    options = options_for(folder, tmp_path, validation_fraction=0.2, train={"val_size": 0.1})
    summary = tuning.run_search(tuning.SearchSpace(**SPACE), options)
    assert len(sent) == 1
    size, payload = sent[0]
    x = payload["kwargs"]["x"]
    assert isinstance(x, FolderParts) and x is payload["hypermodel"].dataset
    # 900 files after the val_size hold-out: 720 train, 180 validation, as relative paths.
    assert x.part_counts == {"train": 720, "val": 180}
    assert summary["data"]["images"] == {"train": 720, "val": 180}
    # 1,000 decoded 32 px images would be 3 MB; the payload is the lists and the configuration.
    print(f"payload: {size} bytes for 900 files")
    assert size < 64 * 1024, size
    arrays = [a for a in x.folder.files.values() for a in a]
    assert all(a.dtype != np.uint8 for a in arrays)


@pytest.mark.one_backend("tensorflow")
def test_folder_search_refuses_mixup(split_folder, tmp_path):
    space = tuning.SearchSpace(**SPACE, mixup_min=0.1, mixup_max=0.4)
    with pytest.raises(tuning.SearchSpaceError, match="mixup is for datasets in memory") as info:
        tuning.prepare_search(space, options_for(split_folder, tmp_path))
    assert info.value.field == "mixup_min"
    assert not (tmp_path / "runs").exists()


@pytest.mark.one_backend("tensorflow")
def test_tune_command_takes_cache(split_folder, tmp_path):
    argv = ["--dataset", str(split_folder), "--image-size", "96", "--cache", str(tmp_path / "c")]
    _, options = tune_cli.options_from_args(tune_cli.make_parser("tune").parse_args(argv))
    assert options.train.cache == str(tmp_path / "c") and options.train.image_size == 96


def test_folder_search_streams_in_process(split_folder, tmp_path):
    """One trial of one epoch, end to end in this process: built from the parts' streams."""
    policy = keras.config.dtype_policy().name
    options = options_for(split_folder, tmp_path, process_per_trial=False)
    summary = tuning.run_search(tuning.SearchSpace(**SPACE), options)
    assert keras.config.dtype_policy().name == policy
    records = tuning.read_trials(Path(summary["project_dir"]))
    assert [r.status for r in records] == ["COMPLETED"] and records[0].epochs == 1
    assert 0 <= records[0].val_accuracy <= 1
    assert summary["data"]["images"] == {"train": 90, "val": 30}
    assert summary["data"]["skipped"] == 0


@pytest.mark.slow
def test_folder_final_run_streams_the_folder(split_folder, tmp_path):
    """The final run goes through `training.train`: the folder's val/ validates it and its
    test/ tests it; the search's parts came from train/ only."""
    options = options_for(split_folder, tmp_path, final_epochs=1, process_per_trial=False)
    summary = tuning.run_search(tuning.SearchSpace(**SPACE), options)
    final = summary["final"]
    assert (final["train_images"], final["val_images"], final["test_images"]) == (120, 20, 20)
    assert final["test_split"] == "test" and final["skipped"] == 0
    run = Path(options.output_dir) / "tuned_folder"
    assert (run / "class_names.txt").read_text().split() == ["c0", "c1"]
    assert json.loads((run / "config.json").read_text())["val_size"] == 0.1


@pytest.mark.slow
def test_folder_search_with_cache(tmp_path):
    """Trials read the parts' rows of the cache (cropped in the model), the final run the same
    cache: built once, then checked."""
    folder = write_folder(tmp_path / "big", {"train": 20, "test": 4}, size=80)
    cache = tmp_path / "cache"
    options = options_for(
        folder,
        tmp_path,
        final_epochs=1,
        process_per_trial=False,
        validation_fraction=0.25,
        train={"cache": str(cache), "image_size": 72},
    )
    space = tuning.SearchSpace(**SPACE)
    _, _, _, parts = tuning.prepare_search(space, options)
    # train/ less the final run's val_size hold-out (4 of 40), then a quarter of it validates.
    assert parts.cache == cache and parts.part_counts == {"train": 27, "val": 9}
    stream = part_stream(parts, "val", 4, train=False, seed=0)
    batch, targets = stream[0]
    assert batch["image"].shape[1:] == (82, 82, 3) and targets.shape == (4, 2)  # squashed 256/224
    built = (cache / "cache.json").stat().st_mtime_ns
    summary = tuning.run_search(space, options)
    final = summary["final"]  # the final run: the train split and its hold-out, test/
    assert (final["train_images"], final["val_images"], final["test_images"]) == (36, 4, 8)
    assert (cache / "cache.json").stat().st_mtime_ns == built  # not built again


@pytest.mark.slow
def test_search_peak_rss_does_not_grow_with_the_folder(tmp_path):
    """The search process and its trial process, for a folder of 200 and of 2,000 PNGs."""
    script = textwrap.dedent(
        """
        import json, sys
        from keras_resnet import tuning
        from keras_resnet.training import TrainConfig
        folder, runs = sys.argv[1:3]
        options = tuning.SearchOptions(
            tuner="random", max_trials=1, max_epochs=1, directory=runs, project_name="rss",
            train=TrainConfig(dataset=folder, image_size=32, batch_size=50, verbose=0))
        space = tuning.SearchSpace(depths=(18,), block_kinds=("basic",), width_min=0.125,
                                   width_max=0.125)
        tuning.run_search(space, options)
        ends = [e for e in tuning.read_events(runs + "/rss") if e["event"] == "end"]
        status = open("/proc/self/status").read().split("VmHWM:")[1].split()[0]
        print(json.dumps({"search": int(status) * 1024, "trial": ends[-1]["child_peak_rss"]}))
        """
    )
    peaks = {}
    for n in (200, 2000):
        folder = write_folder(tmp_path / f"n{n}", {"train": n // 2}, size=32)
        result = subprocess.run(
            [sys.executable, "-c", script, str(folder), str(tmp_path / f"runs{n}")],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        peaks[n] = json.loads(result.stdout.strip().splitlines()[-1])
    print(
        f"peak RSS (MB): { ({n: {k: v / 2**20 for k, v in p.items()} for n, p in peaks.items()}) }"
    )
    for key in ("search", "trial"):
        assert abs(peaks[2000][key] - peaks[200][key]) < 150 * 2**20, (key, peaks)
