"""The benchmark runs, and its figures are sane: positive, finite, consistent, ratios right.

No timing assertions: the figures depend on the machine. Tiny models (width 0.25, 32 px), CPU.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_resnet import benchmark, count_flops, get_model
from keras_resnet.benchmark import SuiteOptions, parse_model_spec, run_suite
from keras_resnet.cli import benchmark as cli_benchmark
from keras_resnet.utils import OptionError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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


@pytest.fixture(scope="module")
def tiny_model():
    return get_model("resnet18", width=0.25, stem="cifar", input_shape=(32, 32, 3), num_classes=10)


def _result(
    name, img_per_s, *, task="train", data="synthetic", path="compiled", batch=8, shape=(32, 32, 3)
):
    stats = benchmark.summarize([batch / img_per_s], 1, batch)
    return benchmark.Result(
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


def _check_sane(result: benchmark.Result):
    assert result.img_per_s > 0 and math.isfinite(result.img_per_s)
    assert result.step_ms > 0 and math.isfinite(result.step_ms)
    # img/s and the step time are one figure seen two ways.
    assert result.img_per_s * result.step_ms / 1e3 == pytest.approx(result.batch_size, rel=1e-9)
    low, high = result.step_ms_spread
    assert low <= result.step_ms <= high


@pytest.mark.one_backend("jax")
def test_summarize_median_and_spread():
    stats = benchmark.summarize([0.4, 0.1, 0.2], steps_per_window=2, batch_size=10)
    assert stats["step_ms"] == pytest.approx(100.0)  # median 0.2 s over 2 steps
    assert stats["img_per_s"] == pytest.approx(100.0)
    assert stats["step_ms_spread"] == pytest.approx((50.0, 200.0))
    assert stats["timed_steps"] == 6
    with pytest.raises(ValueError, match="times must not be empty"):
        benchmark.summarize([], 1, 1)


@pytest.mark.one_backend("jax")
def test_mfu_counts_training_as_three_forward_passes():
    assert benchmark.mfu(1e9, 1000.0, "train", 1e13) == pytest.approx(0.3)
    assert benchmark.mfu(1e9, 1000.0, "infer", 1e13) == pytest.approx(0.1)
    assert benchmark.mfu(1e9, 1000.0, "train", 1e13, devices=2) == pytest.approx(0.15)
    assert benchmark.mfu(None, 1000.0, "train", 1e13) is None
    assert benchmark.mfu(1e9, 1000.0, "train", None) is None
    assert benchmark.peak_flops_for("NVIDIA H100 80GB HBM3") == 989e12
    assert benchmark.peak_flops_for("cpu") is None


@pytest.mark.one_backend("jax")
def test_time_windows_warms_up_then_times_each_window():
    calls, synced = [], []
    times = benchmark.time_windows(
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
    rows = benchmark.ratios([ours, ours_real, other_depth, peer, peer_other_batch])
    by_pair = {
        (r["ours"].split(" ")[0], r["peer"].split(" ")[0], r["ours"].split(" ")[3]): r["ratio"]
        for r in rows
    }
    assert by_pair == {
        ("resnet50", "torchvision.resnet50", "synthetic"): pytest.approx(1.5),
        ("resnet50", "resnet50", "real:fashion_mnist"): pytest.approx(0.9),
    }


def test_train_and_infer_figures_are_sane(tiny_model):
    train = benchmark.bench_keras_train(
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
    infer = benchmark.bench_keras_infer(
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
    result = benchmark.bench_keras_train(
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
    result = benchmark.bench_keras_fit(
        tiny_model, name="resnet18", batch_size=4, steps=2, precision="float32"
    )
    _check_sane(result)
    assert result.path == "fit" and result.timed_steps == 6  # 3 timed epochs of 2 steps


def test_interleaved_inference_measures_each_model(tiny_model):
    other = get_model(
        "resnet18", width=0.25, stem="cifar", input_shape=(32, 32, 3), num_classes=10, name="other"
    )
    results = benchmark.interleaved_inference(
        {"a": tiny_model, "b": other}, batch_size=2, rounds=2, steps=2, warmup=1
    )
    assert [r.name for r in results] == ["a", "b"]
    for r in results:
        _check_sane(r)
        assert r.timed_steps == 4


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is None, reason="no torchvision")
@pytest.mark.one_backend("torch")
def test_torchvision_peer_is_sane():
    result = benchmark.bench_torchvision(
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
    result = benchmark.bench_pipeline(
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


def test_script_prints_table_and_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert cli_benchmark.main([*TINY, "--peers", "none", "--json", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "img/s" in stdout and "resnet18" in stdout
    record = json.loads(out.read_text())
    assert record["info"]["backend"] == keras.backend.backend()
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
        (["--data", "nowhere"], "argument --data: data must be one of"),
        (["--models", "resnet18:widht=2"], "unknown model option 'widht' in 'resnet18:widht=2'"),
        (["--models", "resnet18:width=wide"], "width must be float, received width='wide'"),
        (["--data", "folder:/nonexistent"], "dataset folder not found"),
    ],
)
@pytest.mark.one_backend("jax")
def test_script_errors_are_one_line(args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_benchmark.main([*TINY, "--peers", "none", *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.one_backend("tensorflow")
def test_script_starts_on_tensorflow_with_torchvision_installed():
    # torchvision imported after TensorFlow segfaults: the command must import it first.
    env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "scripts", "benchmark.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "--models" in proc.stdout and "--width" in proc.stdout and "--peers" in proc.stdout


@pytest.mark.one_backend("jax")
def test_folder_data_without_the_folder_pipeline_is_one_line(monkeypatch, capsys):
    monkeypatch.setattr(benchmark.suite, "FOLDER_SOURCE", ("keras_resnet.data.absent", "load"))
    with pytest.raises(SystemExit) as exit_info:
        cli_benchmark.main([*TINY, "--peers", "none", "--data", "folder:/data/images"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "keras-resnet benchmark: error: argument --data: --data folder:PATH is not available: "
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
    monkeypatch.setattr(benchmark.suite, "run_suite", lambda *a, **k: ran.append(1))
    with pytest.raises(SystemExit) as exit_info:
        cli_benchmark.main([*TINY, "--peers", "none", "--json", str(blocker / "out.json")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("keras-resnet benchmark: error: argument --json: cannot write there")
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert ran == [] and blocker.read_text() == "not a folder"


@pytest.mark.one_backend("jax")
def test_json_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    out = tmp_path / "bench.json"
    out.write_text('{"previous": true}')

    def broken_dumps(*args, **kwargs):
        raise RuntimeError("disk full")

    result = benchmark.Result(
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
    monkeypatch.setattr(benchmark.suite, "run_suite", lambda options: ([result], {}, []))
    monkeypatch.setattr(cli_benchmark.json, "dumps", broken_dumps)
    with pytest.raises(RuntimeError, match="disk full"):
        cli_benchmark.main([*TINY, "--peers", "none", "--json", str(out)])
    assert out.read_text() == '{"previous": true}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.json"]


@pytest.mark.one_backend("jax")
def test_suite_options_come_from_the_command_line():
    parser = cli_benchmark.make_parser()
    args = parser.parse_args(
        [
            *TINY,
            "--peers",
            "none",
            "--paths",
            "compiled,fit",
            "--no-inference",
            "--data",
            "folder:/data/images",
        ]
    )
    options = cli_benchmark.options_from_args(args)
    assert options.paths == ("compiled", "fit") and options.peers == ()
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
def test_variants_need_the_checkout(monkeypatch):
    monkeypatch.setitem(sys.modules, "experiments", None)
    monkeypatch.setitem(sys.modules, "experiments.variants", None)
    options = SuiteOptions(**{**TINY_OPTIONS, "variants": ("keras-bn",)})
    with pytest.raises(OptionError, match="--variants needs experiments.variants"):
        run_suite(options, on_result=lambda r: None)


@pytest.fixture
def variants(monkeypatch):
    """experiments/variants.py of this checkout (not an installed module)."""
    monkeypatch.syspath_prepend(ROOT)
    from experiments import variants

    return variants


@pytest.mark.parametrize(
    "names",
    [["keras-bn"], ["bn-bf16-apply"], ["shifted-maxpool"], ["keras-bn", "shifted-maxpool"]],
)
def test_layer_variants_compute_the_same_function(variants, names):
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


def test_suite_runs_a_variant_from_the_checkout(variants, capsys):
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
            "-m",
            "keras_resnet",
            "benchmark",
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
