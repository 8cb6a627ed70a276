"""keras_resnet: residual networks for Keras 3 (TensorFlow, JAX and PyTorch backends).

>>> import keras_resnet
>>> model = keras_resnet.ResNet18(num_classes=10)

The public names load on first use (PEP 562), so that `import keras_resnet.cli` can set the
Keras backend from a command line before Keras is imported.
"""

from __future__ import annotations

import importlib

__version__ = "0.3.0"

# public name -> module that defines it
_EXPORTS = {
    "ResNetConfig": "config",
    "ARCHITECTURES": "config",
    "DEPTHS": "models",
    "MODELS": "models",
    "ResNet": "models",
    "ResNet18": "models",
    "ResNet34": "models",
    "ResNet50": "models",
    "ResNet101": "models",
    "ResNet152": "models",
    "ResNeXt50_32x4d": "models",
    "ResNet18D": "models",
    "ResNet34D": "models",
    "ResNet50D": "models",
    "ResNet101D": "models",
    "ResNet152D": "models",
    "WideResNet50_2": "models",
    "basic_block": "models",
    "bottleneck_block": "models",
    "build_model": "models",
    "get_model": "models",
    "count_flops": "analysis",
    "count_params": "analysis",
    "format_table": "analysis",
    "walkthrough": "analysis",
    "load_torchvision_weights": "weights",
    "load_timm_weights": "weights",
    "load_weights": "weights",
    "read_state_dict": "weights",
    "adapt_input_conv": "weights",
    "feature_extractor": "features",
    "freeze_stages": "finetune",
    "freeze_backbone": "finetune",
    "unfreeze": "finetune",
    "DropPath": "layers",
    "PretrainedWeights": "pretrained",
    "register_weights": "pretrained",
    "list_weights": "pretrained",
    "get_weights": "pretrained",
    "weights_file": "pretrained",
    "resolve_weights": "pretrained",
    "imagenet_classes": "pretrained",
    "decode_predictions": "pretrained",
    "Preprocessing": "preprocessing",
    "preprocess": "preprocessing",
    "data_config": "preprocessing",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'keras_resnet' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"keras_resnet.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
