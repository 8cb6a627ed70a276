#!/usr/bin/env python
"""Train a keras_resnet model and write saved_models/<run>/ (see `keras-resnet train --help`)."""

import sys

from keras_resnet.cli import run

if __name__ == "__main__":
    sys.exit(run("train"))
