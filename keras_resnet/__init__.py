"""keras_resnet: residual networks for Keras 3 (TensorFlow, JAX and PyTorch backends).

>>> import keras_resnet
>>> model = keras_resnet.ResNet18(num_classes=10)
"""

from keras_resnet.analysis import count_flops, count_params, format_table, walkthrough
from keras_resnet.models import (
    DEPTHS,
    MODELS,
    ResNet,
    ResNet18,
    ResNet34,
    ResNet50,
    ResNet101,
    ResNet152,
    ResNeXt50_32x4d,
    WideResNet50_2,
    basic_block,
    bottleneck_block,
    get_model,
)
from keras_resnet.weights import load_torchvision_weights

__version__ = "0.1.0"

__all__ = [
    "DEPTHS",
    "MODELS",
    "ResNet",
    "ResNet18",
    "ResNet34",
    "ResNet50",
    "ResNet101",
    "ResNet152",
    "ResNeXt50_32x4d",
    "WideResNet50_2",
    "basic_block",
    "bottleneck_block",
    "count_flops",
    "count_params",
    "format_table",
    "get_model",
    "load_torchvision_weights",
    "walkthrough",
]
