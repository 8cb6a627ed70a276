"""The benchmarks: `keras-resnet benchmark` (the package's small command) and the harness of the
repository, `benchmarks/` (run from the repository root, which `python -m pytest` puts on the
path). Their figures are sane: positive, finite, consistent; the ratios right.

No timing assertions: the figures depend on the machine. Tiny models (width 0.25, 32 px), CPU.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import json
import math
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import setuptools

import keras_resnet
from benchmarks import keras_paths, peers, report, suite, timing
from benchmarks import run as harness
from benchmarks.suite import SuiteOptions, parse_model_spec, run_suite
from keras_resnet import count_flops, count_params, get_model
from keras_resnet.cli import benchmark as cli_benchmark
from keras_resnet.training.devices import device_description
from keras_resnet.utils import OptionError

ROOT = Path(__file__).resolve().parent.parent
TINY = [
    "--models",
    "resnet18",
    "--width",
    "0.25",
    "--stem",
    "cifar",
    "--image-size",
    "32",
    "--batch-size",
    "4",
    "--num-classes",
    "10",
    "--steps",
    "2",
    "--warmup",
    "1",
    "--precision",
    "float32",
]
# The small command's tiny model: the same network, one model.
SMALL = ["--model", "resnet18", *TINY[2:]]


@pytest.fixture(scope="module")
def tiny_model():
    return get_model("resnet18", width=0.25, stem="cifar", input_shape=(32, 32, 3), num_classes=10)


def _result(
    name, img_per_s, *, task="train", data="synthetic", path="compiled", batch=8, shape=(32, 32, 3)
):
    stats = timing.summarize([batch / img_per_s], 1, batch)
    return timing.Result(
        name=name,
        framework="x",
        task=task,
        path=path,
        data=data,
        precision="float32",
        batch_size=batch,
        input_shape=shape,
        **stats,
    )


def _check_sane(result: timing.Result):
    assert result.img_per_s > 0 and math.isfinite(result.img_per_s)
    assert result.step_ms > 0 and math.isfinite(result.step_ms)
    # img/s and the step time are one figure seen two ways.
    assert result.img_per_s * result.step_ms / 1e3 == pytest.approx(result.batch_size, rel=1e-9)
    low, high = result.step_ms_spread
    assert low <= result.step_ms <= high


# --- keras-resnet benchmark: the package's small command -------------------------------------


@pytest.mark.parametrize("training", ["step", "fit"])
def test_command_times_a_tiny_model_and_writes_json(training, tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = [*SMALL, "--batch-size", "2", "--training", training, "--json", str(out)]
    if training == "fit":
        argv.append("--no-inference")
    assert cli_benchmark.main(argv) == 0
    stdout = capsys.readouterr().out
    record = json.loads(out.read_text())
    model = get_model("resnet18", width=0.25, stem="cifar", input_shape=(32, 32, 3), num_classes=10)
    assert record["model"]["name"] == "resnet18"
    assert record["model"]["params"] == count_params(model)
    assert record["model"]["flops_per_image"] == count_flops(model)
    assert record["info"]["backend"] == keras.backend.backend()
    assert record["info"]["device"] == device_description()
    assert record["options"]["training"] == training and record["options"]["batch_size"] == 2
    assert record["argv"] == argv
    expected = {
        "step": [("train", "train_on_batch"), ("infer", "predict_on_batch")],
        "fit": [("train", "fit")],
    }[training]
    assert [(r["task"], r["path"]) for r in record["results"]] == expected
    for r in record["results"]:
        assert r["img_per_s"] > 0 and math.isfinite(r["img_per_s"])
        assert r["img_per_s"] * r["step_ms"] / 1e3 == pytest.approx(2, rel=1e-9)
        assert r["step_ms_spread"][0] <= r["step_ms"] <= r["step_ms_spread"][1]
        assert r["timed_steps"] == 2 and r["batch_size"] == 2
        assert r["input_shape"] == [32, 32, 3] and r["precision"] == "float32"
        assert f"{r['task']:<6} {r['path']:<17} float32" in stdout
    # Written whole through a temporary file in the same folder: nothing else is left there.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.json"]


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--batch-size", "0"],
            "argument --batch-size: batch_size must be an integer >= 1, received batch_size=0",
        ),
        (["--steps", "two"], "argument --steps: invalid int value: 'two'"),
        (["--model", "resnet19"], "argument --model: model must be one of"),
        (["--width", "0"], "argument --width: width must be a number > 0, received width=0.0"),
        (["--precision", "float16"], "argument --precision: invalid choice: 'float16'"),
        (
            ["--training", "none", "--no-inference"],
            "argument --inference: nothing to measure: --training none with --no-inference",
        ),
        (
            ["--models", "resnet50", "--peers", "none"],
            "unrecognized arguments: --models resnet50 --peers none (the full harness's flags",
        ),
    ],
)
@pytest.mark.one_backend("tensorflow")
def test_command_bad_option_exits_2_in_one_line(args, message, capsys, monkeypatch):
    measured = []
    monkeypatch.setattr(cli_benchmark, "measure", lambda *a: measured.append(a))
    with pytest.raises(SystemExit) as exit_info:
        cli_benchmark.main([*SMALL, *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("keras-resnet benchmark: error: ") and message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert measured == []


@pytest.mark.one_backend("tensorflow")
def test_command_failure_while_measuring_exits_1(tmp_path, capsys, monkeypatch):
    out = tmp_path / "bench.json"
    out.write_text('{"previous": true}')

    def out_of_memory(config):
        raise RuntimeError("out of memory\nallocating 3.2 GiB")

    monkeypatch.setattr(keras_resnet, "build_model", out_of_memory)
    with pytest.raises(SystemExit) as exit_info:
        cli_benchmark.main([*SMALL, "--json", str(out)])
    assert exit_info.value.code == 1
    assert capsys.readouterr().err == (
        "keras-resnet benchmark: error: RuntimeError: out of memory\n"
    )
    assert out.read_text() == '{"previous": true}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.json"]


@pytest.mark.one_backend("tensorflow")
def test_command_refuses_an_unwritable_json_before_measuring(tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "f.txt"
    blocker.write_text("not a folder")
    measured = []
    monkeypatch.setattr(cli_benchmark, "measure", lambda *a: measured.append(a))
    with pytest.raises(SystemExit) as exit_info:
        cli_benchmark.main([*SMALL, "--json", str(blocker / "out.json")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("keras-resnet benchmark: error: argument --json: cannot write there")
    assert len(err.splitlines()) == 1 and measured == []


@pytest.mark.one_backend("tensorflow")
def test_suite_flag_runs_the_harness_of_the_checkout(monkeypatch):
    ran = []

    def fake_run(command):
        ran.append(command)
        return subprocess.CompletedProcess(command, 3)

    monkeypatch.setattr(cli_benchmark.subprocess, "run", fake_run)
    monkeypatch.chdir(ROOT / "docs")  # any folder of the checkout
    assert cli_benchmark.main(["--models", "resnet50", "--suite", "--peers", "none"]) == 3
    assert ran == [
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--models", "resnet50"]
        + ["--peers", "none"]
    ]


@pytest.mark.one_backend("tensorflow")
def test_suite_flag_outside_a_checkout_points_to_the_harness(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli_benchmark.main(["--suite", "--models", "resnet50"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("keras-resnet benchmark: error: argument --suite: ")
    assert "python benchmarks/run.py" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
@pytest.mark.one_backend("jax")
def test_suite_flag_end_to_end(tmp_path):
    out = tmp_path / "suite.json"
    proc = subprocess.run(
        [sys.executable, "-m", "keras_resnet", "benchmark", "--suite", *TINY]
        + ["--peers", "none", "--no-inference", "--json", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (result,) = json.loads(out.read_text())["results"]
    assert (result["name"], result["task"], result["path"]) == ("resnet18", "train", "compiled")


# --- the harness, benchmarks/ ------------------------------------------------------------------


@pytest.mark.one_backend("tensorflow")
def test_nothing_in_the_package_imports_the_harness():
    imported = set()
    for path in (ROOT / "keras_resnet").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {(path.name, alias.name) for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add((path.name, node.module))
    assert [i for i in imported if i[1].split(".")[0] in ("benchmarks", "experiments")] == []
    assert [i for i in imported if i[1].startswith("keras_resnet.benchmark")] == []


@pytest.mark.one_backend("tensorflow")
def test_the_wheel_leaves_the_harness_out():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    settings = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = setuptools.find_packages(str(ROOT), **settings["packages"]["find"])
    assert "keras_resnet" in packages and "keras_resnet.cli" in packages
    assert [p for p in packages if not p.startswith("keras_resnet")] == []
    assert "keras_resnet.benchmark" not in packages


@pytest.mark.one_backend("jax")
def test_harness_imports_without_tensorflow():
    # The GPU machine has no TensorFlow: no module of the harness may import it at its top.
    code = (
        "import sys; sys.modules['tensorflow'] = None\n"
        "from benchmarks import jax_trainer, keras_paths, peers, report, run, suite, timing\n"
        "from benchmarks import variants\n"
        "run.make_parser()\n"
        "print(timing.device_info()['device'])\n"
    )
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1].startswith("cpu (")


def test_device_record_comes_from_the_package_probe():
    info = timing.device_info()
    assert info["backend"] == keras.backend.backend()
    assert info["device"] == device_description()
    assert info["accelerator"] is None and info["device_count"] == 1  # the CPU of the tests
    assert timing.peak_flops_for(info["accelerator"]) is None


def _documented_commands(path: Path) -> list[tuple[str, list[str]]]:
    """(script, arguments) of each benchmark command in a doc or a shell script: direct commands
    (continuation lines joined), `B="... run.py ARGS"` definitions, and `$B ARGS` lines after
    one. Shell plumbing (`2>&1`, pipes) is cut; placeholder commands ('...') are left out."""
    pattern = re.compile(r"(benchmarks/run\.py|scripts/benchmark\.py|keras-resnet benchmark)(.*)")
    commands, defined = [], None
    for line in path.read_text().replace("\\\n", " ").splitlines():
        match = pattern.search(line)
        if match:
            script, rest = match.groups()
            rest = re.split(r"`| 2>&1| \|| >", rest)[0]
            if line.lstrip().startswith('B="'):
                rest = rest.rstrip().rstrip('"')
                defined = (script, shlex.split(rest))
            commands.append((script, shlex.split(rest)))
        elif defined and line.strip().startswith("$B "):
            commands.append((defined[0], defined[1] + shlex.split(line.strip()[3:])))
    return [(script, args) for script, args in commands if "..." not in args]


@pytest.mark.one_backend("tensorflow")
def test_every_documented_command_parses():
    paths = [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "tools/gpu").glob("*.sh")]
    commands = [(path.name, *c) for path in paths for c in _documented_commands(path)]
    assert len([c for c in commands if c[1] == "benchmarks/run.py"]) >= 15
    for name, script, args in commands:
        try:
            if script == "benchmarks/run.py" or "--suite" in args:
                options = harness.options_from_args(
                    harness.make_parser().parse_args([a for a in args if a != "--suite"])
                )
                suite.validate(options)
            else:
                parsed, unknown = cli_benchmark.make_parser().parse_known_args(args)
                assert unknown == [], unknown
                cli_benchmark.config_from_args(parsed)
        except (SystemExit, ValueError, AssertionError) as error:
            pytest.fail(f"{name}: {script} {shlex.join(args)}: {error!r}")


@pytest.mark.one_backend("jax")
def test_summarize_median_and_spread():
    stats = timing.summarize([0.4, 0.1, 0.2], steps_per_window=2, batch_size=10)
    assert stats["step_ms"] == pytest.approx(100.0)  # median 0.2 s over 2 steps
    assert stats["img_per_s"] == pytest.approx(100.0)
    assert stats["step_ms_spread"] == pytest.approx((50.0, 200.0))
    assert stats["timed_steps"] == 6
    with pytest.raises(ValueError, match="times must not be empty"):
        timing.summarize([], 1, 1)


@pytest.mark.one_backend("jax")
def test_mfu_counts_training_as_three_forward_passes():
    assert timing.mfu(1e9, 1000.0, "train", 1e13) == pytest.approx(0.3)
    assert timing.mfu(1e9, 1000.0, "infer", 1e13) == pytest.approx(0.1)
    assert timing.mfu(1e9, 1000.0, "train", 1e13, devices=2) == pytest.approx(0.15)
    assert timing.mfu(None, 1000.0, "train", 1e13) is None
    assert timing.mfu(1e9, 1000.0, "train", None) is None
    assert timing.peak_flops_for("NVIDIA H100 80GB HBM3") == 989e12
    assert timing.peak_flops_for("cpu") is None


@pytest.mark.one_backend("jax")
def test_time_windows_warms_up_then_times_each_window():
    calls, synced = [], []
    times = timing.time_windows(
        lambda: calls.append(1) or len(calls), synced.append, windows=3, warmup=2
    )
    assert len(calls) == 5 and synced == [1, 2, 3, 4, 5]
    assert len(times) == 3 and all(t >= 0 for t in times)


@pytest.mark.one_backend("jax")
def test_ratios_pair_same_architecture_batch_and_size():
    ours = _result("resnet50", 300.0)
    ours_real = _result("resnet50", 270.0, data="real:fashion_mnist")
    other_depth = _result("resnet18", 900.0)
    peer = _result("torchvision.resnet50", 200.0, path="torch.compile", shape=(3, 32, 32))
    peer_other_batch = _result("keras.applications.ResNet50", 100.0, batch=16)
    rows = report.ratios([ours, ours_real, other_depth, peer, peer_other_batch])
    by_pair = {
        (r["ours"].split(" ")[0], r["peer"].split(" ")[0], r["ours"].split(" ")[3]): r["ratio"]
        for r in rows
    }
    assert by_pair == {
        ("resnet50", "torchvision.resnet50", "synthetic"): pytest.approx(1.5),
        ("resnet50", "resnet50", "real:fashion_mnist"): pytest.approx(0.9),
    }


def test_train_and_infer_figures_are_sane(tiny_model):
    train = keras_paths.bench_keras_train(
        tiny_model,
        name="resnet18",
        batch_size=4,
        steps=2,
        warmup=1,
        precision="float32",
        peak_flops=1e12,
    )
    _check_sane(train)
    assert train.task == "train" and train.data == "synthetic" and train.timed_steps == 2
    assert train.flops_per_image == count_flops(tiny_model)
    assert train.mfu == pytest.approx(3 * train.flops_per_image * train.img_per_s / 1e12)
    infer = keras_paths.bench_keras_infer(
        tiny_model, name="resnet18", batch_size=4, steps=2, warmup=1, precision="float32"
    )
    _check_sane(infer)
    assert infer.task == "infer" and infer.mfu is None  # no peak given
    if keras.backend.backend() == "jax":
        assert train.path == "compiled" and train.peak_memory_bytes > 0


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="the compiled step is JAX's")
def test_compiled_step_trains_with_steps_per_execution_and_real_data(tiny_model):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, 64).astype(np.int32)
    before = [np.array(v) for v in tiny_model.trainable_variables]
    result = keras_paths.bench_keras_train(
        tiny_model,
        name="resnet18",
        batch_size=8,
        steps=4,
        warmup=1,
        precision="float32",
        steps_per_execution=2,
        real=(images, labels),
        dataset="random",
    )
    _check_sane(result)
    assert result.data == "real:random" and result.timed_steps == 4
    assert "steps_per_execution=2" in result.notes
    after = [np.array(v) for v in tiny_model.trainable_variables]
    # The trained state was written back into the model: the weights moved.
    assert any(not np.array_equal(a, b) for a, b in zip(before, after, strict=True))


def test_fit_path_is_sane(tiny_model):
    result = keras_paths.bench_keras_fit(
        tiny_model, name="resnet18", batch_size=4, steps=2, precision="float32"
    )
    _check_sane(result)
    assert result.path == "fit" and result.timed_steps == 6  # 3 timed epochs of 2 steps


def test_interleaved_inference_measures_each_model(tiny_model):
    other = get_model(
        "resnet18", width=0.25, stem="cifar", input_shape=(32, 32, 3), num_classes=10, name="other"
    )
    results = keras_paths.interleaved_inference(
        {"a": tiny_model, "b": other}, batch_size=2, rounds=2, steps=2, warmup=1
    )
    assert [r.name for r in results] == ["a", "b"]
    for r in results:
        _check_sane(r)
        assert r.timed_steps == 4


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is None, reason="no torchvision")
@pytest.mark.one_backend("torch")
def test_torchvision_peer_is_sane():
    result = peers.bench_torchvision(
        "resnet18",
        batch_size=2,
        image_size=(32, 32),
        steps=2,
        warmup=1,
        compile=False,
        precision="float32",
        num_classes=10,
        flops_per_image=10**6,
        peak_flops=1e12,
    )
    _check_sane(result)
    assert result.framework == "torch" and result.path == "eager"
    assert result.mfu == pytest.approx(3e6 * result.img_per_s / 1e12)


@pytest.mark.slow
def test_pipeline_runs_through_the_training_module(tmp_path):
    from keras_resnet import data as data_lib

    rng = np.random.default_rng(0)
    dataset = data_lib.Dataset(
        "random",
        rng.integers(0, 256, (96, 28, 28, 1), dtype=np.uint8),
        rng.integers(0, 10, 96),
        rng.integers(0, 256, (16, 28, 28, 1), dtype=np.uint8),
        rng.integers(0, 10, 16),
        [str(i) for i in range(10)],
    )
    result = keras_paths.bench_pipeline(
        "resnet18",
        dataset,
        batch_size=16,
        epochs=2,
        precision="float32",
        output_dir=str(tmp_path / "run"),
        overrides={"width": 0.25, "stem": "cifar"},
    )
    assert result.path == "pipeline" and result.data == "real:random"
    assert result.img_per_s > 0 and math.isfinite(result.img_per_s)
    assert result.img_per_s * result.step_ms / 1e3 == pytest.approx(16)
    # The label names the layers the pipeline uses (it once said RandomTranslation).
    assert "RandomPadCrop, RandomFlip, RandomErasing" in result.notes[0]


TINY_OPTIONS = dict(
    models=("resnet18",),
    image_size=32,
    batch_size=4,
    num_classes=10,
    steps=2,
    warmup=1,
    precision="float32",
    peers=(),
    model_options={"width": 0.25, "stem": "cifar"},
)


def test_harness_prints_table_and_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert harness.main([*TINY, "--peers", "none", "--json", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "img/s" in stdout and "resnet18" in stdout
    record = json.loads(out.read_text())
    assert record["info"]["backend"] == keras.backend.backend()
    assert record["info"]["device"] == device_description()
    assert [(r["task"], r["name"]) for r in record["results"]] == [
        ("train", "resnet18"),
        ("infer", "resnet18"),
    ]
    for r in record["results"]:
        assert r["img_per_s"] > 0 and math.isfinite(r["img_per_s"])
        assert r["batch_size"] == 4 and r["input_shape"] == [32, 32, 3]
    assert record["ratios"] == []  # no peers
    # Written whole through a temporary file in the same folder: nothing else is left there.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.json"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--batch-size", "0"], "batch_size must be an integer >= 1, received batch_size=0"),
        (["--width", "0"], "argument --width: width must be a number > 0, received width=0.0"),
        (["--data", "synthetic", "--paths", "pipeline"], "the 'pipeline' path needs real data"),
        (["--peers", "mxnet"], "argument --peers: 'mxnet' is not one of"),
        (["--variants", "fused"], "argument --variants: 'fused' is not one of keras-bn"),
        (["--data", "nowhere"], "argument --data: data must be one of"),
        (["--models", "resnet18:widht=2"], "unknown model option 'widht' in 'resnet18:widht=2'"),
        (["--models", "resnet18:width=wide"], "width must be float, received width='wide'"),
        (["--data", "folder:/nonexistent"], "dataset folder not found"),
    ],
)
@pytest.mark.one_backend("jax")
def test_harness_errors_are_one_line(args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        harness.main([*TINY, "--peers", "none", *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("benchmarks/run.py: error: ") and message in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.one_backend("tensorflow")
def test_harness_starts_as_a_script_on_tensorflow_with_torchvision_installed(tmp_path):
    # torchvision imported after TensorFlow segfaults: the command must import it first. Run as
    # `python benchmarks/run.py` from another folder: it finds `benchmarks` by its own path.
    env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "--models" in proc.stdout and "--width" in proc.stdout and "--peers" in proc.stdout


@pytest.mark.one_backend("jax")
def test_folder_data_without_the_folder_pipeline_is_one_line(monkeypatch, capsys):
    monkeypatch.setattr(suite, "FOLDER_SOURCE", ("keras_resnet.data.absent", "load"))
    with pytest.raises(SystemExit) as exit_info:
        harness.main([*TINY, "--peers", "none", "--data", "folder:/data/images"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "benchmarks/run.py: error: argument --data: --data folder:PATH is not available: "
        "this keras_resnet has no keras_resnet.data.absent.load (the image-folder pipeline)"
    )


@pytest.mark.one_backend("torch")
def test_folder_data_is_measured_beside_synthetic(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in ("cat", "dog"):
        (tmp_path / label).mkdir()
        for i in range(4):
            pixels = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / label / f"{i}.png")
    options = SuiteOptions(
        **{**TINY_OPTIONS, "data": f"folder:{tmp_path}", "inference": False, "num_classes": 2}
    )
    results, info, ratio_rows = run_suite(options, on_result=lambda r: None)
    assert [r.data for r in results] == ["synthetic", f"real:{tmp_path.name}"]
    assert info["dataset"]["train_images"] == 8
    assert results[1].input_shape == (32, 32, 3)
    assert len(ratio_rows) == 1  # real over synthetic


@pytest.mark.one_backend("jax")
def test_unknown_model_option_lists_the_known_ones():
    with pytest.raises(OptionError) as info:
        parse_model_spec("resnet50:fused=1")
    text = str(info.value)
    assert "unknown model option 'fused'" in text and "stride_in" in text and "width" in text
    assert len(text.splitlines()) == 1


@pytest.mark.one_backend("jax")
def test_model_spec_values_take_the_field_types():
    spec = parse_model_spec("resnet50:stride_in=1x1,width=0.5,groups=2,zero_init_residual=true")
    assert spec.name == "resnet50"
    assert spec.label == "resnet50[stride_in=1x1,width=0.5,groups=2,zero_init_residual=true]"
    assert spec.overrides == {
        "stride_in": "1x1",
        "width": 0.5,
        "groups": 2,
        "zero_init_residual": True,
    }
    assert type(spec.overrides["width"]) is float and type(spec.overrides["groups"]) is int
    assert parse_model_spec("resnet18:expansion=none").overrides == {"expansion": None}


@pytest.mark.one_backend("jax")
def test_unwritable_json_is_refused_before_anything_runs(tmp_path, capsys, monkeypatch):
    # Tests run as root: only a path under a regular file is unwritable for certain.
    blocker = tmp_path / "f.txt"
    blocker.write_text("not a folder")
    ran = []
    monkeypatch.setattr(suite, "run_suite", lambda *a, **k: ran.append(1))
    with pytest.raises(SystemExit) as exit_info:
        harness.main([*TINY, "--peers", "none", "--json", str(blocker / "out.json")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("benchmarks/run.py: error: argument --json: cannot write there")
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert ran == [] and blocker.read_text() == "not a folder"


@pytest.mark.one_backend("jax")
def test_json_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    out = tmp_path / "bench.json"
    out.write_text('{"previous": true}')

    def broken_dumps(*args, **kwargs):
        raise RuntimeError("disk full")

    result = timing.Result(
        "m",
        "x",
        "train",
        "compiled",
        "synthetic",
        "float32",
        4,
        (32, 32, 3),
        1.0,
        1.0,
        (1.0, 1.0),
        1,
    )
    monkeypatch.setattr(suite, "run_suite", lambda options: ([result], {}, []))
    monkeypatch.setattr(harness.json, "dumps", broken_dumps)
    with pytest.raises(RuntimeError, match="disk full"):
        harness.main([*TINY, "--peers", "none", "--json", str(out)])
    assert out.read_text() == '{"previous": true}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.json"]


@pytest.mark.one_backend("jax")
def test_suite_options_come_from_the_command_line():
    parser = harness.make_parser()
    args = parser.parse_args(
        [
            *TINY,
            "--peers",
            "none",
            "--paths",
            "compiled,fit",
            "--no-inference",
            "--variants",
            "keras-bn,shifted-maxpool",
            "--data",
            "folder:/data/images",
        ]
    )
    options = harness.options_from_args(args)
    assert options.paths == ("compiled", "fit") and options.peers == ()
    assert options.variants == ("keras-bn", "shifted-maxpool")
    assert options.inference is False and options.folder == "/data/images"
    assert options.model_options == {"width": 0.25, "stem": "cifar"}
    assert options.models == ("resnet18",) and options.batch_size == 4
    # Untyped options keep the dataclass's defaults.
    assert options.devices == SuiteOptions().devices == 1
    help_text = parser.format_help()
    for flag in ("--block", "--width", "--expansion", "--stem", "--stride-in", "--groups"):
        assert flag in help_text


def test_suite_restores_the_dtype_policy(capsys):
    before = keras.config.dtype_policy().name
    assert before == "float32"
    options = SuiteOptions(**{**TINY_OPTIONS, "precision": "mixed_bfloat16", "paths": ()})
    results, info, ratio_rows = run_suite(options, on_result=lambda r: None)
    assert [(r.task, r.precision) for r in results] == [("infer", "mixed_bfloat16")]
    assert keras.config.dtype_policy().name == before
    # Also on error: a failure inside the suite, after the policy was set.
    bad = dataclasses.replace(options, steps=1)
    object.__setattr__(bad, "steps", 0)  # past validation, so that the measurement fails
    with pytest.raises(ValueError):
        run_suite(bad, on_result=lambda r: None)
    assert keras.config.dtype_policy().name == before


@pytest.mark.one_backend("jax")
def test_conflicting_variants_are_refused_naming_the_option():
    options = SuiteOptions(**{**TINY_OPTIONS, "variants": ("keras-bn", "bn-bf16-apply")})
    with pytest.raises(OptionError, match="exclude each other") as info:
        suite.validate(options)
    assert info.value.field == "variants"


@pytest.mark.parametrize(
    "names",
    [["keras-bn"], ["bn-bf16-apply"], ["shifted-maxpool"], ["keras-bn", "shifted-maxpool"]],
)
def test_layer_variants_compute_the_same_function(names):
    from benchmarks import variants

    model = get_model("resnet18", width=0.25, input_shape=(64, 64, 3), num_classes=10)
    variant = variants.with_variants(model, names)
    variant.set_weights(model.get_weights())
    x = np.random.default_rng(0).standard_normal((4, 64, 64, 3)).astype("float32")
    for training in (False, True):
        expected = keras.ops.convert_to_numpy(model(x, training=training))
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(variant(x, training=training)), expected, atol=1e-5
        )
    # Same moving statistics after one training call.
    for a, b in zip(model.non_trainable_weights, variant.non_trainable_weights, strict=True):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b), atol=1e-5
        )
    with pytest.raises(ValueError, match="variant must be one of"):
        variants.with_variants(model, ["fused"])
    with pytest.raises(ValueError, match="exclude each other"):
        variants.with_variants(model, ["keras-bn", "bn-bf16-apply"])


def test_suite_runs_a_variant(capsys):
    options = SuiteOptions(**{**TINY_OPTIONS, "variants": ("keras-bn",), "paths": ()})
    results, _, _ = run_suite(options, on_result=lambda r: None)
    assert [r.name for r in results] == ["resnet18+keras-bn"]


@pytest.mark.slow
@pytest.mark.skipif(keras.backend.backend() != "jax", reason="data parallelism here is JAX's")
@pytest.mark.parametrize("sync", [False, True])
def test_data_parallel_on_two_host_devices(tmp_path, sync):
    out = tmp_path / "dp.json"
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
        "KERAS_BACKEND": "jax",
    }
    args = [*TINY, "--peers", "none", "--devices", "2", "--no-inference", "--json", str(out)]
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "run.py"),
            *args,
            *(["--sync-batch-norm"] if sync else []),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (result,) = json.loads(out.read_text())["results"]
    assert result["devices"] == 2 and result["batch_size"] == 8  # 4 per device
    assert f"data parallel, {'synchronized' if sync else 'local'} batch norm" in result["notes"]
    assert result["img_per_s"] > 0 and math.isfinite(result["img_per_s"])
