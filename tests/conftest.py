"""Test set-up shared by every test file.

Import order is owned here, not left to luck: with torch 2.14.1 and TensorFlow 2.21 in one process,
importing torchvision *after* TensorFlow (or after Keras on its TensorFlow backend) dies with a
segmentation fault, while importing it first works. pytest loads this file before any test module,
so torchvision (when installed) is imported before anything can pull in TensorFlow.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# TensorFlow 2.21's oneDNN kernels crashed small ResNet fits on this CPU ("double free or
# corruption", 5 of 5 runs; 0 of 5 with it off). Subprocesses that tests start inherit this too.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

try:
    import torchvision  # noqa: F401  (must precede tensorflow; see the docstring)
except ImportError:  # the parity tests skip themselves without torch
    pass
