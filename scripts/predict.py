#!/usr/bin/env python
"""Classify images with a trained or exported model (see `keras-resnet predict --help`)."""

import sys

from keras_resnet.cli import run

if __name__ == "__main__":
    sys.exit(run("predict"))
