"""Datasets for training: tensorflow-datasets by name, offline, with or without TensorFlow.

`load_dataset("fashion_mnist")` returns the train and test splits as numpy arrays (uint8 NHWC
images, int labels) and the class names. How it gets them:

1. **TensorFlow and tensorflow-datasets installed** (the default environment): through TFDS.
   - Data already prepared under `data_dir` (TFDS' own layout, `~/tensorflow_datasets` by default)
     is read from there: any TFDS image-classification dataset with `image` and `label` features
     (`mnist`, `cifar10`, `cifar100`, ...). Nothing is downloaded.
   - `mnist` and `fashion_mnist` are prepared from a local copy of their four IDX files
     (`train-images-idx3-ubyte.gz`, ...). TFDS' own builder runs with its generator unchanged; only
     its download step is replaced by the local files (`_LocalFiles` below). The usual route,
     `DownloadConfig(manual_dir=...)`, finds the files but then fails with
     `NonMatchingChecksumError`: Debian recompressed the .gz files (same size, other sha256).
     The prepared dataset is cached under `data_dir`, so the second run reads it back in seconds,
     and `tfds.load("fashion_mnist", data_dir=...)` finds it too.
2. **No TensorFlow** (a JAX- or PyTorch-only machine): `mnist` and `fashion_mnist` are read straight
   from the IDX files with numpy (`read_idx`). The arrays are the same as through TFDS.

The IDX files are looked for in `source_dir`, then `$KERAS_RESNET_DATA_DIR` (the folder of the
files, or a folder holding `fashion-mnist/` or `mnist/`), then `/usr/share/datasets/<name>`
(Debian's `dataset-fashion-mnist` package), then `./.data/<name>`.

`tfds.load` is never called on data that is not prepared: offline, it retries the download for
minutes before it fails.
"""

from __future__ import annotations

import dataclasses
import gzip
import importlib.util
import os
import struct
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ENV_SOURCE_DIR = "KERAS_RESNET_DATA_DIR"

# Datasets published as four IDX files: the folder name Debian (and Zalando) use, the class names.
IDX_DATASETS: dict[str, tuple[str, tuple[str, ...]]] = {
    "fashion_mnist": (
        "fashion-mnist",
        (
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
    ),
    "mnist": ("mnist", tuple(str(i) for i in range(10))),
}
IDX_FILES = {
    "train_data": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_data": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
LOADERS = ("auto", "tfds", "idx")


class DataNotFoundError(FileNotFoundError):
    """No local data for a dataset; the message says how to get it."""


@dataclasses.dataclass
class Dataset:
    """Train and test splits in memory.

    Attributes:
        name: dataset name, e.g. 'fashion_mnist'.
        x_train, x_test: uint8 images, shape (N, height, width, channels).
        y_train, y_test: int64 labels in [0, num_classes).
        class_names: one name per label.
        source: where the arrays came from, e.g. 'tfds:/root/tensorflow_datasets' or
            'idx:/usr/share/datasets/fashion-mnist'.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list[str]
    source: str = ""

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(int(d) for d in self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, train={len(self.x_train)}, test={len(self.x_test)}, "
            f"image_shape={self.image_shape}, num_classes={self.num_classes}, "
            f"source={self.source!r})"
        )


def installed(module: str) -> bool:
    """Whether `module` can be imported, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a finder that refuses it; a module set to None
        return False


def tfds_available() -> bool:
    """True when tensorflow and tensorflow_datasets can be imported (without importing them)."""
    return installed("tensorflow") and installed("tensorflow_datasets")


def default_data_dir() -> str:
    """TFDS' data folder: $TFDS_DATA_DIR or ~/tensorflow_datasets."""
    return os.environ.get("TFDS_DATA_DIR") or str(Path("~/tensorflow_datasets").expanduser())


# --------------------------------------------------------------------------------------------
# IDX files
# --------------------------------------------------------------------------------------------


def _idx_path(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    return None


def find_source_dir(name: str, source_dir: str | os.PathLike | None = None) -> Path | None:
    """The first folder holding the four IDX files of `name` ('mnist' or 'fashion_mnist').

    Looks in `source_dir`, `$KERAS_RESNET_DATA_DIR` (or its `<name>/` subfolder),
    `/usr/share/datasets/<name>` and `./.data/<name>`, where `<name>` is e.g. 'fashion-mnist'.
    When `source_dir` is given, only it (and its `<name>/` subfolder) is searched.
    """
    folder_name = IDX_DATASETS[name][0]
    if source_dir is not None:
        roots = [Path(source_dir)]
    else:
        roots = [Path(os.environ[ENV_SOURCE_DIR])] if os.environ.get(ENV_SOURCE_DIR) else []
        roots += [Path("/usr/share/datasets"), Path(".data")]
    for root in roots:
        for folder in (root, root / folder_name):
            if all(_idx_path(folder, stem) for stem in IDX_FILES.values()):
                return folder
    return None


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads one IDX file (gzip-compressed or not) into a uint8 array of its stated shape."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes")
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says shape {shape}, file holds {array.size} values")
    return array.reshape(shape)


def _read_idx_dataset(name: str, folder: Path) -> Dataset:
    arrays = {key: read_idx(_idx_path(folder, stem)) for key, stem in IDX_FILES.items()}
    for split in ("train", "test"):
        if len(arrays[f"{split}_data"]) != len(arrays[f"{split}_labels"]):
            raise ValueError(f"{folder}: {split} images and labels differ in number")
    return Dataset(
        name=name,
        x_train=arrays["train_data"][..., None],  # NHW -> NHWC, one channel
        y_train=arrays["train_labels"].astype(np.int64),
        x_test=arrays["test_data"][..., None],
        y_test=arrays["test_labels"].astype(np.int64),
        class_names=list(IDX_DATASETS[name][1]),
        source=f"idx:{folder}",
    )


# --------------------------------------------------------------------------------------------
# tensorflow-datasets
# --------------------------------------------------------------------------------------------


class _LocalFiles:
    """Stands in for TFDS' DownloadManager: a URL resolves to the file of the same name in a folder.

    TFDS' builders call `dl_manager.download_and_extract({key: url})` in `_split_generators` and
    give the returned (decompressed) paths to `_generate_examples`. Here a .gz is decompressed
    into `extract_dir`; no checksum is involved, so Debian's recompressed files are fine.
    """

    def __init__(self, folder: Path, extract_dir: Path):
        self.folder = folder
        self.extract_dir = extract_dir

    def _resolve(self, url: str) -> str:
        stem = url.rstrip("/").rsplit("/", 1)[-1].removesuffix(".gz")
        path = _idx_path(self.folder, stem)
        if path is None:
            raise DataNotFoundError(f"{stem}(.gz) is missing from {self.folder}")
        if path.suffix == ".gz":
            extracted = self.extract_dir / stem
            with gzip.open(path, "rb") as src, open(extracted, "wb") as dst:
                dst.write(src.read())
            path = extracted
        return os.fspath(path)

    def download_and_extract(self, urls):
        if isinstance(urls, dict):
            return {key: self._resolve(url) for key, url in urls.items()}
        if isinstance(urls, (list, tuple)):
            return [self._resolve(url) for url in urls]
        return self._resolve(urls)

    download = download_and_extract


def _local_builder(name: str, folder: Path, data_dir: str, extract_dir: Path):
    """TFDS' builder of `name`, with its download step replaced by the files in `folder`."""
    import tensorflow_datasets as tfds

    base = tfds.builder_cls(name)

    class LocalFiles(base, skip_registration=True):  # not registered: TFDS' own name stays
        def _split_generators(self, dl_manager, *args, **kwargs):
            return super()._split_generators(_LocalFiles(folder, extract_dir), *args, **kwargs)

    # Same name and version as TFDS' builder, hence the same folder: data_dir/name/version.
    LocalFiles.name = base.name
    return LocalFiles(data_dir=data_dir)


def _tfds_to_numpy(builder, split: str) -> tuple[np.ndarray, np.ndarray]:
    import tensorflow_datasets as tfds

    batch = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1, as_supervised=True))
    images, labels = batch
    if images.ndim == 3:  # some datasets store (H, W) grayscale
        images = images[..., None]
    return images.astype(np.uint8), labels.astype(np.int64)


def _load_tfds(name: str, folder: Path | None, data_dir: str) -> Dataset:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as error:
        raise ValueError(
            f"dataset must be a tensorflow-datasets image-classification dataset, received "
            f"dataset={name!r}"
        ) from error
    if not builder.is_prepared():
        if name in IDX_DATASETS and folder is not None:
            # The decompressed IDX files are only needed while TFDS writes its own files.
            with tempfile.TemporaryDirectory(prefix=f"{name}_idx_") as extract_dir:
                builder = _local_builder(name, folder, data_dir, Path(extract_dir))
                builder.download_and_prepare(
                    download_config=tfds.download.DownloadConfig(try_download_gcs=False)
                )
        else:
            raise DataNotFoundError(_missing_message(name, data_dir=data_dir))
    features = builder.info.features
    if "image" not in features or "label" not in features:
        raise ValueError(
            f"dataset must have 'image' and 'label' features, received dataset={name!r} with "
            f"features {sorted(features.keys())}"
        )
    label = features["label"]
    class_names = (
        list(label.names)
        if getattr(label, "names", None)
        else [str(i) for i in range(label.num_classes)]
    )
    x_train, y_train = _tfds_to_numpy(builder, "train")
    test_split = "test" if "test" in builder.info.splits else "validation"
    x_test, y_test = _tfds_to_numpy(builder, test_split)
    return Dataset(name, x_train, y_train, x_test, y_test, class_names, source=f"tfds:{data_dir}")


def _missing_message(name: str, *, data_dir: str | None = None) -> str:
    if name in IDX_DATASETS:
        folder_name = IDX_DATASETS[name][0]
        debian = "dataset-fashion-mnist" if name == "fashion_mnist" else "dataset-mnist"
        return (
            f"no {name} data found: install it with `apt-get install {debian}` (files in "
            f"/usr/share/datasets/{folder_name}), or pass --source-dir (or set "
            f"{ENV_SOURCE_DIR}) to a folder holding train-images-idx3-ubyte.gz, "
            "train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz"
        )
    return (
        f"no prepared {name} data under {data_dir}: prepare it with tensorflow-datasets "
        f"(`tfds build {name} --data_dir {data_dir}` where the internet is reachable, or "
        "with --manual_dir for datasets that need it), or pass --data-dir to where it is"
    )


def load_dataset(
    name: str = "fashion_mnist",
    *,
    source_dir: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    loader: str = "auto",
) -> Dataset:
    """Loads a dataset's train and test splits into memory.

    Args:
        name: a tensorflow-datasets name: 'fashion_mnist' (default), 'mnist', 'cifar10',
            'cifar100', or any TFDS dataset with 'image' and 'label' features.
        source_dir: folder of the IDX files of 'mnist'/'fashion_mnist' (see the module docstring
            for where they are looked for when this is None).
        data_dir: TFDS' data folder, where prepared datasets are cached (default
            $TFDS_DATA_DIR or ~/tensorflow_datasets).
        loader: 'auto' (TFDS when TensorFlow is installed, else the IDX reader), 'tfds' or
            'idx' (read the IDX files with numpy; mnist and fashion_mnist only).

    Returns:
        A `Dataset` with uint8 NHWC images, int64 labels and the class names.

    Raises:
        ValueError: unknown dataset or loader.
        DataNotFoundError: no local data; the message says how to get it.

    Example:
        >>> data = load_dataset("fashion_mnist")
        >>> data.x_train.shape, data.class_names[0]
        ((60000, 28, 28, 1), 'T-shirt/top')
    """
    if loader not in LOADERS:
        raise ValueError(f"loader must be one of {LOADERS}, received loader={loader!r}")
    if not isinstance(name, str) or not name:
        raise ValueError(f"dataset must be a dataset name, received dataset={name!r}")
    name = name.lower()
    if source_dir is not None and not Path(source_dir).is_dir():
        raise DataNotFoundError(f"source_dir is not a folder, received source_dir={source_dir!r}")
    folder = find_source_dir(name, source_dir) if name in IDX_DATASETS else None
    use_tfds = loader == "tfds" or (loader == "auto" and tfds_available())
    if loader == "tfds" and not tfds_available():
        raise ValueError(
            "loader='tfds' needs tensorflow and tensorflow-datasets installed, "
            "received loader='tfds'"
        )
    if use_tfds:
        return _load_tfds(name, folder, os.fspath(data_dir or default_data_dir()))
    if name not in IDX_DATASETS:
        hint = (
            ""
            if loader == "idx"
            else " (other datasets need tensorflow and tensorflow-datasets installed)"
        )
        raise ValueError(
            f"dataset must be one of {sorted(IDX_DATASETS)} without TensorFlow"
            f"{hint}, received dataset={name!r}"
        )
    if folder is None:
        raise DataNotFoundError(_missing_message(name))
    return _read_idx_dataset(name, folder)


def subset(
    data: Dataset, train_size: int | None = None, test_size: int | None = None, *, seed: int = 0
) -> Dataset:
    """A class-stratified-enough random subset (the first `n` of a seeded permutation)."""
    rng = np.random.default_rng(seed)

    def take(x, y, n):
        if n is None or n >= len(x):
            return x, y
        index = np.sort(rng.permutation(len(x))[:n])
        return x[index], y[index]

    x_train, y_train = take(data.x_train, data.y_train, train_size)
    x_test, y_test = take(data.x_test, data.y_test, test_size)
    return dataclasses.replace(data, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)


def channel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of uint8 NHWC images, in pixel units (0-255)."""
    flat = images.reshape(-1, images.shape[-1]).astype(np.float64)
    return flat.mean(axis=0).tolist(), flat.std(axis=0).tolist()


def augmentation(
    image_shape: Sequence[int],
    *,
    pad: int = 4,
    flip: bool = True,
    erasing: float = 0.5,
    seed: int | None = None,
):
    """Augmentation for small images, as Keras layers active only in training (every backend).

    - random crop with `pad` pixels of zero padding, one offset per image (`RandomPadCrop`).
    - horizontal flip (`keras.layers.RandomFlip`): right for Fashion-MNIST and CIFAR, wrong for
      digits (pass `flip=False` for MNIST).
    - random erasing (Zhong et al. 2017, `keras.layers.RandomErasing`) with probability
      `erasing`: a rectangle of 2-33% of the image filled with noise.

    The layers compute in float32 whatever the dtype policy (0-255 pixels stay exact).

    Args:
        image_shape: (height, width, channels).
        pad: pixels of padding for the random crop (0: none).
        flip: random horizontal flips.
        erasing: probability of erasing a rectangle (0: none).
        seed: seed of the layers' random draws.

    Returns:
        A `keras.Sequential` named 'augment' (identity at inference), taking 0-255 pixels; it has
        no layers when every augmentation is off.
    """
    import keras
    from keras import layers

    from keras_resnet.layers import RandomPadCrop

    steps = []
    if pad:
        steps.append(RandomPadCrop(pad, seed=seed, dtype="float32", name="random_crop"))
    if flip:
        steps.append(
            layers.RandomFlip("horizontal", seed=seed, dtype="float32", name="random_flip")
        )
    if erasing:
        steps.append(
            layers.RandomErasing(
                factor=(erasing, erasing),
                scale=(0.02, 0.33),
                fill_value=None,
                value_range=(0, 255),
                seed=seed,
                dtype="float32",
                name="random_erasing",
            )
        )
    return keras.Sequential(steps, name="augment")
