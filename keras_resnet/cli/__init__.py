"""The `keras-resnet` command: `keras-resnet {train,tune,export,predict,benchmark,summary} ...`.

Each subcommand is a module of this package with `main(argv) -> int`; `scripts/<name>.py` and
`python -m keras_resnet <name>` run the same functions. Nothing here imports Keras before the
subcommand has read `--backend`, which must be set before Keras is first imported, and no
command imports Keras (or TensorFlow, JAX, torch) to build its parser: `--help` and `--version`
answer at once. Their flags, and the exit status of every command, follow one policy
(`keras_resnet.cli.options`).
"""

from __future__ import annotations

import importlib
import logging
import os
import sys

COMMANDS = {
    "train": "train a model with model.fit and write a run folder",
    "tune": "search architectures and recipes with KerasTuner",
    "export": "export a run as SavedModel, ONNX, .keras or LiteRT",
    "predict": "classify images with a run or an export",
    "benchmark": "time a model's training and inference steps (--suite: the harness with peers)",
    "summary": "print the walkthrough table of a model",
}
BACKENDS = ("tensorflow", "jax", "torch")


def select_backend(argv: list[str]) -> None:
    """Applies `--backend NAME` (or `--backend=NAME`) to KERAS_BACKEND, before Keras is imported,
    and quiets TensorFlow's C++ log unless the user set its level (TF_CPP_MIN_LOG_LEVEL=3: its
    oneDNN and CPU-feature notices go; TensorFlow 2.21's 'Could not find cuda drivers' line and
    absl's 'All log messages before absl::InitializeLog()' come before any level is read)."""
    for i, arg in enumerate(argv):
        value = None
        if arg == "--backend" and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("--backend="):
            value = arg.split("=", 1)[1]
        if value in BACKENDS:
            os.environ["KERAS_BACKEND"] = value
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def show_progress() -> None:
    """The package's log lines (data source, weights loaded, frozen layers, ...) on stdout, one
    message a line, as a command's output; a library user configures `logging` as they wish."""
    logger = logging.getLogger("keras_resnet")
    if not any(getattr(h, "keras_resnet_cli", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler.keras_resnet_cli = True
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def run(command: str, argv: list[str] | None = None) -> int:
    """Runs subcommand `command` with `argv` (default: sys.argv[1:])."""
    argv = sys.argv[1:] if argv is None else list(argv)
    select_backend(argv)
    show_progress()
    module = importlib.import_module(f"keras_resnet.cli.{command}")
    return module.main(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in ("-V", "--version"):
        from keras_resnet import __version__  # the package's names load lazily: no Keras

        sys.stdout.write(f"keras-resnet {__version__}\n")
        return 0
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        width = max(map(len, COMMANDS))
        lines = [f"  {name:<{width}}  {text}" for name, text in COMMANDS.items()]
        usage = (
            "usage: keras-resnet COMMAND [options]   (keras-resnet COMMAND --help)\n"
            "       keras-resnet --version\n\n"
        )
        text = usage + "commands:\n" + "\n".join(lines) + "\n"
        if argv and argv[0] not in ("-h", "--help"):
            sys.stderr.write(f"keras-resnet: error: unknown command {argv[0]!r}\n{text}")
            return 2
        sys.stdout.write(text)
        return 0 if argv else 2
    return run(argv[0], argv[1:])
