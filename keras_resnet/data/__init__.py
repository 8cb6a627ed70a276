"""Datasets for training: in memory (Fashion-MNIST, MNIST, small TFDS) or streamed from folders.

- `load_dataset(name)` (`memory`): train and test splits as uint8 numpy arrays (a `Dataset`,
  `dataset`), through tensorflow-datasets where TensorFlow is installed, else from the IDX files
  (`idx`), offline.
  IDX files are checked at the door (`check_idx_folder`) and a TFDS cache that disagrees with its
  source files is refused (`tfds_source`).
- `open_dataset(name_or_path)` (`source`): a folder of class folders becomes a `FolderSource`
  whose `dataset(split, batch_size)` streams (uint8 images, int labels) batches with the
  ImageNet recipe (`recipe`, `decode`): tf.data on TensorFlow, a Keras `PyDataset` elsewhere
  (`pipelines`). Unreadable images are skipped and counted.
- `build_cache(source, folder)` (`cache`) / `CachePyDataset` (`cache_read`): a one-time decoded
  uint8 copy of a folder, for GPUs that decoding JPEGs cannot keep busy.
- `split(count, holdout, seed=...)`: the package's one seeded train/validation split.
- `augmentation(...)`: the small-image recipe's Keras layers.

See docs/DATA.md.
"""

import importlib

# public name -> the submodule that defines it. The names load on first use (PEP 562): the
# option dataclasses import this package's constants (loaders, dataset names), and a command's
# --help must not import Keras through it.
_EXPORTS = {
    "augmentation": "augment",
    "build_cache": "cache",
    "CachePyDataset": "cache_read",
    "cache_info": "cache_read",
    "Dataset": "dataset",
    "BadImage": "decode",
    "SkipLog": "decode",
    "IMAGE_EXTENSIONS": "folders",
    "FolderError": "folders",
    "FolderSource": "folders",
    "open_folder": "folders",
    "ENV_SOURCE_DIR": "idx",
    "IDX_DATASETS": "idx",
    "IDX_FILES": "idx",
    "IdxError": "idx",
    "check_idx_folder": "idx",
    "find_source_dir": "idx",
    "idx_header": "idx",
    "read_idx": "idx",
    "LOADERS": "memory",
    "channel_stats": "memory",
    "load_dataset": "memory",
    "split": "memory",
    "subset": "memory",
    "eval_crop_box": "recipe",
    "random_resized_crop_box": "recipe",
    "open_dataset": "source",
    "DataNotFoundError": "tfds_source",
    "default_data_dir": "tfds_source",
    "tfds_available": "tfds_source",
    "installed": None,  # keras_resnet.utils': re-exported until callers import it from there
}

__all__ = [
    "ENV_SOURCE_DIR",
    "IDX_DATASETS",
    "IDX_FILES",
    "IMAGE_EXTENSIONS",
    "LOADERS",
    "BadImage",
    "CachePyDataset",
    "DataNotFoundError",
    "Dataset",
    "FolderError",
    "FolderSource",
    "IdxError",
    "SkipLog",
    "augmentation",
    "build_cache",
    "cache_info",
    "channel_stats",
    "check_idx_folder",
    "default_data_dir",
    "eval_crop_box",
    "find_source_dir",
    "idx_header",
    "installed",
    "load_dataset",
    "open_dataset",
    "open_folder",
    "random_resized_crop_box",
    "read_idx",
    "split",
    "subset",
    "tfds_available",
]


def __getattr__(name: str):
    if name in _EXPORTS:
        module = _EXPORTS[name]
        source = "keras_resnet.utils" if module is None else f"{__name__}.{module}"
        value = getattr(importlib.import_module(source), name)
    else:
        try:  # a submodule not imported yet: `keras_resnet.data.memory`
            value = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
