"""Work in a fresh Python process that dies with its parent.

One mechanism for every child process of the package (a tuner's trial, an export on another
backend): `run_isolated("package.module:function", args)` starts `python -c ...` (no
multiprocessing: 'fork' can deadlock a process that runs TensorFlow's, JAX's or torch's threads,
and 'spawn' re-imports the caller's `__main__`), and the child calls `die_with_parent()` before it
imports the target, so that a parent killed even by SIGKILL leaves no orphan writing into its
folders.
"""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence

_CHILD_CODE = (
    "import sys; from keras_resnet.subprocess_utils import child_main; sys.exit(child_main())"
)


def die_with_parent(parent: int | None = None) -> None:
    """Ends this process as soon as its parent process `parent` (default: the current parent)
    is gone.

    On Linux the kernel delivers SIGKILL when the parent dies (PR_SET_PDEATHSIG); elsewhere, or
    if prctl is unavailable, a daemon thread polls the parent's pid every 0.2 s. Either way the
    process exits at once when the parent died before this call.
    """
    parent = os.getppid() if parent is None else int(parent)
    armed = False
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            armed = libc.prctl(1, signal.SIGKILL) == 0  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            armed = False
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
    if not armed:

        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(0.2)
            os._exit(1)

        threading.Thread(target=watch, daemon=True, name="die-with-parent").start()


def child_main(argv: Sequence[str] | None = None) -> int:
    """The child side of `run_isolated`: `PARENT_PID MODULE:FUNCTION ARGS...`. Arms
    `die_with_parent`, imports the module and returns `FUNCTION(*ARGS)` as the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parent, target, args = argv[0], argv[1], argv[2:]
    die_with_parent(int(parent))
    module_name, _, function_name = target.partition(":")
    function = getattr(importlib.import_module(module_name), function_name)
    result = function(*args)
    return int(result or 0)


def run_isolated(
    target: str,
    args: Sequence[str] = (),
    *,
    env: Mapping[str, str] | None = None,
    capture_output: bool = False,
    on_start: Callable[[int], None] | None = None,
) -> subprocess.CompletedProcess:
    """Runs `target(*args)` in a fresh Python process and waits for it.

    Args:
        target: 'package.module:function'; the function takes strings and returns an int exit
            status (or None for 0).
        args: its arguments, as strings.
        env: the child's environment (default: this process').
        capture_output: collect stdout and stderr as text (else they go to this process').
        on_start: called with the child's pid once it runs.

    Returns:
        The `subprocess.CompletedProcess` (returncode, and stdout/stderr when captured). The
        child dies with this process; if waiting is interrupted here (KeyboardInterrupt), the
        child is killed before the exception propagates.
    """
    command = [sys.executable, "-c", _CHILD_CODE, str(os.getpid()), target, *map(str, args)]
    pipe = subprocess.PIPE if capture_output else None
    # No preexec_fn: it would fork a multithreaded process, which can deadlock.
    child = subprocess.Popen(
        command,
        env=None if env is None else dict(env),
        stdout=pipe,
        stderr=pipe,
        text=capture_output,
    )
    try:
        if on_start is not None:
            on_start(child.pid)
        stdout, stderr = child.communicate()
    except BaseException:
        child.kill()
        child.wait()
        raise
    return subprocess.CompletedProcess(command, child.returncode, stdout, stderr)


__all__ = ["child_main", "die_with_parent", "run_isolated"]
