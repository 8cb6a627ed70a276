"""`open_dataset`: one entry point for a folder of images or a dataset name."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from keras_resnet.data.dataset import Dataset
    from keras_resnet.data.folders import FolderSource


def looks_like_path(text: str) -> bool:
    """Whether `text` reads as a path rather than a dataset name (TFDS names hold no '/')."""
    return os.sep in text or "/" in text or text.startswith((".", "~")) or Path(text).exists()


def open_dataset(
    name_or_path: str | os.PathLike,
    *,
    image_size: int = 224,
    channels: int = 3,
    val_size: int | float = 0,
    seed: int = 0,
    log_dir: str | os.PathLike | None = None,
    **load_options,
) -> FolderSource | Dataset:
    """A folder of images, streamed, or a named dataset, in memory.

    Args:
        name_or_path: a folder (see `keras_resnet.data.folders` for the layouts) or a dataset
            name for `load_dataset` ('fashion_mnist', 'mnist', a prepared TFDS dataset).
        image_size, channels, val_size, seed, log_dir: folder options (see `open_folder`).
        **load_options: `load_dataset` options for a name (source_dir, data_dir, loader).

    Returns:
        A `FolderSource` for a folder (its `dataset(split, batch_size)` streams batches), or an
        in-memory `Dataset` for a name.

    Raises:
        FolderError: a path that is not a folder, or a folder that is not a dataset (one line,
            naming the path), before anything is decoded.
        ValueError, DataNotFoundError: from `load_dataset` for a name.
    """
    # Here, not at the top: `looks_like_path` is imported by the training options, which the
    # command line's --help builds its flags from without decoding anything.
    from keras_resnet.data.folders import FolderError, open_folder
    from keras_resnet.data.memory import load_dataset

    text = os.fspath(name_or_path)
    path = Path(text).expanduser()
    if path.is_dir():
        return open_folder(
            path,
            image_size=image_size,
            channels=channels,
            val_size=val_size,
            seed=seed,
            log_dir=log_dir,
        )
    if not text or looks_like_path(text):
        raise FolderError(
            f"dataset must be a folder of images or a dataset name, received dataset={text!r} "
            "(no such folder)"
        )
    return load_dataset(text, **load_options)
