"""keras.datasets: MNIST, Fashion-MNIST, CIFAR-10 and CIFAR-100 where no local copy is found.

`keras.datasets.<name>.load_data()` reads its cache, `$KERAS_HOME/datasets` (default
`~/.keras/datasets`), and downloads the missing files into it with `keras.utils.get_file`. It
needs no TensorFlow, so it serves every backend. A filled cache works offline:

- fashion_mnist: `fashion-mnist/` holding train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz,
  t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz. These files carry no hash check, so
  Debian's recompressed copies (or any gzip-compressed IDX files) fill it as well.
- mnist: `mnist.npz`; cifar10, cifar100: their `.tar.gz` archives (`*-target_archive`). Each is
  checked against its sha256 and downloaded again when it differs, so only the published files
  fill the cache.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from pathlib import Path

import numpy as np

from keras_resnet.data.dataset import Dataset
from keras_resnet.data.idx import IDX_DATASETS
from keras_resnet.data.tfds_source import DataNotFoundError
from keras_resnet.utils import one_line

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
# The archive's fine_label_names (alphabetical), as tensorflow-datasets' cifar100 'label' names.
CIFAR100_CLASSES = (
    *("apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle"),
    *("bottle", "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle"),
    *("caterpillar", "cattle", "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch"),
    *("crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish", "forest"),
    *("fox", "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower"),
    *("leopard", "lion", "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain"),
    *("mouse", "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear"),
    *("pickup_truck", "pine_tree", "plain", "plate", "poppy", "porcupine", "possum", "rabbit"),
    *("raccoon", "ray", "road", "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk"),
    *("skyscraper", "snail", "snake", "spider", "squirrel", "streetcar", "sunflower"),
    *("sweet_pepper", "table", "tank", "telephone", "television", "tiger", "tractor", "train"),
    *("trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm"),
)
# Datasets keras.datasets serves -> their class names, in label order.
KERAS_DATASETS: dict[str, tuple[str, ...]] = {
    "mnist": IDX_DATASETS["mnist"][1],
    "fashion_mnist": IDX_DATASETS["fashion_mnist"][1],
    "cifar10": CIFAR10_CLASSES,
    "cifar100": CIFAR100_CLASSES,
}
# keras.utils.get_file downloads with urllib's urlretrieve, which sets no timeout: where the
# network drops packets instead of refusing them, each file would wait for the system's TCP
# timeout (about 2 minutes on Linux). A stalled connection fails after this many seconds instead.
DOWNLOAD_TIMEOUT_S = 60


def keras_cache_dir() -> Path:
    """The folder keras.datasets reads and fills: `$KERAS_HOME/datasets`, where KERAS_HOME
    defaults to ~/.keras (and /tmp/.keras where that cannot be written), as Keras decides."""
    home = os.environ.get("KERAS_HOME")
    if not home:
        base = os.path.expanduser("~")
        home = os.path.join(base if os.access(base, os.W_OK) else "/tmp", ".keras")
    if not os.access(home, os.W_OK):  # keras.utils.get_file's own fallback
        home = os.path.join("/tmp", ".keras")
    return Path(home) / "datasets"


@contextlib.contextmanager
def _socket_timeout(seconds: float):
    """Sockets opened inside get `seconds` as their timeout, unless a default is already set."""
    previous = socket.getdefaulttimeout()
    if previous is None:
        socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _as_nhwc(images: np.ndarray, channels_first: bool) -> np.ndarray:
    if images.ndim == 3:  # (N, H, W) grayscale
        return images[..., None]
    if channels_first:  # keras' CIFAR loaders follow keras.config.image_data_format()
        return images.transpose(0, 2, 3, 1)
    return images


def load_keras_dataset(name: str) -> Dataset:
    """Train and test splits of `name` through `keras.datasets.<name>.load_data()`.

    Prints one line saying where the data came from (on stderr: stdout may carry JSON).

    Args:
        name: 'mnist', 'fashion_mnist', 'cifar10' or 'cifar100' (fine labels).

    Returns:
        A `Dataset` with uint8 NHWC images, int64 labels, the class names and
        `source='keras.datasets:<cache folder>'`.

    Raises:
        ValueError: `name` is not a keras.datasets dataset; labels outside the class range.
        DataNotFoundError: keras.datasets could neither read its cache nor download the files
            (one line: the cache folder and keras' error).
    """
    if name not in KERAS_DATASETS:
        raise ValueError(
            f"dataset must be one of {sorted(KERAS_DATASETS)} for keras.datasets, "
            f"received dataset={name!r}"
        )
    import keras

    folder = keras_cache_dir()
    try:
        with _socket_timeout(DOWNLOAD_TIMEOUT_S):
            (x_train, y_train), (x_test, y_test) = getattr(keras.datasets, name).load_data()
    # get_file raises a bare Exception for a failed download ("URL fetch failure on ..."), and
    # the loaders OSError/EOFError/ValueError for a cached file they cannot read.
    except Exception as error:
        raise DataNotFoundError(
            f"keras.datasets could not load {name} into {folder}: {one_line(error)}"
        ) from None
    channels_first = keras.config.image_data_format() == "channels_first"
    class_names = list(KERAS_DATASETS[name])
    arrays = {}
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        labels = np.asarray(y).reshape(-1).astype(np.int64)  # CIFAR's labels are (N, 1)
        if len(labels) and not 0 <= labels.min() <= labels.max() < len(class_names):
            raise ValueError(
                f"keras.datasets' {name} {split} labels must lie in [0, {len(class_names)}), "
                f"received labels from {labels.min()} to {labels.max()} (files in {folder})"
            )
        arrays[split] = (_as_nhwc(np.asarray(x, dtype=np.uint8), channels_first), labels)
    source = f"keras.datasets:{folder}"
    print(f"data: {name} from {source}", file=sys.stderr, flush=True)
    return Dataset(name, *arrays["train"], *arrays["test"], class_names, source=source)
