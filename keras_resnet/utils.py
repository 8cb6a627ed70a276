"""Small pieces every module shares: argument checks, an error that names its option, one-line
error text, optional-package probes, and context managers that restore Keras' global state."""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import keras


class OptionError(ValueError):
    """An invalid option. `field` is its name (a command line's flag is `--` + field with
    dashes), and the message names the option and the value received."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def check_int(name: str, value, minimum: int, maximum: int | None = None) -> None:
    """Raises OptionError unless `value` is an int (not a bool) in [minimum, maximum]."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < minimum
        or (maximum is not None and value > maximum)
    ):
        bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise OptionError(name, f"{name} must be an integer {bound}, received {name}={value!r}")


def check_number(
    name: str,
    value,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """Raises OptionError unless `value` is a finite real number within the bounds given."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        if low is not None and high is not None:
            bound = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        elif low is not None:
            bound = f"{'>' if low_open else '>='} {low:g}"
        elif high is not None:
            bound = f"{'<' if high_open else '<='} {high:g}"
        else:
            bound = "finite"
        raise OptionError(name, f"{name} must be a number {bound}, received {name}={value!r}")


def check_choice(name: str, value, choices: Sequence) -> None:
    if value not in choices:
        raise OptionError(
            name, f"{name} must be one of {tuple(choices)}, received {name}={value!r}"
        )


def one_line(error: BaseException) -> str:
    """The first line of an error's message (or its type's name when it has none)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def installed(module: str) -> bool:
    """Whether an optional package can be imported, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


# ---------------------------------------------------------------------------------------------
# Keras' global state
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def keras_globals() -> Iterator[None]:
    """Restores Keras' global dtype policy, distribution and image data format on exit, also
    on error. Every public function that sets one of them runs inside this."""
    policy = keras.config.dtype_policy()
    distribution = keras.distribution.distribution()
    data_format = keras.config.image_data_format()
    try:
        yield
    finally:
        keras.config.set_dtype_policy(policy)
        keras.distribution.set_distribution(distribution)
        keras.config.set_image_data_format(data_format)


@contextlib.contextmanager
def dtype_policy(policy: str | None) -> Iterator[None]:
    """Sets the global dtype policy for the block (None: leave it), then restores it."""
    previous = keras.config.dtype_policy()
    try:
        if policy is not None:
            keras.config.set_dtype_policy(policy)
        yield
    finally:
        keras.config.set_dtype_policy(previous)


# ---------------------------------------------------------------------------------------------
# Files written whole or not at all
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yields a temporary path in `path`'s folder; on success it replaces `path` in one
    `os.replace` (after an fsync), on error it is removed and `path` is left as it was.

    The temporary name keeps `path`'s suffix (Keras chooses the format by it: `.keras`,
    `.weights.h5`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = suffix if suffix is not None else "".join(path.suffixes) or ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Writes `text` to `path` whole or not at all."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
