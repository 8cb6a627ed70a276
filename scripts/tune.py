#!/usr/bin/env python
"""Search architectures and recipes with KerasTuner (see `keras-resnet tune --help`)."""

import sys

from keras_resnet.cli import run

if __name__ == "__main__":
    sys.exit(run("tune"))
