"""Fetching and caching the weights' files: the cache folder (`$KERAS_HOME/models`), offline
mode (`KERAS_RESNET_OFFLINE`), mirrors (`KERAS_RESNET_WEIGHTS_MIRROR`), and a download into a
temporary folder, moved into the cache only once its hash and, for `.safetensors`, its header
are checked."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.parse
from pathlib import Path

from keras_resnet.pretrained.entry import PretrainedWeights
from keras_resnet.utils import one_line

OFFLINE_ENV = "KERAS_RESNET_OFFLINE"
MIRROR_ENV = "KERAS_RESNET_WEIGHTS_MIRROR"


def cache_folder() -> Path:
    """Where the weights are cached: `$KERAS_HOME/models`, default `~/.keras/models` (read at
    each call, so that a changed KERAS_HOME applies)."""
    home = os.environ.get("KERAS_HOME") or os.path.join("~", ".keras")
    return Path(os.path.expanduser(home)) / "models"


def _offline() -> bool:
    value = os.environ.get(OFFLINE_ENV, "").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise ValueError(
        f"{OFFLINE_ENV} must be 1 (offline) or 0, received {OFFLINE_ENV}="
        f"{os.environ[OFFLINE_ENV]!r}"
    )


def _source_url(entry: PretrainedWeights) -> str:
    """The URL to fetch `entry` from: the mirror's when one is set, else the origin."""
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    if not mirror:
        return entry.origin
    if urllib.parse.urlsplit(mirror).scheme in ("http", "https", "file"):
        return f"{mirror.rstrip('/')}/{urllib.parse.quote(entry.file_name)}"
    folder = Path(os.path.expanduser(mirror))
    if not folder.is_dir():
        raise ValueError(
            f"{MIRROR_ENV} must be a folder or an http(s):// or file:// URL prefix, received "
            f"{MIRROR_ENV}={mirror!r} (no such folder)"
        )
    path = folder.resolve() / entry.file_name
    if not path.is_file():
        raise ValueError(
            f"weights {entry.name!r} are not in the mirror folder {MIRROR_ENV}={mirror!r}: "
            f"expected {path}"
        )
    return path.as_uri()


def _download(entry: PretrainedWeights, url: str, target: Path) -> None:
    import keras  # only when a file is fetched

    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{entry.file_name}.", dir=target.parent))
    except OSError as error:
        raise ValueError(
            f"the weights cache {target.parent} cannot be written ({one_line(error)}); set "
            "KERAS_HOME to a writable folder"
        ) from None
    try:
        try:
            # get_file falls back to /tmp/.keras for a cache_dir it cannot write; `scratch`
            # exists and is ours, so the file lands there.
            fetched = Path(
                keras.utils.get_file(
                    fname=entry.file_name, origin=url, cache_dir=str(scratch), cache_subdir="."
                )
            )
        except Exception as error:  # get_file raises a bare Exception for URL errors
            raise ValueError(
                f"could not download weights {entry.name!r} from {url}: {one_line(error)}"
            ) from None
        _verify(entry, fetched, url)
        with open(fetched, "rb") as file:
            os.fsync(file.fileno())
        os.replace(fetched, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _verify(entry: PretrainedWeights, path: Path, url: str) -> None:
    if entry.sha256 is not None:
        digest = hashlib.sha256()
        with open(path, "rb") as file:
            for chunk in iter(lambda: file.read(1 << 20), b""):
                digest.update(chunk)
        actual = digest.hexdigest()
        if not actual.startswith(entry.sha256):
            raise ValueError(
                f"weights {entry.name!r} downloaded from {url} have sha256 {actual}, expected "
                f"{entry.sha256}{'...' if len(entry.sha256) < 64 else ''}; the file was "
                "discarded and nothing was cached"
            )
    if entry.file_name.lower().endswith(".safetensors"):
        try:
            from safetensors import safe_open
        except ImportError:
            return  # loading will say that safetensors is needed
        try:
            with safe_open(str(path), "numpy"):
                pass
        except Exception as error:  # SafetensorError, OSError
            raise ValueError(
                f"weights {entry.name!r} downloaded from {url} are not a whole safetensors "
                f"file ({one_line(error)}); the file was discarded and nothing was cached"
            ) from None
