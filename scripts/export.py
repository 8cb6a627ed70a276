#!/usr/bin/env python
"""Export a trained model for serving (see `keras-resnet export --help`)."""

import sys

from keras_resnet.cli import run

if __name__ == "__main__":
    sys.exit(run("export"))
