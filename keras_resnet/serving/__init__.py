"""Serving a trained model: export it (SavedModel, ONNX, portable `.keras`) and classify images
with a trained or exported model.

- `convert`: the model as the export traces it (`inference_model`, `as_float32`,
  `serving_model`);
- `export`: `export_model` (atomic, numbered versions), `write_artifact`, `check_parity`;
- `predict`: `Predictor`, `load_predictor`, `read_image`, `prepare_image`, `top_k`,
  `predict_images`;
- `files`: class names, export metadata, a run's architecture, `load_keras_model`;
- `safety`: the SavedModel scan (a SavedModel is a program).
"""

from keras_resnet.serving.convert import (
    INPUT_NAME,
    as_float32,
    check_channels_last,
    inference_model,
    model_info,
    serving_model,
)
from keras_resnet.serving.export import (
    FORMATS,
    check_parity,
    export_model,
    resolve_source,
    write_artifact,
)
from keras_resnet.serving.files import (
    CLASS_NAMES_FILE,
    KERAS_FILE,
    METADATA_FILE,
    ONNX_FILE,
    class_names_or_indices,
    latest_version,
    load_keras_model,
    model_config,
    read_class_names,
    read_metadata,
    run_model_options,
)
from keras_resnet.serving.predict import (
    Predictor,
    load_predictor,
    predict_images,
    prepare_image,
    read_image,
    to_channels,
    top_k,
)
from keras_resnet.serving.safety import check_saved_model, scan_saved_model

__all__ = [
    "CLASS_NAMES_FILE",
    "FORMATS",
    "INPUT_NAME",
    "KERAS_FILE",
    "METADATA_FILE",
    "ONNX_FILE",
    "Predictor",
    "as_float32",
    "check_channels_last",
    "check_parity",
    "check_saved_model",
    "class_names_or_indices",
    "export_model",
    "inference_model",
    "latest_version",
    "load_keras_model",
    "load_predictor",
    "model_config",
    "model_info",
    "predict_images",
    "prepare_image",
    "read_class_names",
    "read_image",
    "read_metadata",
    "resolve_source",
    "run_model_options",
    "scan_saved_model",
    "serving_model",
    "to_channels",
    "top_k",
    "write_artifact",
]
