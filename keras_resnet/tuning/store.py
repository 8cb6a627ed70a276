"""The search folder's own records, besides KerasTuner's oracle and trials.

    <directory>/<project_name>/
        keras_resnet_search.json   the search definition (space, tuner, data, epochs); a later
                                   run with another definition is refused before anything is
                                   written
        events.jsonl               one line per trial start, training start and end: trial id,
                                   tuner id, pid, and the process' resident memory (RSS)

Every file here is written whole or not at all: the definition by an atomic replace, each event
by one `write` of one line on a file opened with O_APPEND (which the chief and the workers of a
distributed search share).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path

from keras_resnet.utils import OptionError, write_text_atomic

DEFINITION_FILE = "keras_resnet_search.json"
EVENTS_FILE = "events.jsonl"
OBJECTIVE = "val_accuracy"


class SearchMismatchError(ValueError):
    """The search directory holds another search (other space, tuner or data)."""


def project_path(directory: str | os.PathLike, project_name: str) -> Path:
    return Path(directory) / project_name


def check_writable(path: str | os.PathLike, field: str = "directory") -> None:
    """Raises `OptionError(field, ...)` unless `path` is, or can be created as, a folder this
    process may write into. Writes nothing."""
    path = Path(path).absolute()
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    problem = None
    if not existing.is_dir():
        problem = f"{existing} is not a folder"
    elif not os.access(existing, os.W_OK | os.X_OK):
        problem = f"{existing} is not writable"
    if problem:
        raise OptionError(
            field, f"{field} must be a writable folder, received {field}={str(path)!r} ({problem})"
        )


def check_definition(project_dir: str | os.PathLike, definition: dict) -> bool:
    """Compares `definition` with the one stored in `project_dir`, writing nothing.

    Returns:
        True when the directory holds this search (a resume), False when there is no search yet.

    Raises:
        SearchMismatchError: the directory holds another search, or a KerasTuner project that
            was not made by this package.
    """
    project_dir = Path(project_dir)
    stored_file = project_dir / DEFINITION_FILE
    if stored_file.is_file():
        try:
            stored = json.loads(stored_file.read_text())
        except json.JSONDecodeError as error:
            raise SearchMismatchError(f"{stored_file} is not valid JSON ({error})") from error
        normalized = json.loads(json.dumps(definition))
        if stored != normalized:
            changes = differences(stored, normalized)
            raise SearchMismatchError(
                f"{project_dir} holds a search with a different definition ("
                + "; ".join(changes[:4])
                + "). Use the same flags to resume it, or another --project-name or "
                "--directory for a new search; nothing was changed"
            )
        return True
    if (project_dir / "oracle.json").exists() or any(project_dir.glob("trial_*")):
        raise SearchMismatchError(
            f"{project_dir} holds a KerasTuner project without {DEFINITION_FILE}: not a "
            "keras_resnet search; use another --project-name or --directory, nothing was changed"
        )
    return False


def differences(stored, new, prefix: str = "") -> list[str]:
    """'key.path: old there, new here' for every leaf that differs between two JSON values."""
    if isinstance(stored, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(stored) | set(new)):
            out += differences(stored.get(key), new.get(key), f"{prefix}{key}.")
        return out
    if stored != new:
        return [f"{prefix.rstrip('.')}: {stored!r} there, {new!r} here"]
    return []


def write_definition(project_dir: str | os.PathLike, definition: dict) -> None:
    """Writes the search definition whole (a kill never leaves half a file)."""
    text = json.dumps(definition, indent=2, sort_keys=True) + "\n"
    write_text_atomic(Path(project_dir) / DEFINITION_FILE, text)


def rss_bytes() -> int:
    """The process' resident set size now (Linux /proc), or its peak where /proc is missing."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return peak_rss_bytes()


def peak_rss_bytes() -> int:
    """The process' peak resident set size (getrusage; kilobytes on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def log_event(project_dir: str | os.PathLike, **event) -> None:
    """Appends one JSON line to events.jsonl in a single `write` on an O_APPEND descriptor: a
    line is never torn or interleaved with another process' line."""
    event = {"time": time.time(), "pid": os.getpid(), **event}
    line = (json.dumps(event, sort_keys=True) + "\n").encode()
    fd = os.open(Path(project_dir) / EVENTS_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        written = os.write(fd, line)
    finally:
        os.close(fd)
    if written != len(line):
        raise OSError(f"events.jsonl: wrote {written} of {len(line)} bytes (disk full?)")


def read_events(project_dir: str | os.PathLike) -> list[dict]:
    """The events of a search directory, oldest first (a torn last line is skipped)."""
    path = Path(project_dir) / EVENTS_FILE
    if not path.is_file():
        return []
    events = []
    for line in path.read_text().splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events


__all__ = [
    "DEFINITION_FILE",
    "EVENTS_FILE",
    "OBJECTIVE",
    "SearchMismatchError",
    "check_definition",
    "check_writable",
    "differences",
    "log_event",
    "peak_rss_bytes",
    "project_path",
    "read_events",
    "rss_bytes",
    "write_definition",
]
