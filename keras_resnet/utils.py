"""Small pieces every module shares: argument checks, an error that names its option, one-line
error text, optional-package probes, and context managers that restore Keras' global state."""

from __future__ import annotations

import contextlib
import errno
import glob
import importlib.util
import math
import os
import secrets
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path


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
    import keras  # here, not at the top: the command lines build their flags without Keras

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
    import keras

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


def create_new_file(folder: str | os.PathLike, prefix: str, suffix: str = "") -> Path:
    """Creates an empty file `folder/<prefix><8 random characters><suffix>` that did not exist.

    Its mode is 0o666 less the umask, as `open()` gives a new file (`tempfile.mkstemp` gives
    0o600 whatever the umask, and a file renamed into place keeps it).

    Raises:
        OSError: the folder cannot be written.
    """
    folder = Path(folder)
    for _ in range(100):
        path = folder / f"{prefix}{secrets.token_hex(4)}{suffix}"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return path
    raise FileExistsError(errno.EEXIST, "no free temporary name", os.fspath(folder / prefix))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yields a temporary path in `path`'s folder; on success it replaces `path` in one
    `os.replace` (after an fsync), on error it is removed and `path` is left as it was.

    The temporary name keeps `path`'s suffix (Keras chooses the format by it: `.keras`,
    `.weights.h5`), and the file is created with the mode a new file gets (0o666 less the
    umask; folders made on the way get 0o777 less the umask), so that what is moved into place
    has the permissions of any other file the user writes.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = suffix if suffix is not None else "".join(path.suffixes) or ".tmp"
    tmp = create_new_file(path.parent, f".{path.name}.", suffix)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Writes `text` to `path` (UTF-8) whole or not at all."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists (a process of another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def temp_name(prefix: str) -> str:
    """`<prefix><pid>-<8 hex digits>`: a temporary name that `remove_stale_temps` can tell
    from those of running processes."""
    return f"{prefix}{os.getpid()}-{secrets.token_hex(4)}"


def remove_stale_temps(folder: str | os.PathLike, prefix: str) -> list[Path]:
    """Removes the temporary files and folders `folder/<prefix><pid>-...` (`temp_name`) whose
    process is gone: what a kill left behind. Those of running processes, this one included,
    are kept.

    Returns:
        The paths removed.
    """
    removed = []
    for entry in Path(folder).glob(glob.escape(prefix) + "*"):
        pid = entry.name[len(prefix) :].split("-")[0]
        if not pid.isdigit() or int(pid) == os.getpid() or pid_alive(int(pid)):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
        removed.append(entry)
    return removed
