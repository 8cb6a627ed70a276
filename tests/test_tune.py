"""The search: space and flag validation, the report and its Pareto front, Keras' global state
around a search, a tiny real search (process per trial) with its final training, resume after
SIGKILL, chief + 2 workers, memory.

Tiny everything: width 0.125, ResNet-18 basic, 28 px Fashion-MNIST, a few hundred images,
1 epoch per trial. The subprocess tests (kill, distributed) run on the TensorFlow backend.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import keras
import pytest
from conftest import plan_of

import keras_resnet
from keras_resnet import tuning
from keras_resnet.cli import tune as tune_cli
from keras_resnet.data import load_dataset, subset
from keras_resnet.training import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "tune.py"
BACKEND = keras.backend.backend()

# The tiny search used by the end-to-end tests: one architecture, learning rate and weight decay
# vary (so that the random tuner always finds a new trial). The data sizes keep every batch
# full (conftest.py turns TensorFlow's oneDNN off: it crashed on some batch shapes here).
TINY_SPACE = dict(depths=(18,), block_kinds=("basic",), width_min=0.125, width_max=0.125)
TINY_FLAGS = [
    "--depths",
    "18",
    "--block-kinds",
    "basic",
    "--width-min",
    "0.125",
    "--width-max",
    "0.125",
    "--tuner",
    "random",
    "--max-epochs",
    "1",
    "--batch-size",
    "64",
    "--loader",
    "idx",
    "--train-fraction",
    "0.005",
    "--validation-fraction",
    "0.005",
    "--quiet",
]


def _tree_digest(path: Path) -> str:
    """A hash of every file's path and bytes under `path` (to prove nothing changed)."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def tiny_data():
    """320 train and 100 test images of the real Fashion-MNIST (IDX files, no TFDS): trials
    train on 256 and validate on 64."""
    return subset(load_dataset("fashion_mnist", loader="idx"), 320, 100, seed=0)


def _env(**extra) -> dict:
    env = dict(
        os.environ,
        KERAS_BACKEND=BACKEND,
        TF_CPP_MIN_LOG_LEVEL="3",
        TF_ENABLE_ONEDNN_OPTS="0",
    )
    for key in ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT"):
        env.pop(key, None)
    env.update(extra)
    return env


# ---------------------------------------------------------------------------------------------
# the space and the flags
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(width_min=0), "width_min"),
        (dict(width_min=-0.5), "width_min"),
        (dict(width_min=1.0, width_max=0.5), "width_min"),
        (dict(width_step=0), "width_step"),
        (dict(expansion_min=4, expansion_max=2), "expansion_min"),
        (dict(expansion_min=0), "expansion_min"),
        (dict(lr_min=0.5, lr_max=0.1), "lr_min"),
        (dict(weight_decay_min=0, weight_decay_max=1e-3), "weight_decay_min"),
        (dict(depths=(18, 20)), "depths"),
        (dict(block_kinds=("basic", "basic")), "block_kinds"),
        (dict(stems=()), "stems"),
        (dict(width_min=0.001, width_max=0.5), "width_min"),
        (dict(label_smoothing_min=0.1), "label_smoothing_max"),
        (dict(label_smoothing_min=0.0, label_smoothing_max=1.0), "label_smoothing_max"),
        (dict(label_smoothing_min=0.2, label_smoothing_max=0.1), "label_smoothing_min"),
        (dict(erasing_min=-0.1, erasing_max=0.5), "erasing_min"),
        (dict(erasing_max=0.5), "erasing_min"),
    ],
)
@pytest.mark.one_backend("jax")
def test_invalid_space_names_the_field(kwargs, field):
    with pytest.raises(tuning.SearchSpaceError) as info:
        tuning.SearchSpace(**kwargs)
    assert info.value.field == field
    assert f"received {field}=" in str(info.value)
    assert isinstance(info.value, keras_resnet.utils.OptionError)


@pytest.mark.one_backend("jax")
def test_declared_hyperparameters_and_conditional_expansion():
    import keras_tuner as kt

    space = tuning.SearchSpace(depths=(18, 34), width_min=0.25, width_max=1.0, width_step=0.25)
    assert space.widths() == [0.25, 0.5, 0.75, 1.0]
    hp = kt.HyperParameters()
    declared = space.declare(hp)
    names = {p.name for p in hp.space}
    assert names == {
        "depth",
        "block",
        "expansion",
        "width",
        "stem",
        "learning_rate",
        "weight_decay",
    }
    assert declared["depth"] in (18, 34)
    # expansion is active for bottleneck blocks only
    values = dict(
        depth=34, block="basic", width=0.5, stem="cifar", learning_rate=0.2, weight_decay=5e-3
    )
    model, recipe = tuning.config_from_values(values)
    assert model == keras_resnet.ResNetConfig.named("resnet34", width=0.5, stem="cifar")
    assert model.expansion is None and recipe == {"learning_rate": 0.2, "weight_decay": 5e-3}
    values.update(block="bottleneck", expansion=2)
    model, _ = tuning.config_from_values(values)
    assert (model.block, model.expansion, model.stage_blocks) == ("bottleneck", 2, (3, 4, 6, 3))
    assert tuning.describe(model) == "resnet34 bottleneck e2 w0.5 cifar"
    # fixed values where a range is a point: no hyperparameter to search
    hp = kt.HyperParameters()
    tuning.SearchSpace(**TINY_SPACE).declare(hp)
    assert [p.name for p in hp.space if not isinstance(p, kt.engine.hyperparameters.Fixed)] == [
        "learning_rate",
        "weight_decay",
    ]


@pytest.mark.one_backend("jax")
def test_recipe_ranges_reach_the_trial_config():
    """Label smoothing and erasing are searched when their ranges are given; a trial's values
    land on its TrainConfig (the architecture onto `model`, a ResNetConfig, whose other options
    stay the base's), and the definition no longer pins the searched values."""
    import keras_tuner as kt

    space = tuning.SearchSpace(
        **TINY_SPACE,
        label_smoothing_min=0.0,
        label_smoothing_max=0.2,
        erasing_min=0.25,
        erasing_max=0.25,
    )
    hp = kt.HyperParameters()
    space.declare(hp)
    declared = {p.name: p for p in hp.space}
    assert isinstance(declared["label_smoothing"], kt.engine.hyperparameters.Float)
    assert (declared["label_smoothing"].min_value, declared["label_smoothing"].max_value) == (
        0.0,
        0.2,
    )
    assert isinstance(declared["erasing"], kt.engine.hyperparameters.Fixed)
    base = TrainConfig.create(model="resnet50", dropout_rate=0.2, label_smoothing=0.1)
    values = dict(
        depth=18,
        block="basic",
        width=0.125,
        stem="cifar",
        learning_rate=0.3,
        weight_decay=1e-3,
        label_smoothing=0.05,
        erasing=0.25,
    )
    config = tuning.trial_train_config(base, values, epochs=5)
    assert config.model == base.model.replace(
        stage_blocks=(2, 2, 2, 2), block="basic", expansion=None, width=0.125, name="resnet18"
    )
    assert config.model.dropout_rate == 0.2  # not searched: the base's
    assert (config.learning_rate, config.weight_decay) == (0.3, 1e-3)
    assert (config.label_smoothing, config.erasing) == (0.05, 0.25)
    assert (config.epochs, config.warmup_epochs) == (5, 1.0)  # warmup <= a fifth of the epochs
    options = tuning.SearchOptions(train=base)
    pinned = definition_of(options, tuning.SearchSpace(**TINY_SPACE), (28, 28, 1))["train_config"]
    searched = definition_of(options, space, (28, 28, 1))["train_config"]
    assert pinned["label_smoothing"] == 0.1 and pinned["erasing"] == 0.5
    assert "label_smoothing" not in searched and "erasing" not in searched
    assert "width" not in searched["model"] and searched["model"]["dropout_rate"] == 0.2
    # A space without recipe ranges keeps the definition a search stored before they existed.
    assert "label_smoothing_min" not in tuning.SearchSpace().to_dict()


@pytest.mark.parametrize("kind", tuning.TUNERS)
@pytest.mark.one_backend("jax")
def test_every_tuner_takes_the_space_without_building_a_model(kind, tmp_path, monkeypatch):
    """Each tuner starts (bayesian needs scikit-learn, a declared dependency) with the space as
    declared, the conditional expansion included, and builds no model to learn it."""
    import numpy as np

    def no_build(self, hp):
        raise AssertionError("a model was built to populate the search space")

    monkeypatch.setattr(tuning.ResNetHyperModel, "build", no_build)
    images = np.random.default_rng(0).integers(0, 256, (20, 28, 28, 1), dtype=np.uint8)
    labels = np.arange(20) % 10
    dataset = keras_resnet.data.Dataset(
        "tiny", images, labels, images, labels, [str(i) for i in range(10)], "zeros"
    )
    space = tuning.SearchSpace(depths=(18,), width_min=0.25, width_max=0.5)
    options = tuning.SearchOptions(
        directory=str(tmp_path), project_name="p", train=TrainConfig(batch_size=4)
    )
    assert tuning.ResNetHyperModel.build is no_build
    hypermodel = tuning.ResNetHyperModel(space, options.base_config(), dataset, max_epochs=3)
    tuner = tuning.make_tuner(
        kind,
        hypermodel,
        directory=str(tmp_path),
        project_name=kind,
        max_trials=2,
        max_epochs=3,
        seed=0,
        process_per_trial=True,
    )
    declared = {p.name: p for p in tuner.oracle.get_space().space}
    assert set(declared) == {
        "depth",
        "block",
        "expansion",
        "width",
        "stem",
        "learning_rate",
        "weight_decay",
    }
    [condition] = declared["expansion"].conditions
    assert condition.get_config() == {"name": "block", "values": ["bottleneck"]}


@pytest.mark.one_backend("jax")
def test_stem_too_large_for_the_images():
    space = tuning.SearchSpace(stems=("cifar", "imagenet"))
    space.check_input((32, 32, 3))
    with pytest.raises(tuning.SearchSpaceError, match="'imagenet' needs images of at least 32"):
        space.check_input((28, 28, 1))


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["--width-min", "0"], "--width-min"),
        (["--width-min", "2", "--width-max", "1"], "--width-min"),
        (["--expansion-min", "5"], "--expansion-min"),
        (["--lr-min", "1", "--lr-max", "0.1"], "--lr-min"),
        (["--tuner", "grid"], "--tuner"),
        (["--max-trials", "0"], "--max-trials"),
        (["--train-fraction", "1.5"], "--train-fraction"),
        (["--precision", "float8"], "--precision"),
        (["--batch-size", "0"], "--batch-size"),
        (["--label-smoothing-min", "0.1"], "--label-smoothing-max"),
        (["--erasing-min", "0.5", "--erasing-max", "2"], "--erasing-max"),
        (["--stems", "imagenet"], "--stems"),  # 28 px Fashion-MNIST is too small for it
    ],
)
@pytest.mark.one_backend("jax")
def test_cli_bad_input_one_line_exit_2(argv, flag, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        tune_cli.main(argv + ["--directory", str(tmp_path / "d"), "--loader", "idx"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"keras-resnet tune: error: argument {flag}"), err
    assert not (tmp_path / "d").exists()


@pytest.mark.one_backend("jax")
def test_cli_unwritable_directory_one_line(tmp_path, capsys):
    """A --directory that cannot be created (under a regular file: chmod does not stop root,
    which runs these tests) is refused in one line before anything is written."""
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    with pytest.raises(SystemExit) as info:
        tune_cli.main(["--directory", str(blocker / "sub"), "--loader", "idx", *TINY_FLAGS])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("keras-resnet tune: error: argument --directory: directory must ")
    assert "is not a folder" in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


# ---------------------------------------------------------------------------------------------
# the report
# ---------------------------------------------------------------------------------------------


def _fake_trial(project: Path, trial_id: str, acc: float, flops: int, status="COMPLETED"):
    values = dict(
        depth=18, block="basic", width=0.25, stem="cifar", learning_rate=0.1, weight_decay=5e-3
    )
    metrics = {
        name: {
            "direction": "max" if name == "val_accuracy" else "min",
            "observations": [{"value": [value], "step": 0}],
        }
        for name, value in (
            ("val_accuracy", acc),
            ("flops", flops),
            ("params", 1000),
            ("seconds", 1.5),
            ("epochs", 2),
        )
    }
    folder = project / f"trial_{trial_id}"
    folder.mkdir(parents=True)
    (folder / "trial.json").write_text(
        json.dumps(
            {
                "trial_id": trial_id,
                "status": status,
                "hyperparameters": {"values": values},
                "metrics": {"metrics": metrics},
            }
        )
    )


@pytest.mark.one_backend("jax")
def test_report_marks_the_pareto_front(tmp_path):
    project = tmp_path / "search"
    # (accuracy, MFLOPs): 0 and 2 and 3 are on the front; 1 is beaten by 0, 4 by 2.
    points = {"0": (0.80, 10), "1": (0.79, 20), "2": (0.90, 30), "3": (0.95, 80), "4": (0.85, 40)}
    for trial_id, (acc, mflops) in points.items():
        _fake_trial(project, trial_id, acc, int(mflops * 1e6))
    records = tuning.read_trials(project)
    assert [r.trial_id for r in records if r.pareto] == ["0", "2", "3"]
    assert tuning.best_trial(records).trial_id == "3"
    summary = tuning.write_report(project)
    assert summary["trials"] == 5 and summary["best"]["trial_id"] == "3"
    table = (project / "report" / "trials.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and "COMPLETED" in line]
    assert len(rows) == 5
    assert rows[0].endswith("| * |") and rows[1].endswith("|  |")
    assert "| 80.0 | 0.9500 |" in rows[3]
    from PIL import Image

    with Image.open(project / "report" / "pareto.png") as png:
        assert png.size == (770, 495)  # 7 x 4.5 inches at 110 dpi
    csv_lines = (project / "report" / "trials.csv").read_text().splitlines()
    assert len(csv_lines) == 6 and csv_lines[0].startswith("trial_id,status,val_accuracy")


@pytest.mark.one_backend("jax")
def test_report_only_from_a_directory(tmp_path, capsys):
    _fake_trial(tmp_path / "p", "0", 0.5, 10**6)
    argv = ["--report-only", "--directory", str(tmp_path), "--project-name", "p"]
    assert tune_cli.main(argv) == 0
    assert "| 0 | COMPLETED | resnet18 basic w0.25 cifar |" in capsys.readouterr().out
    # Written whole: no temporary file is left beside the report.
    assert sorted(p.name for p in (tmp_path / "p" / "report").iterdir()) == [
        "pareto.png",
        "trials.csv",
        "trials.md",
    ]
    with pytest.raises(SystemExit) as info:
        tune_cli.main(["--report-only", "--directory", str(tmp_path), "--project-name", "none"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "argument --directory: no search directory" in err[0]


# ---------------------------------------------------------------------------------------------
# a real search
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_search_then_final_training_then_resume(tiny_data, tmp_path):
    """Two trials, each in its own process; metrics match the model; the best is trained on
    the full train set into a run folder; a rerun runs nothing again; another space is
    refused and leaves the directory as it was."""
    space = tuning.SearchSpace(**TINY_SPACE)
    options = tuning.SearchOptions(
        tuner="random",
        max_trials=2,
        max_epochs=1,
        validation_fraction=0.2,
        directory=str(tmp_path / "runs"),
        project_name="tiny",
        final_epochs=1,
        output_dir=str(tmp_path / "saved"),
        train=TrainConfig(batch_size=64, verbose=0),
    )
    summary = tuning.run_search(space, options, dataset=tiny_data)
    project = Path(summary["project_dir"])
    records = tuning.read_trials(project)
    assert [r.status for r in records] == ["COMPLETED", "COMPLETED"]
    reference = keras_resnet.ResNet18(
        block="basic", width=0.125, stem="cifar", num_classes=10, input_shape=(28, 28, 1)
    )
    for r in records:
        assert r.params == keras_resnet.count_params(reference) == 176_258
        assert r.flops == keras_resnet.count_flops(reference)
        assert r.epochs == 1 and r.seconds > 0 and 0 <= r.val_accuracy <= 1
    assert (project / "report" / "pareto.png").stat().st_size > 0
    events = tuning.read_events(project)
    assert [(e["event"], e["trial_id"]) for e in events] == [
        ("start", "0"),
        ("child", "0"),
        ("fit", "0"),
        ("end", "0"),
        ("start", "1"),
        ("child", "1"),
        ("fit", "1"),
        ("end", "1"),
    ]
    child_pids = [e["child_pid"] for e in events if e["event"] == "child"]
    assert [e["pid"] for e in events if e["event"] == "fit"] == child_pids  # in the trial process
    assert all(e["child_peak_rss"] > 0 for e in events if e["event"] == "end")

    final = summary["final"]
    run = Path(final["run_dir"])
    assert run == tmp_path / "saved" / "tuned_tiny"
    assert {"model.keras", "metrics.json", "config.json", "tuning.json"} <= {
        p.name for p in run.iterdir()
    }
    config = json.loads((run / "config.json").read_text())
    best = tuning.best_trial(records)
    assert config["val_size"] == 0 and config["epochs"] == 1
    assert config["learning_rate"] == best.config[1]["learning_rate"]
    assert config["model"]["width"] == 0.125 and config["model"]["name"] == "resnet18"
    assert final["train_images"] == len(tiny_data.x_train)
    assert json.loads((run / "tuning.json").read_text())["trial_id"] == best.trial_id

    # The same search again: nothing runs, the final model is reused.
    again = tuning.run_search(space, options, dataset=tiny_data)
    assert len(tuning.read_events(project)) == 8
    assert again["final"]["reused"] is True

    # Another space in the same directory: refused, and nothing changed.
    before = _tree_digest(tmp_path)
    with pytest.raises(tuning.SearchMismatchError, match="width_max: 0.125 there, 0.25 here"):
        tuning.run_search(
            tuning.SearchSpace(**{**TINY_SPACE, "width_max": 0.25}), options, dataset=tiny_data
        )
    assert _tree_digest(tmp_path) == before


@pytest.mark.slow
@pytest.mark.skipif(
    BACKEND != "tensorflow",
    reason="KerasTuner's Hyperband logic does not depend on the backend; run once (CI time)",
)
def test_hyperband_continues_from_the_parent_trial(tiny_data, tmp_path):
    """Hyperband's second round trains the best first-round trial further, from its weights,
    in process (the other execution path)."""
    space = tuning.SearchSpace(**TINY_SPACE)
    options = tuning.SearchOptions(
        tuner="hyperband",
        max_trials=4,
        max_epochs=3,
        validation_fraction=0.2,
        directory=str(tmp_path),
        project_name="hb",
        process_per_trial=False,
        train=TrainConfig(batch_size=64, verbose=0),
    )
    tuning.run_search(space, options, dataset=tiny_data)
    records = {r.trial_id: r for r in tuning.read_trials(tmp_path / "hb")}
    assert len(records) == 4 and all(r.status == "COMPLETED" for r in records.values())
    first_round = [r for r in records.values() if "tuner/trial_id" not in r.values]
    continued = [r for r in records.values() if "tuner/trial_id" in r.values]
    assert len(first_round) == 3 and len(continued) == 1
    parent = records[continued[0].values["tuner/trial_id"]]
    assert parent is tuning.best_trial(first_round)
    assert continued[0].values["tuner/initial_epoch"] == 1
    assert continued[0].values["tuner/epochs"] == 3 and continued[0].epochs == 3
    assert (tmp_path / "hb" / f"trial_{parent.trial_id}" / "checkpoint.weights.h5").is_file()
    ends = [e for e in tuning.read_events(tmp_path / "hb") if e["event"] == "end"]
    assert all(e["rss"] > 0 and e["child_peak_rss"] is None for e in ends)  # in process


# ---------------------------------------------------------------------------------------------
# Keras' global state
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def float32_policy():
    """Keras' global dtype policy set to float32 for the test, and restored after it."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    yield
    keras.config.set_dtype_policy(previous)


def _keras_globals() -> tuple:
    return (
        keras.config.dtype_policy().name,
        keras.distribution.distribution(),
        keras.config.image_data_format(),
    )


def test_hypermodel_build_restores_the_dtype_policy(tiny_data, float32_policy, monkeypatch):
    """A trial's model takes the search's precision; the global policy is float32 again after
    build(), also when building fails."""
    import keras_tuner as kt

    space = tuning.SearchSpace(**TINY_SPACE)
    base = TrainConfig(batch_size=64, precision="mixed_bfloat16")
    hypermodel = tuning.ResNetHyperModel(space, base, tiny_data, max_epochs=1)
    model = hypermodel.build(kt.HyperParameters())
    assert model.dtype_policy.name == "mixed_bfloat16"
    assert model.get_layer("conv1_conv").compute_dtype == "bfloat16"
    assert _keras_globals() == ("float32", None, "channels_last")

    def broken_compile(*args, **kwargs):
        raise RuntimeError("compile failed")

    monkeypatch.setattr(tuning.hypermodel.training, "compile_model", broken_compile)
    with pytest.raises(RuntimeError, match="compile failed"):
        hypermodel.build(kt.HyperParameters())
    assert _keras_globals() == ("float32", None, "channels_last")


@pytest.mark.one_backend("torch")  # Keras' global settings: the same on every backend
def test_in_process_search_restores_keras_globals(tiny_data, float32_policy, tmp_path):
    """An in-process search in mixed_bfloat16 leaves Keras' dtype policy, distribution and data
    format as they were; so does a search refused before it starts."""
    space = tuning.SearchSpace(**TINY_SPACE)
    options = tuning.SearchOptions(
        tuner="random",
        max_trials=1,
        max_epochs=1,
        validation_fraction=0.2,
        directory=str(tmp_path),
        project_name="mixed",
        process_per_trial=False,
        train=TrainConfig(batch_size=64, precision="mixed_bfloat16", verbose=0),
    )
    before = _keras_globals()
    tiny_data = subset(tiny_data, 80, 16)  # one training step, one validation batch
    tuning.run_search(space, options, dataset=tiny_data)
    assert _keras_globals() == before == ("float32", None, "channels_last")
    [record] = tuning.read_trials(tmp_path / "mixed")
    assert record.status == "COMPLETED"
    other = tuning.SearchSpace(**{**TINY_SPACE, "width_max": 0.25})
    with pytest.raises(tuning.SearchMismatchError):
        tuning.run_search(other, options, dataset=tiny_data)
    assert _keras_globals() == before


@pytest.mark.one_backend("jax")
def test_cli_refuses_another_search_space_and_leaves_it_untouched(tmp_path, capsys):
    project = tmp_path / "search"
    project.mkdir()
    definition = {"format": 1, "space": {"width_max": 1.0}}
    (project / tuning.DEFINITION_FILE).write_text(json.dumps(definition))
    (project / "oracle.json").write_text("{}")
    before = _tree_digest(tmp_path)
    with pytest.raises(SystemExit) as info:
        tune_cli.main(["--directory", str(tmp_path), "--loader", "idx"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "holds a search with a different definition" in err[-1]
    assert _tree_digest(tmp_path) == before


# ---------------------------------------------------------------------------------------------
# subprocesses: SIGKILL and resume; chief and workers
# ---------------------------------------------------------------------------------------------

needs_tf = pytest.mark.skipif(
    BACKEND != "tensorflow",
    reason="subprocess tests run on the TensorFlow backend (CI time; the path is the same)",
)


def _wait_for(predicate, timeout: float, what: str, procs=()):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        for proc in procs:
            if proc.poll() is not None and proc.returncode != 0:
                raise AssertionError(
                    f"process exited with {proc.returncode} while waiting for {what}"
                )
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.mark.slow
@needs_tf
def test_sigkill_mid_search_then_resume(tmp_path):
    """Kill the search with SIGKILL during its second trial; the same command finishes it,
    running the interrupted trial again and no completed trial."""
    cmd = [
        sys.executable,
        str(SCRIPT),
        *TINY_FLAGS,
        "--max-trials",
        "3",
        "--directory",
        str(tmp_path),
        "--project-name",
        "k",
    ]
    project = tmp_path / "k"
    log = open(tmp_path / "first.log", "w")
    first = subprocess.Popen(cmd, env=_env(), stdout=log, stderr=subprocess.STDOUT)
    try:

        def second_trial_training():
            events = tuning.read_events(project)
            return bool(events) and (events[-1]["event"], events[-1]["trial_id"]) == ("fit", "1")

        # The trial's process logs 'fit' once its model is built, just before model.fit.
        _wait_for(second_trial_training, 240, "the second trial's training", [first])
        events = tuning.read_events(project)
        child_pid = events[-1]["pid"]
        assert events[-2]["event"] == "child" and events[-2]["child_pid"] == child_pid
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
        log.close()
    assert first.returncode == -signal.SIGKILL

    def child_gone():  # the trial's process dies with the search (die_with_parent)
        try:
            status = Path(f"/proc/{child_pid}/status").read_text()
            cmdline = Path(f"/proc/{child_pid}/cmdline").read_bytes()
        except OSError:
            return True
        return "\nState:\tZ" in status or b"run_trial_file" not in cmdline

    _wait_for(child_gone, 20, "the trial's process to die with the search")
    completed_before = {r.trial_id for r in tuning.read_trials(project) if r.status == "COMPLETED"}
    started_before = {e["trial_id"] for e in tuning.read_events(project) if e["event"] == "start"}
    interrupted = started_before - completed_before
    assert completed_before == {"0"} and interrupted == {"1"}
    events_before = len(tuning.read_events(project))

    second = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    rerun = tuning.read_events(project)[events_before:]
    rerun_started = [e["trial_id"] for e in rerun if e["event"] == "start"]
    assert not completed_before & set(rerun_started)  # no completed trial ran again
    assert rerun_started == ["1", "2"]  # the interrupted one first, then the rest
    records = tuning.read_trials(project)
    assert [(r.trial_id, r.status) for r in records] == [
        ("0", "COMPLETED"),
        ("1", "COMPLETED"),
        ("2", "COMPLETED"),
    ]
    # Memory: each trial ran in its own process; the search process itself did not grow.
    ends = [e for e in rerun if e["event"] == "end"]
    assert abs(ends[-1]["rss"] - ends[0]["rss"]) < 64 * 2**20
    assert (project / "report" / "trials.md").is_file()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.one_backend("jax")
def test_run_isolated_runs_a_function_in_a_child_that_knows_its_parent():
    """`run_isolated` passes the arguments and returns the exit status; `die_with_parent` in
    the child sees this process as its parent (it would exit 1 otherwise)."""
    from keras_resnet.subprocess_utils import run_isolated

    pids = []
    result = run_isolated(
        "keras_resnet.subprocess_utils:die_with_parent",
        [os.getpid()],
        capture_output=True,
        on_start=pids.append,
    )
    assert result.returncode == 0, result.stderr
    assert len(pids) == 1 and pids[0] != os.getpid()
    result = run_isolated("keras_resnet.subprocess_utils:die_with_parent", [1], capture_output=True)
    assert result.returncode == 1  # "parent" 1 is not its parent: it exits at once


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.slow
@needs_tf
def test_chief_and_two_workers_run_every_trial_once(tmp_path):
    """KerasTuner's own chief/worker mode over gRPC on 127.0.0.1, bounded by timeouts
    (keras-tuner 645 and 915: a worker or the chief can hang)."""
    port = _free_port()
    cmd = [
        sys.executable,
        str(SCRIPT),
        *TINY_FLAGS,
        "--max-trials",
        "2",
        "--in-process",
        "--directory",
        str(tmp_path),
        "--project-name",
        "dist",
    ]
    procs, logs = {}, {}
    try:
        for tuner_id in ("chief", "tuner0", "tuner1"):
            logs[tuner_id] = open(tmp_path / f"{tuner_id}.log", "w")
            procs[tuner_id] = subprocess.Popen(
                cmd,
                env=_env(
                    KERASTUNER_TUNER_ID=tuner_id,
                    KERASTUNER_ORACLE_IP="127.0.0.1",
                    KERASTUNER_ORACLE_PORT=str(port),
                ),
                stdout=logs[tuner_id],
                stderr=subprocess.STDOUT,
            )
            if tuner_id == "chief":  # workers start once the chief serves the oracle
                _wait_for(lambda: _port_open(port), 240, "the chief's oracle", [procs["chief"]])
        deadline = time.monotonic() + 420
        for proc in procs.values():
            proc.wait(timeout=max(1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pass
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for log in logs.values():
            log.close()
    tails = {k: (tmp_path / f"{k}.log").read_text()[-1500:] for k in procs}
    assert {k: p.returncode for k, p in procs.items()} == {"chief": 0, "tuner0": 0, "tuner1": 0}, (
        tails
    )
    events = tuning.read_events(tmp_path / "dist")
    starts = [e["trial_id"] for e in events if e["event"] == "start"]
    ends = [(e["trial_id"], e["status"]) for e in events if e["event"] == "end"]
    assert sorted(starts) == ["0", "1"]  # every trial exactly once
    assert sorted(ends) == [("0", "COMPLETED"), ("1", "COMPLETED")]
    runners = {e["tuner_id"] for e in events}
    assert runners <= {"tuner0", "tuner1"} and "chief" not in runners
    records = tuning.read_trials(tmp_path / "dist")
    assert [r.status for r in records] == ["COMPLETED"] * 2
    assert (tmp_path / "dist" / "report" / "trials.md").is_file()  # the chief reported


def definition_of(options, space, image_shape):
    """`options.definition` with its base options resolved as a search resolves them (over
    stand-in images of `image_shape`)."""
    import numpy as np

    from keras_resnet.data import Dataset

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6000, *image_shape), dtype=np.uint8)
    labels = np.arange(6000) % 10
    data = Dataset("fashion_mnist", images, labels, images[:10], labels[:10], list("0123456789"))
    resolved = plan_of(options.base_config(), data).config
    return options.definition(space, image_shape, resolved)
