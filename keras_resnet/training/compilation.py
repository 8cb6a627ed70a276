"""A persistent cache of compiled programs: a new process reuses what an earlier one compiled
instead of compiling its train step again (the first epoch of a Fashion-MNIST ResNet-18 on an
H200: about 37 s of compilation, in every new process).

- JAX: its persistent compilation cache (`jax_compilation_cache_dir`), which keys an executable
  on the program, the devices and the JAX and XLA versions: only identical programs are served.
- TensorFlow: XLA's persistent cache (`TF_XLA_FLAGS=--tf_xla_persistent_cache_directory`), for
  what Keras compiles with XLA (`jit_compile`: Keras' default on GPUs, off on CPU-only
  machines). TensorFlow reads the flag once, before its first operation in the process: set
  later (after an earlier run in the same process), it changes nothing.
- PyTorch: nothing. Keras' `fit` runs the model eagerly there; it compiles nothing.

The cache is trusted: whoever can write into its folder can make a later run execute code of
theirs. It sits in the user's own cache folder by default.
"""

from __future__ import annotations

import os
from pathlib import Path

import keras

from keras_resnet.utils import OptionError

CACHE_ENV = "KERAS_RESNET_CACHE_DIR"
JAX_ENV = "JAX_COMPILATION_CACHE_DIR"
TF_FLAGS_ENV = "TF_XLA_FLAGS"
TF_CACHE_FLAG = "--tf_xla_persistent_cache_directory"


def default_cache_dir() -> Path:
    """`$KERAS_RESNET_CACHE_DIR/compilation`, else `$XDG_CACHE_HOME/keras_resnet/compilation`,
    else `~/.cache/keras_resnet/compilation`."""
    root = os.environ.get(CACHE_ENV)
    if root:
        return Path(root).expanduser() / "compilation"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "keras_resnet" / "compilation"


def enable_compilation_cache(folder: str | os.PathLike | None = "auto") -> Path | None:
    """Turns the backend's persistent compilation cache on (or off) for this process. Call it
    before anything is compiled: `keras_resnet.training.train` calls it first.

    Args:
        folder: 'auto': `default_cache_dir()`, or the folder a user already gave the backend
            (`JAX_COMPILATION_CACHE_DIR` / `jax_compilation_cache_dir`, or the TensorFlow flag
            in `TF_XLA_FLAGS`), which is kept; a folder: that folder; None or 'off': no cache
            (JAX's is turned off, also one the environment set).

    Returns:
        The cache folder in use, or None (off, the torch backend, or 'auto' where the
        default folder cannot be created).

    Raises:
        OptionError: `folder` names a folder that cannot be created (field
            `compilation_cache`).
    """
    backend = keras.backend.backend()
    if folder is None or folder == "off":
        if backend == "jax":
            _set_jax_cache(None)
        return None
    if backend not in ("jax", "tensorflow"):
        return None
    auto = folder == "auto"
    path = _backend_folder(backend) if auto else None
    path = path or (default_cache_dir() if auto else Path(folder).expanduser())
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        if auto:
            return None  # no cache rather than no run: a read-only home, for one
        raise OptionError(
            "compilation_cache",
            f"compilation_cache must be 'auto', 'off' or a folder that can be created, "
            f"received compilation_cache={os.fspath(folder)!r} ({error.strerror or error})",
        ) from None
    if backend == "jax":
        _set_jax_cache(path)
    else:
        _set_tf_cache(path)
    return path


def _backend_folder(backend: str) -> Path | None:
    """The cache folder the user already gave the backend, if any."""
    if backend == "jax":
        import jax

        value = jax.config.jax_compilation_cache_dir or os.environ.get(JAX_ENV)
        return Path(value) if value else None
    for flag in os.environ.get(TF_FLAGS_ENV, "").split():
        name, _, value = flag.partition("=")
        if name == TF_CACHE_FLAG and value:
            return Path(value)
    return None


def _set_jax_cache(path: Path | None) -> None:
    """JAX's persistent cache in `path` (None: off). JAX reads these settings when it first
    compiles; a change after that takes effect once its cache is reset."""
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    current = (jax.config.jax_enable_compilation_cache, jax.config.jax_compilation_cache_dir)
    if path is not None:
        jax.config.update("jax_compilation_cache_dir", os.fspath(path))
    jax.config.update("jax_enable_compilation_cache", path is not None)
    if (jax.config.jax_enable_compilation_cache, jax.config.jax_compilation_cache_dir) != current:
        compilation_cache.reset_cache()


def _set_tf_cache(path: Path) -> None:
    """XLA's persistent cache in `path`, through TF_XLA_FLAGS (read by TensorFlow at its first
    operation in the process)."""
    flags = os.environ.get(TF_FLAGS_ENV, "").split()
    flags = [f for f in flags if f.partition("=")[0] != TF_CACHE_FLAG]
    os.environ[TF_FLAGS_ENV] = " ".join([*flags, f"{TF_CACHE_FLAG}={os.fspath(path)}"])
