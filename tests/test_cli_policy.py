"""One policy for every `keras-resnet` command: --help and --version without importing a
framework, flags generated from option dataclasses (--backend on each), and one mapping from an
exception to the exit status and its one stderr line."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import keras_resnet
from keras_resnet import cli
from keras_resnet.cli import options as cli_options
from keras_resnet.data import DataNotFoundError, FolderError
from keras_resnet.training import TrainingDiverged
from keras_resnet.utils import OptionError

ROOT = Path(__file__).resolve().parents[1]
FRAMEWORKS = ("keras", "tensorflow", "jax", "torch")
# Runs `keras-resnet ARGV...` in a fresh interpreter, then reports on stderr's last line the
# exit status and the frameworks the command imported.
RUN_CLI = f"""
import json, sys
from keras_resnet.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exit:
    code = exit.code
loaded = sorted(name for name in {FRAMEWORKS!r} if name in sys.modules)
sys.stderr.write(json.dumps({{"code": code, "loaded": loaded}}) + "\\n")
"""


def run_cli(*argv: str) -> tuple[dict, str]:
    """({'code', 'loaded'}, stdout) of `keras-resnet ARGV` in a subprocess of this checkout."""
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    result = subprocess.run(
        [sys.executable, "-c", RUN_CLI, *argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stderr.strip().splitlines()[-1]), result.stdout


def command_module(command: str):
    import importlib

    return importlib.import_module(f"keras_resnet.cli.{command}")


def make_parser(command: str):
    return command_module(command).make_parser(f"keras-resnet {command}")


@pytest.mark.one_backend("tensorflow")
@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_help_imports_no_framework(command):
    report, out = run_cli(command, "--help")
    assert report == {"code": 0, "loaded": []}
    assert out.startswith(f"usage: keras-resnet {command} ")
    assert "--backend {tensorflow,jax,torch}" in out


@pytest.mark.one_backend("tensorflow")
@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version(flag):
    report, out = run_cli(flag)
    assert report == {"code": 0, "loaded": []}
    assert out == f"keras-resnet {keras_resnet.__version__}\n"


@pytest.mark.one_backend("tensorflow")
@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_every_command_takes_backend_from_one_list(command):
    (action,) = [a for a in make_parser(command)._actions if a.dest == "backend"]
    assert action.option_strings == ["--backend"]
    assert tuple(action.choices) == cli.BACKENDS


@pytest.mark.one_backend("tensorflow")
def test_export_formats_have_one_source():
    from keras_resnet.cli import export as export_cli
    from keras_resnet.serving import export as serving_export
    from keras_resnet.serving import formats

    assert export_cli.FORMATS is serving_export.FORMATS is formats.FORMATS
    (action,) = [a for a in make_parser("export")._actions if a.dest == "format"]
    assert tuple(action.choices) == (
        "saved_model",
        "onnx",
        "keras",
        "litert",
        "tf_saved_model",
        "savedmodel",
        "tflite",
    )
    # Every alias the exporter resolves is accepted on the command line.
    for alias in formats.FORMAT_ALIASES:
        assert export_cli.ExportOptions(source="run", format=alias).format == alias
        assert serving_export.resolve_format(alias) in formats.FORMATS


@pytest.mark.one_backend("tensorflow")
@pytest.mark.parametrize(
    "command, argv, line",
    [
        (
            "train",
            ["--batch-size", "0"],
            "argument --batch-size: batch_size must be an integer >= 1, received batch_size=0",
        ),
        (
            "tune",
            ["--max-trials", "0"],
            "argument --max-trials: max_trials must be an integer >= 1, received max_trials=0",
        ),
        (
            "export",
            ["run", "--format", "nope"],
            "argument --format: invalid choice: 'nope' (choose from 'saved_model', 'onnx', "
            "'keras', 'litert', 'tf_saved_model', 'savedmodel', 'tflite')",
        ),
        (
            "export",
            ["run", "--version", "0"],
            "argument --version: version must be an integer >= 1, received version=0",
        ),
        (
            "predict",
            ["model.keras", "a.png", "--top-k", "0"],
            "argument --top-k: top_k must be an integer >= 1, received top_k=0",
        ),
        (
            "predict",
            ["model.keras"],
            "argument --dataset: give image files or --dataset, not both or neither, received "
            "0 image(s) and --dataset=None",
        ),
        (
            "benchmark",
            ["--batch-size", "0"],
            "argument --batch-size: batch_size must be an integer >= 1, received batch_size=0",
        ),
    ],
    ids=[
        "train-batch-size",
        "tune-max-trials",
        "export-format",
        "export-version",
        "predict-top-k",
        "predict-no-images",
        "benchmark-batch-size",
    ],
)
def test_bad_option_exits_2_in_one_line_naming_the_flag(command, argv, line, tmp_path, capsys):
    # --directory: a tune that went further would write its search there.
    extra = ["--directory", os.fspath(tmp_path / "search")] if command == "tune" else []
    with pytest.raises(SystemExit) as info:
        command_module(command).main([*argv, *extra])
    assert info.value.code == 2
    assert capsys.readouterr().err == f"keras-resnet {command}: error: {line}\n"
    assert list(tmp_path.iterdir()) == []


# (exception, exit status, the stderr line after 'PROG: error: ')
EXIT_CASES = [
    (
        OptionError("batch_size", "batch_size must be an integer >= 1, received batch_size=0"),
        2,
        "argument --batch-size: batch_size must be an integer >= 1, received batch_size=0",
    ),
    (ValueError("model file not found\nsecond line"), 2, "model file not found"),
    (FolderError("dataset must be a folder"), 2, "dataset must be a folder"),
    (DataNotFoundError("no fashion_mnist files"), 2, "no fashion_mnist files"),
    (
        FileNotFoundError(2, "No such file or directory", "config.json"),
        2,
        "[Errno 2] No such file or directory: 'config.json'",
    ),
    (
        TrainingDiverged("loss became NaN/Inf in epoch 2"),
        1,
        "TrainingDiverged: loss became NaN/Inf in epoch 2",
    ),
    (
        PermissionError(13, "Permission denied", "runs"),
        1,
        "PermissionError: [Errno 13] Permission denied: 'runs'",
    ),
    (OSError(28, "No space left on device"), 1, "OSError: [Errno 28] No space left on device"),
    (RuntimeError("out of memory\nallocating"), 1, "RuntimeError: out of memory"),
]


@pytest.mark.one_backend("tensorflow")
@pytest.mark.parametrize(
    "error, status, line", [pytest.param(*case, id=type(case[0]).__name__) for case in EXIT_CASES]
)
def test_exit_status_maps_each_exception_class(error, status, line):
    assert cli_options.exit_status(error) == (status, line)


@pytest.mark.one_backend("tensorflow")
def test_exit_status_names_the_argument_as_the_parser_does():
    parser = make_parser("export")
    assert cli_options.exit_status(OptionError("source", "no model.keras"), parser) == (
        2,
        "argument source: no model.keras",
    )
    assert cli_options.exit_status(OptionError("class_names", "cannot read 'x'"), parser) == (
        2,
        "argument --class-names: cannot read 'x'",
    )
    # A --x/--no-x flag by its first name, as argparse's own errors call it.
    error = OptionError("inference", "nothing to measure")
    assert cli_options.exit_status(error, make_parser("benchmark")) == (
        2,
        "argument --inference: nothing to measure",
    )


@pytest.mark.one_backend("tensorflow")
@pytest.mark.parametrize("command", ["train", "tune"])
def test_a_diverged_run_exits_1(command, tmp_path, capsys, monkeypatch):
    """The same failure gives the same status and line from both commands."""
    from keras_resnet import training, tuning

    def diverge(*args, **kwargs):
        raise TrainingDiverged("loss became NaN/Inf in epoch 2")

    module = command_module(command)
    # Wherever the command finds it (its module, if it imported it at the top), nothing runs.
    for owner, name in ((training, "plan_run"), (tuning, "run_search")):
        monkeypatch.setattr(owner, name, diverge)
        monkeypatch.setattr(module, name, diverge, raising=False)
    folder = "--output-dir" if command == "train" else "--directory"
    with pytest.raises(SystemExit) as info:
        module.main([folder, os.fspath(tmp_path / "out")])
    assert info.value.code == 1
    assert capsys.readouterr().err == (
        f"keras-resnet {command}: error: TrainingDiverged: loss became NaN/Inf in epoch 2\n"
    )
