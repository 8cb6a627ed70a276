"""The search space's architecture fields (deep stem, average-pool downsampling, stochastic depth,
custom blocks per stage), the best configuration as a training config file, and the report's two
Pareto panels (accuracy against parameters and against FLOPs).

Fast tests use fake trial folders; one tiny real search (in process, 1 epoch, width 0.125) is
trained again from its best_config.json by `keras-resnet train --config`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import keras_tuner as kt
import numpy as np
import pytest
from conftest import plan_of

import keras_resnet
from keras_resnet.cli import train as train_cli
from keras_resnet.cli import tune as tune_cli
from keras_resnet.training import TrainConfig
from keras_resnet.tuning import report, space, store
from keras_resnet.tuning.hypermodel import trial_train_config
from keras_resnet.tuning.search import SearchOptions, run_search
from keras_resnet.tuning.space import SearchSpace, SearchSpaceError, config_from_values

# Every new field searched at once (a 3-stage net as one of the depth choices).
NEW_FIELDS = dict(
    custom_stages=("4-4-4",),
    stems=("cifar", "deep"),
    downsamples=("conv", "avg"),
    drop_path_rate_min=0.0,
    drop_path_rate_max=0.2,
)


# ---------------------------------------------------------------------------------------------
# fields, flags, validation
# ---------------------------------------------------------------------------------------------


@pytest.mark.one_backend("jax")
def test_new_fields_are_generated_flags():
    parser = tune_cli.make_parser("tune")
    argv = [
        "--custom-stages", "4-4-4", "2-2-2-2",
        "--stems", "cifar", "deep",
        "--downsamples", "conv", "avg",
        "--drop-path-rate-min", "0",
        "--drop-path-rate-max", "0.1",
        "--width-max", "4",
    ]  # fmt: skip
    searched, _ = tune_cli.options_from_args(parser.parse_args(argv))
    assert searched.custom_stages == ("4-4-4", "2-2-2-2")
    assert (searched.stems, searched.downsamples) == (("cifar", "deep"), ("conv", "avg"))
    assert (searched.drop_path_rate_min, searched.drop_path_rate_max) == (0.0, 0.1)
    assert searched.widths() == [0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0] + [
        2.25, 2.5, 2.75, 3.0, 3.25, 3.5, 3.75, 4.0,
    ]  # fmt: skip
    text = parser.format_help()
    for name in ("custom-stages", "downsamples", "drop-path-rate-min", "drop-path-rate-max"):
        assert f"--{name}" in text
    # unsearched by default: the base model's value, and nothing new in the definition
    default = SearchSpace()
    assert default.downsamples is None and default.drop_path_rate_min is None
    assert set(default.to_dict()) & {"custom_stages", "downsamples", "drop_path_rate_min"} == set()


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(custom_stages=("4-x-4",)), "custom_stages"),
        (dict(custom_stages=("0-4",)), "custom_stages"),
        (dict(custom_stages=("4-4", "4-04")), "custom_stages"),
        (dict(downsamples=("max",)), "downsamples"),
        (dict(downsamples=()), "downsamples"),
        (dict(drop_path_rate_min=0.1), "drop_path_rate_max"),
        (dict(drop_path_rate_max=0.1), "drop_path_rate_min"),
        (dict(drop_path_rate_min=0.0, drop_path_rate_max=1.0), "drop_path_rate_max"),
        (dict(drop_path_rate_min=-0.1, drop_path_rate_max=0.1), "drop_path_rate_min"),
        (dict(drop_path_rate_min=0.2, drop_path_rate_max=0.1), "drop_path_rate_min"),
        (dict(stems=("deep", "stem")), "stems"),
        (dict(depths=()), "depths"),
    ],
)
@pytest.mark.one_backend("jax")
def test_invalid_new_fields_name_the_field(kwargs, field):
    with pytest.raises(SearchSpaceError) as info:
        SearchSpace(**kwargs)
    message = str(info.value)
    assert info.value.field == field and "\n" not in message
    assert f"received {field}=" in message


@pytest.mark.one_backend("jax")
def test_bad_flag_is_one_line_naming_it(capsys):
    with pytest.raises(SystemExit) as info:
        tune_cli.main(["--downsamples", "max"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "argument --downsamples" in err[0] and "'max'" in err[0]
    with pytest.raises(SystemExit) as info:
        tune_cli.main(["--custom-stages", "4-x", "--loader", "idx"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("keras-resnet tune: error: argument --custom-stages")


@pytest.mark.one_backend("jax")
def test_deep_stem_is_checked_against_the_image_size():
    # 28 px: the deep stem (stride 4) with 4 stages downsamples by 32; with 3 stages by 16.
    with pytest.raises(SearchSpaceError) as info:
        SearchSpace(stems=("deep",)).check_input((28, 28, 1))
    assert info.value.field == "stems" and "at least 32 px" in str(info.value)
    with pytest.raises(SearchSpaceError):  # one 4-stage choice is enough to refuse
        SearchSpace(stems=("deep",), custom_stages=("4-4-4",)).check_input((28, 28, 1))
    SearchSpace(depths=(), custom_stages=("4-4-4",), stems=("deep",)).check_input((28, 28, 1))
    SearchSpace(**NEW_FIELDS).check_input((32, 32, 3))


# ---------------------------------------------------------------------------------------------
# hyperparameters and the mapping onto ResNetConfig
# ---------------------------------------------------------------------------------------------


@pytest.mark.one_backend("jax")
def test_new_fields_are_declared_and_mapped():
    searched = SearchSpace(**NEW_FIELDS)
    hp = kt.HyperParameters()
    searched.declare(hp)
    by_name = {p.name: p for p in hp.space}
    assert set(by_name) == {
        "depth", "block", "expansion", "width", "stem", "downsample", "drop_path_rate",
        "learning_rate", "weight_decay",
    }  # fmt: skip
    assert by_name["depth"].values == ["18", "34", "4-4-4"]  # one type per Choice: strings
    assert by_name["stem"].values == ["cifar", "deep"]
    assert by_name["downsample"].values == ["conv", "avg"]
    rate = by_name["drop_path_rate"]
    assert (rate.min_value, rate.max_value, rate.sampling) == (0.0, 0.2, "linear")

    values = dict(
        depth="4-4-4", block="basic", width=2.0, stem="deep", downsample="avg",
        drop_path_rate=0.1, learning_rate=0.2, weight_decay=5e-3,
    )  # fmt: skip
    base = keras_resnet.ResNetConfig(dropout_rate=0.3, zero_init_residual=True)
    model, recipe = config_from_values(values, base)
    assert model == base.replace(
        stage_blocks=(4, 4, 4), block="basic", width=2.0, stem="deep", downsample="avg",
        drop_path_rate=0.1, name="resnet_4-4-4",
    )  # fmt: skip
    assert recipe == {"learning_rate": 0.2, "weight_decay": 5e-3}
    assert space.describe(model) == "resnet_4-4-4 basic w2 deep avg-down dp0.1"
    # a named depth as a string (custom stages given) is the same network as the integer
    model, _ = config_from_values({**values, "depth": "34", "block": "bottleneck", "expansion": 2})
    assert (model.stage_blocks, model.name, model.expansion) == ((3, 4, 6, 3), "resnet34", 2)
    # not searched: the base model's values stay
    del values["downsample"], values["drop_path_rate"]
    model, _ = config_from_values(values, base.replace(downsample="avg", drop_path_rate=0.05))
    assert (model.downsample, model.drop_path_rate) == ("avg", 0.05)


def test_a_trial_with_every_new_field_builds():
    values = dict(
        depth="1-1-1", block="bottleneck", expansion=2, width=0.125, stem="deep",
        downsample="avg", drop_path_rate=0.1, learning_rate=0.2, weight_decay=5e-3,
    )  # fmt: skip
    base = keras_resnet.ResNetConfig(num_classes=10, input_shape=(32, 32, 3))
    model, _ = config_from_values(values, base)
    network = keras_resnet.build_model(model)
    assert network.output_shape == (None, 10)
    probabilities = network.predict(np.zeros((2, 32, 32, 3), "float32"), verbose=0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# the search definition
# ---------------------------------------------------------------------------------------------


@pytest.mark.one_backend("jax")
def test_definition_round_trips_and_refuses_a_changed_space(tmp_path):
    options = SearchOptions(train=TrainConfig(batch_size=64))
    searched = SearchSpace(**NEW_FIELDS)
    definition = definition_of(options, searched, (32, 32, 3))
    stored = json.loads(json.dumps(definition))
    assert stored["space"]["custom_stages"] == ["4-4-4"]
    assert stored["space"]["downsamples"] == ["conv", "avg"]
    ranges = stored["space"]["drop_path_rate_min"], stored["space"]["drop_path_rate_max"]
    assert ranges == (0, 0.2)
    # what a trial sets is not part of the base model's definition; the rest is
    model = stored["train_config"]["model"]
    assert "downsample" not in model and "drop_path_rate" not in model and "stem" not in model
    assert model["output_stride"] == 32
    assert SearchSpace(**stored["space"]) == searched

    project = tmp_path / "search"
    store.write_definition(project, definition)
    assert store.check_definition(project, definition_of(options, searched, (32, 32, 3))) is True
    for change in (
        dict(drop_path_rate_max=0.3),
        dict(downsamples=("avg",)),
        dict(custom_stages=("3-3-3",)),
        dict(stems=("cifar",)),
    ):
        other = SearchSpace(**{**NEW_FIELDS, **change})
        with pytest.raises(store.SearchMismatchError) as info:
            store.check_definition(project, definition_of(options, other, (32, 32, 3)))
        assert "different definition" in str(info.value)
    # unsearched: the base model's values are part of the definition
    plain = definition_of(options, SearchSpace(), (28, 28, 1))["train_config"]["model"]
    assert (plain["downsample"], plain["drop_path_rate"]) == ("conv", 0.0)


# ---------------------------------------------------------------------------------------------
# the report: both Pareto fronts, best_config.json
# ---------------------------------------------------------------------------------------------


def _fake_trial(project: Path, trial_id: str, acc: float, params: int, flops: int, **values):
    values = {
        **dict(
            depth=18, block="basic", width=0.25, stem="cifar", learning_rate=0.1,
            weight_decay=5e-3,
        ),
        **values,
    }  # fmt: skip
    metrics = {
        name: {"direction": "max", "observations": [{"value": [value], "step": 0}]}
        for name, value in (
            ("val_accuracy", acc),
            ("flops", flops),
            ("params", params),
            ("seconds", 1.5),
            ("epochs", 2),
        )
    }
    folder = project / f"trial_{trial_id}"
    folder.mkdir(parents=True)
    trial = {
        "trial_id": trial_id,
        "status": "COMPLETED",
        "hyperparameters": {"values": values},
        "metrics": {"metrics": metrics},
    }
    (folder / "trial.json").write_text(json.dumps(trial))


def _gold_columns(png_path: Path) -> np.ndarray:
    """The x positions (0 to 1) of the gold star's pixels."""
    from PIL import Image

    with Image.open(png_path) as png:
        rgb = np.asarray(png.convert("RGB")).astype(int)
    gold = (abs(rgb[..., 0] - 255) < 30) & (abs(rgb[..., 1] - 215) < 30) & (rgb[..., 2] < 60)
    return np.nonzero(gold)[1] / rgb.shape[1]


def _search_folder(tmp_path: Path) -> Path:
    """A fake search: its definition (new fields searched) and 4 trials whose fronts differ:
    against FLOPs 0, 2, 3; against parameters 1, 2, 3 (trial 1 has few parameters, many FLOPs:
    a 3-stage net at full resolution)."""
    project = tmp_path / "runs" / "fake"
    definition = definition_of(
        SearchOptions(train=TrainConfig(batch_size=128, erasing=0.25)),
        SearchSpace(**NEW_FIELDS),
        (32, 32, 3),
    )
    store.write_definition(project, definition)
    _fake_trial(project, "0", 0.80, 900_000, 10_000_000)
    _fake_trial(project, "1", 0.85, 300_000, 90_000_000, depth="4-4-4", width=2.0)
    _fake_trial(project, "2", 0.90, 1_000_000, 30_000_000)
    best = dict(depth="4-4-4", width=3.0, stem="deep", downsample="avg", drop_path_rate=0.15)
    _fake_trial(project, "3", 0.95, 2_000_000, 80_000_000, learning_rate=0.3, **best)
    return project


@pytest.mark.one_backend("jax")
def test_report_has_both_pareto_fronts_and_panels(tmp_path):
    project = _search_folder(tmp_path)
    records = report.read_trials(project)
    assert [r.trial_id for r in records if r.pareto] == ["0", "2", "3"]
    assert [r.trial_id for r in records if r.pareto_params] == ["1", "2", "3"]
    assert [r.trial_id for r in report.pareto_front(records, "params")] == ["1", "2", "3"]
    summary = report.write_report(project)
    out = project / "report"
    assert sorted(p.name for p in out.iterdir()) == [
        "best_config.json", "pareto.png", "trials.csv", "trials.md",
    ]  # fmt: skip
    rows = [line for line in (out / "trials.md").read_text().splitlines() if "COMPLETED" in line]
    assert len(rows) == 4
    assert rows[0].endswith("|  | * |") and rows[1].endswith("| * |  |")
    assert "| resnet_4-4-4 basic w3 deep avg-down dp0.15 |" in rows[3]
    assert rows[3].endswith("| * | * |")
    header, *lines = (out / "trials.csv").read_text().splitlines()
    assert header.startswith("trial_id,status,val_accuracy,params,flops,seconds,epochs,pareto,")
    assert [line.split(",")[7:9] for line in lines] == [["1", "0"], ["0", "1"], ["1", "1"]] + [
        ["1", "1"]
    ]
    # the best trial (gold star) appears in the left (parameters) and right (FLOPs) panel
    columns = _gold_columns(out / "pareto.png")
    assert (columns < 0.5).sum() > 20 and (columns > 0.5).sum() > 20
    assert summary["best"]["trial_id"] == "3"
    assert summary["best_config"] == str(out / "best_config.json")


@pytest.mark.one_backend("jax")
def test_best_config_holds_the_searched_values_over_the_base(tmp_path):
    project = _search_folder(tmp_path)
    report.write_report(project)
    stored = json.loads((project / "report" / "best_config.json").read_text())
    config = TrainConfig.from_dict(stored)
    assert config.to_dict() == stored  # TrainConfig.to_dict() form
    # from the search
    assert config.model.stage_blocks == (4, 4, 4) and config.model.name == "resnet_4-4-4"
    assert (config.model.width, config.model.stem, config.model.downsample) == (3.0, "deep", "avg")
    assert config.model.drop_path_rate == 0.15
    assert (config.learning_rate, config.weight_decay) == (0.3, 5e-3)
    # from the search's base configuration
    assert (config.batch_size, config.erasing, config.label_smoothing) == (128, 0.25, 0.1)
    # the full recipe's length and outputs, which trials do not use
    defaults = TrainConfig()
    assert (config.epochs, config.warmup_epochs) == (defaults.epochs, defaults.warmup_epochs)
    assert config.tensorboard and config.track_test
    assert (config.run_name, config.output_dir) == ("tuned_fake", None)


@pytest.mark.one_backend("jax")
def test_report_only_regenerates_the_report_and_best_config(tmp_path, capsys):
    project = _search_folder(tmp_path)
    argv = ["--report-only", "--directory", str(project.parent), "--project-name", "fake"]
    assert tune_cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "best_config.json" in out and "| 3 | COMPLETED | resnet_4-4-4 basic w3 deep" in out
    first = (project / "report" / "best_config.json").read_bytes()
    (project / "report" / "best_config.json").unlink()
    assert tune_cli.main(argv) == 0
    assert (project / "report" / "best_config.json").read_bytes() == first


# ---------------------------------------------------------------------------------------------
# a real search, then its best configuration trained by `train --config`
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_search_then_train_best_config(tmp_path):
    """2 trials in process (1 epoch, width 0.125, 640 images: 512 train, 128 validation), then
    `keras-resnet train --config best_config.json --epochs 1`: the run's config.json holds the
    searched architecture and recipe."""
    from keras_resnet.data import load_dataset, subset

    data = subset(load_dataset("fashion_mnist", loader="idx"), 640, 64, seed=0)
    searched = SearchSpace(
        depths=(),
        custom_stages=("1-1-1",),
        block_kinds=("basic",),
        width_min=0.125,
        width_max=0.125,
        downsamples=("avg",),
        drop_path_rate_min=0.05,
        drop_path_rate_max=0.1,
    )
    options = SearchOptions(
        tuner="random",
        max_trials=2,
        max_epochs=1,
        validation_fraction=0.2,
        directory=str(tmp_path / "runs"),
        project_name="tiny",
        process_per_trial=False,
        train=TrainConfig(batch_size=64, verbose=0),
    )
    summary = run_search(searched, options, dataset=data)
    assert summary["completed"] == 2
    best = report.best_trial(report.read_trials(summary["project_dir"]))
    path = summary["best_config"]
    run_dir = tmp_path / "final"
    argv = ["--config", path, "--epochs", "1", "--loader", "idx", "--train-size", "640"]
    argv += ["--val-size", "128", "--test-size", "64", "--no-tensorboard", "--verbose", "0"]
    assert train_cli.main([*argv, "--output-dir", str(run_dir)]) == 0
    run = json.loads((run_dir / "config.json").read_text())
    model = run["model"]
    assert model["stage_blocks"] == [1, 1, 1] and model["name"] == "resnet_1-1-1"
    assert (model["width"], model["downsample"], model["block"]) == (0.125, "avg", "basic")
    assert model["drop_path_rate"] == pytest.approx(best.values["drop_path_rate"])
    assert 0.05 <= model["drop_path_rate"] <= 0.1
    assert run["learning_rate"] == pytest.approx(best.values["learning_rate"])
    assert run["weight_decay"] == pytest.approx(best.values["weight_decay"])
    assert (run["epochs"], run["batch_size"]) == (1, 64)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs"] == 1 and 0 <= metrics["test_accuracy"] <= 1


@pytest.mark.slow  # about 20 s on the shared 2-core CPU
def test_hyperband_trial_without_its_parent_checkpoint_trains_from_scratch(tmp_path):
    """A resumed search carries trial records, not checkpoints: a continued trial whose parent's
    weights are missing trains all its epochs from scratch (a 'no_parent' event), instead of
    failing on load_weights."""
    from keras_resnet import training
    from keras_resnet.data import load_dataset, subset
    from keras_resnet.tuning.hypermodel import ResNetHyperModel, train_one_trial

    class Recording(ResNetHyperModel):
        def fit(self, hp, model, *args, **kwargs):
            self.seen = (
                kwargs["initial_epoch"],
                kwargs["epochs"],
                hp.values["tuner/initial_epoch"],
            )
            return super().fit(hp, model, *args, **kwargs)

    data = subset(load_dataset("fashion_mnist", loader="idx"), 64, 16, seed=0)
    searched = SearchSpace(
        depths=(), custom_stages=("1-1-1",), block_kinds=("basic",), width_min=0.125,
        width_max=0.125, lr_min=0.1, lr_max=0.1, weight_decay_min=5e-3, weight_decay_max=5e-3,
    )  # fmt: skip
    hypermodel = Recording(searched, TrainConfig(batch_size=32, verbose=0), data, max_epochs=2)
    hp = kt.HyperParameters()
    searched.declare(hp)
    for name, value in (("tuner/epochs", 2), ("tuner/initial_epoch", 1), ("tuner/trial_id", "0")):
        hp.Fixed(name, value)
    y = training.one_hot(data.y_train, 10)
    payload = {
        "hp": hp.get_config(),
        "hypermodel": hypermodel,
        "args": (data.x_train, y),
        "kwargs": {"validation_data": (data.x_test, training.one_hot(data.y_test, 10)),
                   "epochs": 2, "initial_epoch": 1},
        "checkpoint": str(tmp_path / "trial_1" / "checkpoint.weights.h5"),
        "parent_checkpoint": str(tmp_path / "trial_0" / "checkpoint.weights.h5"),  # missing
        "project_dir": str(tmp_path),
        "event": {"trial_id": "1", "tuner_id": "tuner0"},
    }  # fmt: skip
    metrics = train_one_trial(payload)
    assert hypermodel.seen == (0, 2, 0) and metrics["epochs"] == 2
    assert [e["event"] for e in store.read_events(tmp_path)] == ["no_parent", "fit"]


# ---------------------------------------------------------------------------------------------
# the recipe levers: EMA decay, mixup and CutMix alphas
# ---------------------------------------------------------------------------------------------

LEVERS = dict(
    emas=(0.0, 0.999, 0.9995), mixup_min=0.0, mixup_max=0.8, cutmix_min=0.0, cutmix_max=1.0
)


@pytest.mark.one_backend("jax")
def test_recipe_levers_are_flags_declared_and_mapped():
    parser = tune_cli.make_parser("tune")
    argv = ["--emas", "0", "0.999", "0.9995", "--mixup-min", "0", "--mixup-max", "0.8"]
    argv += ["--cutmix-min", "0", "--cutmix-max", "1"]
    searched, _ = tune_cli.options_from_args(parser.parse_args(argv))
    assert searched == SearchSpace(**LEVERS)
    hp = kt.HyperParameters()
    searched.declare(hp)
    by_name = {p.name: p for p in hp.space}
    assert by_name["ema"].values == [0.0, 0.999, 0.9995] and by_name["ema"].ordered
    for name, high in (("mixup", 0.8), ("cutmix", 1.0)):
        assert (by_name[name].min_value, by_name[name].max_value) == (0.0, high)
        assert by_name[name].sampling == "linear"
    assert searched.searched_fields()[1] == (
        "learning_rate", "weight_decay", "mixup", "cutmix", "ema",
    )  # fmt: skip
    values = dict(
        depth=18, block="basic", width=0.25, stem="cifar", learning_rate=0.2,
        weight_decay=5e-3, ema=0.999, mixup=0.3, cutmix=0.6,
    )  # fmt: skip
    _, recipe = config_from_values(values)
    assert recipe == {
        "learning_rate": 0.2, "weight_decay": 5e-3, "ema": 0.999, "mixup": 0.3, "cutmix": 0.6,
    }  # fmt: skip
    config = trial_train_config(TrainConfig(), values, epochs=3)
    assert (config.ema, config.mixup, config.cutmix, config.epochs) == (0.999, 0.3, 0.6, 3)
    # unsearched: the training configuration's values, and nothing new in the definition
    assert not {"emas", "mixup_min", "cutmix_min"} & set(SearchSpace().to_dict())


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(emas=(1.0,)), "emas"),
        (dict(emas=()), "emas"),
        (dict(emas=(0.9, 0.9)), "emas"),
        (dict(emas=(-0.1, 0.9)), "emas"),
        (dict(mixup_min=0.1), "mixup_max"),
        (dict(mixup_min=-0.1, mixup_max=0.5), "mixup_min"),
        (dict(mixup_min=0.5, mixup_max=0.1), "mixup_min"),
        (dict(cutmix_max=0.5), "cutmix_min"),
        (dict(cutmix_min=0.0, cutmix_max=1.5), "cutmix_max"),
    ],
)
@pytest.mark.one_backend("jax")
def test_invalid_recipe_levers_name_the_field(kwargs, field):
    with pytest.raises(SearchSpaceError) as info:
        SearchSpace(**kwargs)
    assert info.value.field == field
    assert f"{field}=" in str(info.value)


@pytest.mark.one_backend("jax")
def test_definition_without_levers_is_the_one_stored_before_them(tmp_path):
    """A search stored before ema/mixup/cutmix existed resumes: off, they are left out."""
    definition = definition_of(SearchOptions(), SearchSpace(), (28, 28, 1))
    assert not {"ema", "mixup", "cutmix"} & set(definition["train_config"])
    searched = definition_of(SearchOptions(), SearchSpace(**LEVERS), (28, 28, 1))
    assert not {"ema", "mixup", "cutmix"} & set(searched["train_config"])
    assert searched["space"]["emas"] == [0.0, 0.999, 0.9995]
    # on in the base configuration and not searched: part of the definition
    fixed = definition_of(SearchOptions(train=TrainConfig(ema=0.999)), SearchSpace(), (28, 28, 1))
    assert fixed["train_config"]["ema"] == 0.999


@pytest.mark.one_backend("torch")
def test_best_config_with_levers_trains_them(tmp_path, tiny_idx):
    """best_config.json holds the best trial's EMA decay and alphas, and `keras-resnet train
    --config best_config.json` trains with them (1 epoch, width 0.125)."""
    project = tmp_path / "runs" / "levers"
    definition = definition_of(
        SearchOptions(train=TrainConfig(batch_size=32)), SearchSpace(**LEVERS), (28, 28, 1)
    )
    store.write_definition(project, definition)
    _fake_trial(project, "0", 0.80, 900_000, 10_000_000, ema=0.0, mixup=0.1, cutmix=0.0)
    _fake_trial(project, "1", 0.90, 900_000, 10_000_000, ema=0.9995, mixup=0.3, cutmix=0.7)
    report.write_report(project)
    path = project / "report" / "best_config.json"
    config = TrainConfig.from_dict(json.loads(path.read_text()))
    assert (config.ema, config.mixup, config.cutmix) == (0.9995, 0.3, 0.7)
    run_dir = tmp_path / "final"
    argv = ["--config", str(path), "--epochs", "1", "--loader", "idx", "--source-dir", tiny_idx]
    argv += ["--width", "0.125", "--val-size", "40", "--no-tensorboard", "--verbose", "0"]
    assert train_cli.main([*argv, "--output-dir", str(run_dir)]) == 0
    run = json.loads((run_dir / "config.json").read_text())
    assert (run["ema"], run["mixup"], run["cutmix"]) == (0.9995, 0.3, 0.7)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["train_images"] == 80 and 0 <= metrics["test_accuracy"] <= 1


@pytest.fixture(scope="module")
def tiny_idx(tmp_path_factory) -> str:
    """120 training and 40 test images of 28 px in Fashion-MNIST's IDX files."""
    from idx_files import make_idx_folder

    return str(make_idx_folder(tmp_path_factory.mktemp("idx") / "fashion-mnist"))


def test_trial_with_ema_and_mixing_validates_the_average(tiny_idx):
    """A trial (in process, 1 epoch) with EMA, mixup and CutMix: it trains on mixed batches,
    and its validation scores the averaged weights, which the model holds once `fit` ends."""
    from keras_resnet.data import load_dataset
    from keras_resnet.training import one_hot
    from keras_resnet.tuning.hypermodel import ResNetHyperModel

    data = load_dataset("fashion_mnist", source_dir=tiny_idx, loader="idx")
    x, y = data.x_train[:80], one_hot(data.y_train[:80], 10)
    x_val, y_val = data.x_train[80:], one_hot(data.y_train[80:], 10)
    searched = SearchSpace(
        depths=(18,), block_kinds=("basic",), width_min=0.125, width_max=0.125,
        emas=(0.9,), mixup_min=0.4, mixup_max=0.4, cutmix_min=1.0, cutmix_max=1.0,
    )  # fmt: skip
    base = TrainConfig(batch_size=16, verbose=0, augment=False, label_smoothing=0.0)
    hypermodel = ResNetHyperModel(
        searched, base, dataclasses.replace(data, x_train=x), max_epochs=1
    )
    hp = kt.HyperParameters()
    model = hypermodel.build(hp)
    assert model.optimizer.use_ema
    metrics = hypermodel.fit(hp, model, x, y, validation_data=(x_val, y_val), epochs=1)
    assert metrics["epochs"] == 1 and 0 <= metrics["val_accuracy"] <= 1
    loss = model.evaluate(x_val, y_val, batch_size=16, verbose=0, return_dict=True)["loss"]
    assert loss == pytest.approx(metrics["val_loss"], rel=1e-4)


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
