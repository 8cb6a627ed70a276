"""Command-line flags generated from dataclass fields, so that an option is declared once.

A field's metadata gives its help text (`help`), its choices (`choices`), and `cli=False` keeps
it off the command line. The flag is `--` + the field's name with dashes; its type comes from the
field's annotation: bool fields become `--x/--no-x`, tuples take several values. Every flag
defaults to None ("not given"), so that `given(args, cls)` returns only what was typed and the
dataclass (or a preset) supplies the rest. Values are checked by the dataclass itself, whose
`OptionError.field` names the flag in the error message (`error_message`).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Iterable, Mapping
from typing import Any

from keras_resnet.utils import OptionError


class OneLineParser(argparse.ArgumentParser):
    """Errors as one line on stderr (no usage block), exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


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
    to `only` and minus `exclude`). Returns the field names added."""
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
        if kind is bool:
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


def error_message(error: ValueError) -> str:
    """One line for a bad option: 'argument --width: width must be ...' when the error names
    its field (OptionError), else the message's first line."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if isinstance(error, OptionError) and error.field:
        return f"argument {flag(error.field)}: {text}"
    return text


__all__ = ["OneLineParser", "add_arguments", "error_message", "flag", "given"]
