"""`Dataset`: train and test splits in memory, the type every in-memory loader returns.

The loaders (`memory.load_dataset`, the IDX reader `idx`, tensorflow-datasets `tfds_source`,
keras.datasets `keras_datasets`, `folders.folder_dataset`) all build it; it lives apart from them
so that none of them imports another for it.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class Dataset:
    """Train and test splits in memory.

    Attributes:
        name: dataset name, e.g. 'fashion_mnist'.
        x_train, x_test: uint8 images, shape (N, height, width, channels).
        y_train, y_test: int64 labels in [0, num_classes).
        class_names: one name per label.
        source: where the arrays came from, e.g. 'tfds:/root/tensorflow_datasets',
            'idx:/usr/share/datasets/fashion-mnist' or 'keras.datasets:/root/.keras/datasets'.
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
