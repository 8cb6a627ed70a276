"""Datasets for training: in memory (Fashion-MNIST, MNIST, small TFDS) or streamed from folders.

- `load_dataset(name)` (`memory`): train and test splits as uint8 numpy arrays, through
  tensorflow-datasets where TensorFlow is installed, else from the IDX files (`idx`), offline.
  IDX files are checked at the door (`check_idx_folder`) and a TFDS cache that disagrees with its
  source files is refused (`tfds_source`).
- `open_dataset(name_or_path)` (`source`): a folder of class folders becomes a `FolderSource`
  whose `dataset(split, batch_size)` streams (uint8 images, int labels) batches with the
  ImageNet recipe (`recipe`, `decode`): tf.data on TensorFlow, a Keras `PyDataset` elsewhere
  (`pipelines`). Unreadable images are skipped and counted.
- `build_cache(source, folder)` / `CachePyDataset` (`cache`): a one-time decoded uint8 copy of a
  folder, for GPUs that decoding JPEGs cannot keep busy.
- `split(count, holdout, seed=...)`: the package's one seeded train/validation split.
- `augmentation(...)`: the small-image recipe's Keras layers.

See docs/DATA.md.
"""

from keras_resnet.data.augment import augmentation
from keras_resnet.data.cache import CachePyDataset, build_cache, cache_info
from keras_resnet.data.decode import BadImage, SkipLog
from keras_resnet.data.folders import IMAGE_EXTENSIONS, FolderError, FolderSource, open_folder
from keras_resnet.data.idx import (
    ENV_SOURCE_DIR,
    IDX_DATASETS,
    IDX_FILES,
    IdxError,
    check_idx_folder,
    find_source_dir,
    idx_header,
    read_idx,
)
from keras_resnet.data.memory import LOADERS, Dataset, channel_stats, load_dataset, split, subset
from keras_resnet.data.recipe import eval_crop_box, random_resized_crop_box
from keras_resnet.data.source import open_dataset
from keras_resnet.data.tfds_source import DataNotFoundError, default_data_dir, tfds_available
from keras_resnet.utils import installed  # re-exported until callers import it from utils

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
