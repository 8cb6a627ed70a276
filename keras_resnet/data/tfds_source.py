"""tensorflow-datasets, offline: prepared data read back, mnist/fashion_mnist built from IDX files.

TFDS' own builder runs with its generator unchanged; only its download step is replaced by the
local files (`LocalFiles`). The usual route, `DownloadConfig(manual_dir=...)`, finds the files but
then fails with `NonMatchingChecksumError`: Debian recompressed the .gz files (same size, other
sha256). The IDX files are checked (`check_idx_folder`) before TFDS sees them, and a prepared
cache whose split sizes disagree with the source files is refused rather than trained on.
"""

from __future__ import annotations

import gzip
import os
import tempfile
from pathlib import Path

import numpy as np

from keras_resnet.data.dataset import Dataset
from keras_resnet.data.idx import (
    ENV_SOURCE_DIR,
    IDX_DATASETS,
    TFDS_SPLIT_SIZES,
    IdxError,
    check_idx_folder,
    idx_path,
)
from keras_resnet.utils import installed


class DataNotFoundError(FileNotFoundError):
    """No data for a dataset, neither local nor downloaded; the message says how to get it."""


def tfds_available() -> bool:
    """True when tensorflow and tensorflow_datasets can be imported (without importing them)."""
    return installed("tensorflow") and installed("tensorflow_datasets")


def default_data_dir() -> str:
    """TFDS' data folder: $TFDS_DATA_DIR or ~/tensorflow_datasets."""
    return os.environ.get("TFDS_DATA_DIR") or str(Path("~/tensorflow_datasets").expanduser())


class LocalFiles:
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
        path = idx_path(self.folder, stem)
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


def local_builder(name: str, folder: Path, data_dir: str, extract_dir: Path):
    """TFDS' builder of `name`, with its download step replaced by the files in `folder`."""
    import tensorflow_datasets as tfds

    base = tfds.builder_cls(name)

    class LocalFilesBuilder(base, skip_registration=True):  # not registered: TFDS' name stays
        def _split_generators(self, dl_manager, *args, **kwargs):
            return super()._split_generators(LocalFiles(folder, extract_dir), *args, **kwargs)

    # Same name and version as TFDS' builder, hence the same folder: data_dir/name/version.
    LocalFilesBuilder.name = base.name
    return LocalFilesBuilder(data_dir=data_dir)


def _tfds_to_numpy(builder, split: str) -> tuple[np.ndarray, np.ndarray]:
    import tensorflow_datasets as tfds

    batch = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1, as_supervised=True))
    images, labels = batch
    if images.ndim == 3:  # some datasets store (H, W) grayscale
        images = images[..., None]
    return images.astype(np.uint8), labels.astype(np.int64)


def check_source_for_tfds(name: str, folder: Path) -> dict[str, int]:
    """The IDX files' split sizes, refused unless TFDS' builder can read them whole.

    TFDS' mnist builders read a fixed number of examples and zip images with labels, so a short
    labels file would silently give a short split: checked here, before anything is cached.
    """
    counts = check_idx_folder(folder)
    if counts != TFDS_SPLIT_SIZES:
        raise IdxError(
            f"{folder}: tensorflow-datasets' {name} needs {TFDS_SPLIT_SIZES} examples, the files "
            f"hold {counts} (read them with loader='idx' instead)"
        )
    return counts


def check_cache(builder, counts: dict[str, int], folder: Path) -> None:
    """Refuses a prepared dataset whose split sizes disagree with its source files."""
    cached = {split: builder.info.splits[split].num_examples for split in counts}
    if cached != counts:
        raise IdxError(
            f"the prepared {builder.name} under {builder.data_dir} has {cached} examples, its "
            f"source files in {folder} hold {counts}: delete {builder.data_dir} to rebuild it"
        )


def tfds_builder(name: str, data_dir: str):
    """TFDS' builder of `name` in `data_dir` (prepared or not); ValueError for a name TFDS
    does not know."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow_datasets as tfds

    try:
        return tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as error:
        raise ValueError(
            f"dataset must be a tensorflow-datasets image-classification dataset, received "
            f"dataset={name!r}"
        ) from error


def load_tfds(name: str, folder: Path | None, data_dir: str) -> Dataset:
    """A TFDS dataset as an in-memory `Dataset` (see `load_dataset`)."""
    import tensorflow_datasets as tfds

    builder = tfds_builder(name, data_dir)
    counts = check_source_for_tfds(name, folder) if name in IDX_DATASETS and folder else None
    if not builder.is_prepared():
        if counts is None:
            raise DataNotFoundError(missing_message(name, data_dir=data_dir))
        # The decompressed IDX files are only needed while TFDS writes its own files.
        with tempfile.TemporaryDirectory(prefix=f"{name}_idx_") as extract_dir:
            builder = local_builder(name, folder, data_dir, Path(extract_dir))
            builder.download_and_prepare(
                download_config=tfds.download.DownloadConfig(try_download_gcs=False)
            )
    if counts is not None:
        check_cache(builder, counts, folder)
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


def missing_message(name: str, *, data_dir: str | None = None) -> str:
    """One line saying how to get `name` when no local data is found."""
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
