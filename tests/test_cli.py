"""The keras-resnet command: subcommands, one-line errors, the entry point in pyproject."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from keras_resnet import cli

ROOT = Path(__file__).resolve().parents[1]
# The command line's dispatch, flags and errors are the same on every backend; the console
# script's subprocess starts fastest on JAX.
pytestmark = pytest.mark.one_backend("jax")


def test_entry_point_is_declared():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["keras-resnet"] == "keras_resnet.cli:main"
    # Our own distribution name: 'keras-resnet' on the index is an unrelated 2019 package.
    assert project["name"] == "keras3-resnet"


def test_every_command_has_a_module_with_main():
    import importlib

    for command in cli.COMMANDS:
        module = importlib.import_module(f"keras_resnet.cli.{command}")
        assert callable(module.main), command


def test_help_and_unknown_command(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(command in out for command in cli.COMMANDS)
    assert cli.main(["trian"]) == 2
    assert "unknown command 'trian'" in capsys.readouterr().err


def test_importing_the_cli_does_not_import_keras():
    code = "import sys, keras_resnet.cli; print('keras' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_backend_flag_is_applied_before_keras(monkeypatch):
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    cli.select_backend(["--preset", "quick", "--backend", "jax"])
    assert os.environ["KERAS_BACKEND"] == "jax"
    cli.select_backend(["--backend=torch"])
    assert os.environ["KERAS_BACKEND"] == "torch"


@pytest.mark.parametrize("script", ["train", "tune", "export", "predict", "benchmark"])
def test_scripts_are_thin_shims(script):
    text = (ROOT / "scripts" / f"{script}.py").read_text()
    assert "sys.path" not in text
    assert f'run("{script}")' in text
    assert len(text.splitlines()) < 25


def test_console_script_runs_summary():
    exe = Path(sys.executable).with_name("keras-resnet")
    if not exe.exists():
        pytest.skip("the package is not installed in this environment (pip install -e .)")
    result = subprocess.run(
        [str(exe), "summary", "resnet18", "--width", "0"], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "keras-resnet summary: error: argument --width: width must be a number > 0, "
        "received width=0.0"
    )
    assert "Traceback" not in result.stderr


def test_every_training_option_has_a_flag():
    """A TrainConfig field offered on the command line is in one of train's help groups (a
    field left out of them silently had no flag: `--cache` did, at first)."""
    import dataclasses

    from keras_resnet.cli import train as train_cli
    from keras_resnet.training import TrainConfig

    grouped = [name for names in train_cli.groups().values() for name in names]
    offered = [
        f.name for f in dataclasses.fields(TrainConfig) if f.metadata.get("cli") is not False
    ]
    assert sorted(set(offered) - set(grouped)) == []
    assert len(grouped) == len(set(grouped))
    parser = train_cli.make_parser()
    flags = {a for action in parser._actions for a in action.option_strings}
    assert {"--cache", "--ema", "--mixup", "--cutmix"} <= flags
