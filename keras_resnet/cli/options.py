"""Command-line flags generated from dataclass fields, so that an option is declared once, and
the exit policy that every command shares.

A field's metadata gives its help text (`help`), its choices (`choices`), its `metavar`;
`cli=False` keeps it off the command line and `positional=True` makes it a positional argument.
The flag is `--` + the field's name with dashes; its type comes from the field's annotation: bool
fields become `--x/--no-x`, tuples take several values. Every flag defaults to None ("not
given"), so that `given(args, cls)` returns only what was typed and the dataclass (or a preset)
supplies the rest. Values are checked by the dataclass itself, whose `OptionError.field` names
the flag in the error message (`error_message`).

Exit status of every command (`exit_status`): 0 done; 2 a bad option or bad data (the input was
refused: `ValueError`, `OptionError`, `FileNotFoundError` such as `DataNotFoundError`); 1 the run
failed (`TrainingDiverged` and any other `RuntimeError`, any other `OSError`). Either way one
line on stderr, `PROG: error: ...`, and no traceback.

Nothing here imports Keras: `keras-resnet COMMAND --help` builds its parser from the option
dataclasses alone.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Iterable, Mapping
from typing import Any, NoReturn

from keras_resnet.cli import BACKENDS
from keras_resnet.utils import OptionError, one_line

# Exit statuses (0: done).
BAD_INPUT = 2  # a bad option or bad data: the input was refused
RUN_FAILED = 1  # the run itself failed
# What a command reports in one line; any other exception is a bug and keeps its traceback.
REPORTED = (ValueError, OSError, RuntimeError)


class OneLineParser(argparse.ArgumentParser):
    """Errors as one line on stderr (no usage block), exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def option(default, text: str, **extra):
    """A dataclass field with its flag's help `text` and `extra` metadata (`choices`,
    `metavar`, `positional`, `cli`)."""
    return dataclasses.field(default=default, metadata={"help": text, **extra})


def flag(field: str) -> str:
    return "--" + field.replace("_", "-")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


_finite_float.__name__ = "number"  # argparse says "invalid number value: 'inf'"


def _parse_type(annotation: str):
    """(type, nargs) for a field annotation written as text (`from __future__ import
    annotations`): 'int | None' -> (int, None); 'tuple[int, ...]' -> (int, '+')."""
    text = annotation.replace(" ", "")
    nargs = None
    if text.startswith("tuple["):
        nargs = "+"
        text = text[len("tuple[") :].split(",")[0].rstrip("]")
    base = text.split("|")[0]
    return {"int": int, "float": _finite_float, "str": str, "bool": bool}.get(base, str), nargs


def add_arguments(
    parser,  # an ArgumentParser or one of its argument groups
    cls: type,
    *,
    only: Iterable[str] | None = None,
    exclude: Iterable[str] = (),
    help_overrides: Mapping[str, str] | None = None,
) -> list[str]:
    """Adds one flag per field of dataclass `cls` (those with `cli` metadata not False, limited
    to `only` and minus `exclude`), or a positional argument for a field whose metadata has
    `positional=True`. Returns the field names added."""
    help_overrides = dict(help_overrides or {})
    names = []
    hints = {f.name: f.type for f in dataclasses.fields(cls)}
    for field in dataclasses.fields(cls):
        meta = field.metadata
        if only is not None and field.name not in only:
            continue
        if field.name in exclude or (only is None and meta.get("cli") is False):
            continue
        help_text = help_overrides.get(field.name, meta.get("help"))
        annotation = (
            hints[field.name] if isinstance(hints[field.name], str) else str(hints[field.name])
        )
        kind, nargs = _parse_type(annotation)
        if meta.get("positional"):
            parser.add_argument(
                field.name,
                type=kind,
                nargs="*" if nargs else None,
                metavar=meta.get("metavar"),
                help=help_text,
            )
        elif kind is bool:
            parser.add_argument(
                flag(field.name),
                dest=field.name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=help_text,
            )
        else:
            parser.add_argument(
                flag(field.name),
                dest=field.name,
                type=kind,
                nargs=nargs,
                choices=meta.get("choices"),
                default=None,
                metavar=meta.get("metavar"),
                help=help_text,
            )
        names.append(field.name)
    return names


def given(args: argparse.Namespace, fields: Iterable[str]) -> dict[str, Any]:
    """The values of `fields` typed on the command line (None means not given)."""
    values = {}
    for name in fields:
        value = getattr(args, name, None)
        if value is not None:
            values[name] = tuple(value) if isinstance(value, list) else value
    return values


def error_message(error: BaseException, parser: argparse.ArgumentParser | None = None) -> str:
    """One line for a bad option: 'argument --width: width must be ...' when the error names
    its field (OptionError; a positional argument by its name when `parser` has one of that
    field), else the message's first line."""
    text = one_line(error)
    if isinstance(error, OptionError) and error.field:
        return f"argument {_argument_name(parser, error.field)}: {text}"
    return text


def _argument_name(parser: argparse.ArgumentParser | None, field: str) -> str:
    """How `parser` names `field`'s argument: its first long option (`--inference` of
    `--inference/--no-inference`), or a positional argument's name; `--` + the field with
    dashes when `parser` has none."""
    for action in parser._actions if parser is not None else ():
        if action.dest == field:
            names = [name for name in action.option_strings if name.startswith("--")]
            return (names or action.option_strings or [field])[0]
    return flag(field)


def exit_status(
    error: BaseException, parser: argparse.ArgumentParser | None = None
) -> tuple[int, str]:
    """The exit status of a command stopped by `error`, and its one line for stderr (after
    'PROG: error: ').

    Returns:
        (2, the message naming the flag) for a bad option or bad data: a `ValueError` (such as
        `OptionError`, a folder, IDX or image error) or a `FileNotFoundError` (such as
        `DataNotFoundError`: an input that is not there); (1, 'TypeName: message') for a run
        that failed: `TrainingDiverged` and any other `RuntimeError`, any other `OSError` (a full
        disk, a folder that cannot be written), or anything else.
    """
    if isinstance(error, (ValueError, FileNotFoundError)):
        return BAD_INPUT, error_message(error, parser)
    return RUN_FAILED, f"{type(error).__name__}: {one_line(error)}"


def fail(parser: argparse.ArgumentParser, error: BaseException) -> NoReturn:
    """Exits with `exit_status(error)`: one line on stderr, no traceback."""
    status, line = exit_status(error, parser)
    parser.exit(status, f"{parser.prog}: error: {line}\n")


@dataclasses.dataclass(frozen=True)
class BackendOption:
    """The `--backend` flag of every command: applied to KERAS_BACKEND before Keras is first
    imported (`keras_resnet.cli.select_backend`), so it is not an option of the run itself."""

    backend: str | None = dataclasses.field(
        default=None,
        metadata={
            "help": "Keras backend (default: $KERAS_BACKEND, else tensorflow)",
            "choices": BACKENDS,
        },
    )


def add_backend(parser) -> None:
    """Adds `--backend {tensorflow,jax,torch}` (`BackendOption`)."""
    add_arguments(parser, BackendOption)


__all__ = [
    "BAD_INPUT",
    "REPORTED",
    "RUN_FAILED",
    "BackendOption",
    "OneLineParser",
    "add_arguments",
    "add_backend",
    "error_message",
    "exit_status",
    "fail",
    "flag",
    "given",
    "option",
]
