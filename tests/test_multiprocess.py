"""Data-parallel training over several processes (JAX): Keras' KERAS_DISTRIBUTION_* variables,
each process's share of every batch, one run folder written by process 0.

The two-process runs start two CPU processes of `keras-resnet train` on one machine (JAX's
CPU devices exchange gradients through Gloo) and compare them with one process on the same
data: the shares make up the one-process run's global batches, so the two agree to float
rounding. They take minutes on a shared two-core CPU: marked slow.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np
import pytest
from conftest import BACKEND
from PIL import Image

from keras_resnet import data as data_lib
from keras_resnet import training
from keras_resnet.cli import train as train_cli
from keras_resnet.data import cache as data_cache
from keras_resnet.data.mixing import MixedBatches
from keras_resnet.data.streamed import StreamedSource
from keras_resnet.training import TrainConfig, distributed, run
from keras_resnet.training.inputs import (
    FitData,
    OneHotBatches,
    OneHotCacheBatches,
    ShareOfBatches,
    ShareOfCacheBatches,
)
from keras_resnet.utils import OptionError

REPO = Path(__file__).resolve().parents[1]
needs_jax = pytest.mark.skipif(BACKEND != "jax", reason="several processes train on JAX only")

# Seconds a two-process run may take on a loaded two-core CPU before it counts as hung.
RUN_TIMEOUT = 900


def write_folder(root: Path, per_class: int, seed: int, size: int = 16) -> Path:
    """`root/class<k>/NNN.png`: grey noise with a faint bright stripe at class k's columns, so
    that two epochs reach neither chance nor 100%."""
    rng = np.random.default_rng(seed)
    for k in range(3):
        (root / f"class{k}").mkdir(parents=True, exist_ok=True)
        images = rng.integers(0, 120, (per_class, size, size)).astype(np.int32)
        images[:, 2:-2, 5 * k + 1 : 5 * k + 4] += 50
        for i, image in enumerate(images):
            Image.fromarray(image.clip(0, 255).astype(np.uint8), "L").save(
                root / f"class{k}" / f"{i:03d}.png"
            )
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """train/ (32 images a class) and test/ (10 a class), 16 px."""
    root = tmp_path_factory.mktemp("multiprocess") / "stripes"
    write_folder(root / "train", 32, seed=0)
    write_folder(root / "test", 10, seed=1)
    return root


def options(folder: Path, output_dir: Path, **changes) -> dict:
    """A ResNet-18 of width 1/8, batch 32 (3 steps an epoch), 2 epochs, nothing random but the
    weights and the order. At learning rate 0.02 one process and two agree to float rounding;
    at 0.05 this tiny network amplifies rounding differences to 3% of the loss within three
    steps (measured), on one process as on two."""
    values = dict(
        dataset=str(folder),
        image_size=16,
        width=0.125,
        epochs=2,
        batch_size=32,
        val_size=0,
        augment=False,
        learning_rate=0.02,
        warmup_epochs=0.0,
        label_smoothing=0.0,
        track_test=False,
        tensorboard=False,
        verbose=0,
        seed=0,
        output_dir=str(output_dir),
    )
    values.update(changes)
    return values


def command_line(values: dict) -> list[str]:
    argv = []
    for name, value in values.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            argv.append(flag if value else f"--no-{name.replace('_', '-')}")
        else:
            argv += [flag, str(value)]
    return argv


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def start_processes(runs: list[dict], logs: Path, **env_changes) -> list[subprocess.Popen]:
    """`keras-resnet train` once per process, process i with `runs[i]`'s options."""
    port = free_port()
    started = []
    for index, values in enumerate(runs):
        env = dict(
            os.environ,
            KERAS_BACKEND="jax",
            JAX_PLATFORMS="cpu",
            XLA_FLAGS="--xla_force_host_platform_device_count=1",
            KERAS_DISTRIBUTION_JOB_ADDRESSES=f"localhost:{port}",
            KERAS_DISTRIBUTION_NUM_PROCESSES=str(len(runs)),
            KERAS_DISTRIBUTION_PROCESS_ID=str(index),
            **env_changes,
        )
        log = open(logs / f"process{index}.log", "w")  # noqa: SIM115 (closed by the child)
        started.append(
            subprocess.Popen(
                [sys.executable, "-m", "keras_resnet", "train", *command_line(values)],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        log.close()
    return started


def wait_all(processes: list[subprocess.Popen], logs: Path) -> None:
    """Waits for every process; kills them all and fails with their logs' ends when one fails
    or they run past RUN_TIMEOUT."""
    deadline = time.monotonic() + RUN_TIMEOUT
    try:
        for process in processes:
            process.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pass
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    codes = [p.returncode for p in processes]
    if codes != [0] * len(processes):
        tails = "\n".join(
            f"--- process {i} (exit {code}):\n{(logs / f'process{i}.log').read_text()[-3000:]}"
            for i, code in enumerate(codes)
        )
        pytest.fail(f"exit statuses {codes}:\n{tails}")


def run_files(run: Path) -> list[str]:
    return sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file())


def history(run: Path) -> dict[str, list[float]]:
    return training.read_history(run / "history.csv")


# ---------------------------------------------------------------------------------------------
# Each process's share of every batch
# ---------------------------------------------------------------------------------------------


@pytest.mark.one_backend("jax")
def test_share_bounds_cut_each_global_batch_in_process_order():
    assert distributed.share_bounds(3, 16, None) == (48, 64)
    assert [distributed.share_bounds(3, 16, (i, 4)) for i in range(4)] == [
        (48, 52),
        (52, 56),
        (56, 60),
        (60, 64),
    ]
    with pytest.raises(ValueError, match="batch_size must be a multiple of the 3 processes"):
        distributed.share_bounds(0, 16, (0, 3))


@pytest.mark.one_backend("jax")
@pytest.mark.parametrize("mixing", [{}, {"mixup": 0.4, "cutmix": 1.0}])
def test_array_shares_make_up_the_one_process_batches(mixing):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 8, 8, 3), dtype=np.uint8)
    targets = np.eye(4, dtype="float32")[rng.integers(0, 4, 40)]
    whole = MixedBatches(images, targets, 8, drop_remainder=True, seed=3, **mixing)
    parts = [
        MixedBatches(images, targets, 8, drop_remainder=True, seed=3, shard=(i, 2), **mixing)
        for i in range(2)
    ]
    assert len(whole) == len(parts[0]) == len(parts[1]) == 5
    for _ in range(2):  # two epochs: two orders
        for index in range(len(whole)):
            x, y = whole[index]
            shares = [part[index] for part in parts]
            assert [s[0].shape for s in shares] == [(4, 8, 8, 3), (4, 8, 8, 3)]
            np.testing.assert_array_equal(np.concatenate([s[0] for s in shares]), x)
            np.testing.assert_array_equal(np.concatenate([s[1] for s in shares]), y)
        for batches in (whole, *parts):
            batches.on_epoch_end()


@pytest.mark.one_backend("jax")
def test_a_shard_needs_whole_batches_of_a_multiple_of_the_processes():
    images, targets = np.zeros((10, 4, 4, 1), np.uint8), np.zeros((10, 2), "float32")
    with pytest.raises(ValueError, match="needs drop_remainder"):
        MixedBatches(images, targets, 4, shard=(0, 2))
    with pytest.raises(ValueError, match="received batch_size=5"):
        MixedBatches(images, targets, 5, drop_remainder=True, shard=(0, 2))


@pytest.mark.one_backend("jax")
def test_cache_shares_make_up_the_one_process_batches(folder, tmp_path):
    source = data_lib.open_dataset(str(folder), image_size=80, channels=3, val_size=0, seed=1)
    cache = data_cache.open_cache(source, tmp_path / "cache", processes=False, log=lambda _: None)
    whole = OneHotCacheBatches(cache, "train", 16, num_classes=3, train=True, seed=5)
    parts = [
        ShareOfCacheBatches(cache, "train", 16, shard=(i, 2), num_classes=3, seed=5)
        for i in range(2)
    ]
    assert len(whole) == len(parts[0]) == 6
    for batches in (whole, *parts):
        batches.on_epoch_end()
    for index in (0, 5):
        x, y = whole[index]
        shares = [part[index] for part in parts]
        assert [s[0]["image"].shape[0] for s in shares] == [8, 8]
        for key in ("image", "size"):
            np.testing.assert_array_equal(np.concatenate([s[0][key] for s in shares]), x[key])
        np.testing.assert_array_equal(np.concatenate([s[1] for s in shares]), y)


@pytest.mark.one_backend("jax")
def test_fit_serves_each_epoch_its_own_batches(tmp_path):
    """`fit` draws a batch to build the loss and metrics, then resets the stream: the batches
    that worker threads prefetched meanwhile would open the first epoch, and every epoch would
    end with batches of the next one (a timing-dependent mixture, also between processes).
    The run builds them from the stream's first batch instead."""
    import jax

    served = []

    class Tagged(keras.utils.PyDataset):
        """Batch i of epoch e: every value 100 * e + i; prefetched by two threads."""

        def __init__(self):
            super().__init__(workers=2)
            self.epoch = 0

        def __len__(self):
            return 4

        def __getitem__(self, index):
            tag = np.full((2, 1), 100 * self.epoch + index, "float32")
            return tag, tag

        def on_epoch_end(self):
            self.epoch += 1

    def record(x):
        jax.debug.callback(lambda v: served.append(int(v[0, 0])), x, ordered=True)
        return x

    inputs = keras.Input((1,))
    model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Lambda(record)(inputs)))
    model.compile("sgd", "mse")
    data = FitData(x_train=Tagged(), validation=None, test=(), counts={"train": 8, "test": 0})
    plan = SimpleNamespace(config=SimpleNamespace(epochs=2, verbose=0), output_dir=tmp_path)
    run._fit(model, plan, data, [], 0)
    # Keras ends an epoch of the stream before the first one (epoch 1 is the first served).
    assert served == [100, 101, 102, 103, 200, 201, 202, 203]


@pytest.mark.one_backend("jax")
@pytest.mark.parametrize("image_size", [16, 80])  # whole images; the ImageNet recipe's crops
def test_folder_shares_make_up_the_one_process_batches(folder, image_size):
    """Over 64 px the pipeline draws a crop per image from (seed, epoch, batch): each share
    takes the draws of its positions, so the images are the one-process run's, pixel for
    pixel."""
    source = data_lib.open_dataset(
        str(folder), image_size=image_size, channels=3, val_size=0, seed=1
    )
    whole_images = image_size <= 64
    whole = OneHotBatches(source, "train", 12, train=True, seed=5, whole_images=whole_images)
    parts = [
        ShareOfBatches(source, "train", 12, shard=(i, 3), seed=5, whole_images=whole_images)
        for i in range(3)
    ]
    assert len(whole) == len(parts[0]) == 8  # 96 images, global batches of 12
    for batches in (whole, *parts):
        batches.on_epoch_end()  # epoch 1: another order and other crops
    for index in (0, 7):
        x, y = whole[index]
        shares = [part[index] for part in parts]
        assert [s[0].shape for s in shares] == [(4, image_size, image_size, 3)] * 3
        np.testing.assert_array_equal(np.concatenate([s[0] for s in shares]), x)
        np.testing.assert_array_equal(np.concatenate([s[1] for s in shares]), y)


# ---------------------------------------------------------------------------------------------
# Keras' variables, checked before anything starts
# ---------------------------------------------------------------------------------------------


@pytest.mark.one_backend("jax")
@pytest.mark.parametrize(
    "env, message",
    [
        ({"KERAS_DISTRIBUTION_NUM_PROCESSES": "two"}, "must be a whole number"),
        ({"KERAS_DISTRIBUTION_NUM_PROCESSES": "2"}, "KERAS_DISTRIBUTION_PROCESS_ID must be set"),
        (
            {"KERAS_DISTRIBUTION_NUM_PROCESSES": "2", "KERAS_DISTRIBUTION_PROCESS_ID": "2"},
            "0 to 1",
        ),
        (
            {"KERAS_DISTRIBUTION_NUM_PROCESSES": "2", "KERAS_DISTRIBUTION_PROCESS_ID": "1"},
            "KERAS_DISTRIBUTION_JOB_ADDRESSES must name the coordinator",
        ),
    ],
)
def test_bad_variables_stop_the_command_with_one_line(
    folder, tmp_path, monkeypatch, capsys, env, message
):
    for name in ("JOB_ADDRESSES", "NUM_PROCESSES", "PROCESS_ID"):
        monkeypatch.delenv(f"KERAS_DISTRIBUTION_{name}", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exit_:
        train_cli.main(command_line(options(folder, tmp_path / "run")))
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()


@pytest.mark.one_backend("jax")
def test_several_processes_need_distribute_auto(monkeypatch):
    monkeypatch.setenv("KERAS_DISTRIBUTION_NUM_PROCESSES", "2")
    monkeypatch.setenv("KERAS_DISTRIBUTION_PROCESS_ID", "1")
    monkeypatch.setenv("KERAS_DISTRIBUTION_JOB_ADDRESSES", "localhost:1")
    assert distributed.shard() == (1, 2) and not distributed.is_writer()
    with pytest.raises(OptionError, match="distribute must be 'auto'") as error:
        distributed.distribution_scope("off")
    assert error.value.field == "distribute"


class FakeTfdsStream(StreamedSource):
    """A streamed TFDS dataset as `make_plan` sees it (nothing is ever streamed)."""

    kind = "streamed TFDS datasets"
    class_names = ["a", "b"]
    mean, std = (100.0, 100.0, 100.0), (50.0, 50.0, 50.0)
    name, source, image_shape = "imagenette", "tfds-stream:/data", (96, 96, 3)
    counts = {"train": 64, "test": 16}

    def fit_stream(self, split, batch_size, *, train, seed, augment=True):
        raise AssertionError("a refused run opens no stream")

    def fit_report(self):
        return {}


@pytest.mark.one_backend("jax")
def test_a_tfds_stream_is_refused_over_several_processes(monkeypatch, tmp_path):
    """Before the processes join: the refusal is one line, and nothing is started."""
    monkeypatch.setenv("KERAS_DISTRIBUTION_NUM_PROCESSES", "2")
    monkeypatch.setenv("KERAS_DISTRIBUTION_PROCESS_ID", "1")
    monkeypatch.setenv("KERAS_DISTRIBUTION_JOB_ADDRESSES", "localhost:1")
    options = TrainConfig.create(dataset="imagenette", batch_size=16, output_dir=str(tmp_path))
    with pytest.raises(OptionError, match="streamed TFDS datasets are not trained over") as error:
        training.make_plan(options.resolve(), FakeTfdsStream(), tmp_path)
    assert error.value.field == "dataset"
    assert "KERAS_DISTRIBUTION_NUM_PROCESSES=2" in str(error.value)


@pytest.mark.one_backend("tensorflow")
def test_several_processes_need_the_jax_backend(monkeypatch):
    monkeypatch.setenv("KERAS_DISTRIBUTION_NUM_PROCESSES", "2")
    monkeypatch.setenv("KERAS_DISTRIBUTION_PROCESS_ID", "0")
    monkeypatch.setenv("KERAS_DISTRIBUTION_JOB_ADDRESSES", "localhost:1")
    with pytest.raises(ValueError, match="needs the JAX backend"):
        distributed.initialize()


# ---------------------------------------------------------------------------------------------
# Two processes
# ---------------------------------------------------------------------------------------------


@needs_jax
@pytest.mark.slow
def test_two_processes_train_like_one_and_process_0_alone_writes(folder, tmp_path):
    single = training.train(TrainConfig.create(**options(folder, tmp_path / "one")))

    run, elsewhere = tmp_path / "two", tmp_path / "process1"
    # Process 1 is given a run folder of its own, to show that it writes nothing at all.
    runs = [options(folder, run), options(folder, elsewhere)]
    wait_all(start_processes(runs, tmp_path), tmp_path)

    assert not elsewhere.exists()
    expected = [
        "checkpoints/best.keras",
        "class_names.txt",
        "config.json",
        "history.csv",
        "metrics.json",
        "model.keras",
    ]
    assert [f for f in run_files(run) if f != "curves.png"] == expected
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["num_processes"] == 2 and metrics["num_devices"] == 2
    assert metrics["train_images"] == single["train_images"] == 96
    assert metrics["steps_per_epoch"] == single["steps_per_epoch"] == 3
    assert metrics["epochs"] == 2 and metrics["resumed_from_epoch"] == 0
    # The same global batches from the same weights: the two runs differ by float rounding
    # only (the gradients and the batch statistics are summed over two devices). Measured on
    # this data: every step's loss within 2e-7 relative, the test loss within 1.3e-4, the same
    # accuracy. A global batch made of shares of two different batches moves the loss by 1e-2
    # and more. Tolerances: 1e-4 (training loss), 2e-3 (test loss, after the batch-norm moving
    # statistics), one test image of 30.
    two, one = history(run), history(tmp_path / "one")
    np.testing.assert_allclose(two["loss"], one["loss"], rtol=1e-4)
    np.testing.assert_allclose(metrics["test_loss"], single["test_loss"], rtol=2e-3)
    assert abs(metrics["test_accuracy"] - single["test_accuracy"]) <= 1 / 30 + 1e-9


@needs_jax
@pytest.mark.slow
def test_two_processes_resume_after_both_are_killed(folder, tmp_path):
    run = tmp_path / "run"
    values = options(folder, run, epochs=3, backup=True)
    # Process 0's saves pause 1 s after each file, so that the kill comes before the last epoch.
    processes = start_processes([values, values], tmp_path, KERAS_RESNET_SAVE_PAUSE="1")
    metadata = run / "backup" / "training_metadata.json"
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline and all(p.poll() is None for p in processes):
        if metadata.exists() and json.loads(metadata.read_text())["epoch"] >= 1:
            break
        time.sleep(0.5)
    for process in processes:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert json.loads(metadata.read_text())["epoch"] in (1, 2)
    assert not (run / "metrics.json").exists()

    wait_all(start_processes([values, values], tmp_path), tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["num_processes"] == 2
    assert metrics["resumed_from_epoch"] in (1, 2)
    assert metrics["epochs_this_session"] == 3 - metrics["resumed_from_epoch"]
    assert history(run)["epoch"] == [0, 1, 2]
    assert not (run / "backup").exists()  # retired once metrics.json was written
