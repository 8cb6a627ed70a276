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

import importlib

# public name -> the submodule that defines it. The names load on first use (PEP 562), so
# that the command lines build their flags from the option dataclasses without Keras.
_EXPORTS = {
    "INPUT_NAME": "convert",
    "as_float32": "convert",
    "check_channels_last": "convert",
    "inference_model": "convert",
    "model_info": "convert",
    "serving_model": "convert",
    "FORMATS": "export",
    "check_parity": "export",
    "export_model": "export",
    "resolve_source": "export",
    "write_artifact": "export",
    "CLASS_NAMES_FILE": "files",
    "KERAS_FILE": "files",
    "METADATA_FILE": "files",
    "ONNX_FILE": "files",
    "class_names_or_indices": "files",
    "latest_version": "files",
    "load_keras_model": "files",
    "model_config": "files",
    "read_class_names": "files",
    "read_metadata": "files",
    "run_model_options": "files",
    "Predictor": "predict",
    "load_predictor": "predict",
    "predict_images": "predict",
    "prepare_image": "predict",
    "read_image": "predict",
    "to_channels": "predict",
    "top_k": "predict",
    "check_saved_model": "safety",
    "scan_saved_model": "safety",
}

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


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    else:
        try:  # a submodule not imported yet
            value = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
