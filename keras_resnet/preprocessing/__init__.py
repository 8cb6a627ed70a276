"""The preprocessing contract: how an image file becomes the pixels a model was evaluated on.

A `Preprocessing` record travels with every model a run or an export writes (the run's
config.json, export.json, the ONNX metadata, the serving `.keras` file) and with every named
set of pretrained weights, as torchvision's `weights.transforms()` and timm's `pretrained_cfg`
do. Two implementations read it, and tests hold them to each other:

- **Pillow and numpy** (`load_image`, `preprocess`): the training pipelines' evaluation crops,
  the folder cache, and `keras-resnet predict`. A file gives the same pixels everywhere.
- **A Keras layer** (`CropResize`) inside every serving graph (SavedModel, ONNX, LiteRT), for
  clients that send whole images of any size.

The geometry (`crop_mode`):

- 'center': resize the shorter side to `floor(size / crop_pct)` and cut the central
  `size x size` (torchvision's `Resize(256)` + `CenterCrop(224)` is crop_pct 0.875): the
  ImageNet recipe's evaluation, and images trained over 64 px;
- 'squash': the whole image resized to `size x size`, whatever its aspect ratio: the small-image
  recipe (whole 28 or 32 px images, as the in-memory datasets train).

Both are one box of the original image resampled to the output size in one step, with Pillow's
filters (`interpolation` 'bilinear' or 'bicubic', widened when reducing: antialiased).

Pixels (`to_uint8`): 8-bit images as they are; 16-bit ones divided by 257 (65535 -> 255);
32-bit integer images within 0-65535 as 16-bit; float images within 0-1 times 255, within 0-255
as they are; anything else is refused. Palette images through RGBA, alpha dropped, then 'L'
(ITU-R 601 luma) or 'RGB' for the model's channel count.

    >>> record = Preprocessing.for_images(image_size=224, channels=3)
    >>> record.crop_mode, record.crop_pct, record.resize_size
    ('center', 0.875, 256)
"""

from __future__ import annotations

from keras_resnet.preprocessing.layers import _crop_resize_class
from keras_resnet.preprocessing.lookup import (
    KERAS_MEMBER,  # noqa: F401
    PREPROCESSING_KEY,  # noqa: F401
    add_record,
    data_config,
    read_keras_record,
    record_of_model,
)
from keras_resnet.preprocessing.pillow import (
    crop_array,
    crop_image,
    decode_image,  # noqa: F401
    load_image,
    max_decoded_pixels,  # noqa: F401
    open_image,
    preprocess,
    to_uint8,
)
from keras_resnet.preprocessing.record import (
    CROP_MODES,
    DEFAULT_CROP_PCT,  # noqa: F401
    INTERPOLATIONS,
    PIXEL_RULES,  # noqa: F401
    SMALL_IMAGE_MAX,  # noqa: F401
    ImageError,
    Preprocessing,
)


def __getattr__(name: str):
    # The layer class is made on first use, so that importing this module for the record alone
    # (a command's --help, the data pipelines' workers) imports no Keras backend.
    if name == "CropResize":
        return _crop_resize_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CROP_MODES",
    "add_record",
    "read_keras_record",
    "INTERPOLATIONS",
    "ImageError",
    "Preprocessing",
    "crop_array",
    "crop_image",
    "data_config",
    "load_image",
    "open_image",
    "preprocess",
    "record_of_model",
    "to_uint8",
]
