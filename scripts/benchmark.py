#!/usr/bin/env python
"""Training and inference throughput of keras_resnet models and their peers
(see `keras-resnet benchmark --help` and docs/PERFORMANCE.md)."""

import sys

from keras_resnet.cli import run

if __name__ == "__main__":
    sys.exit(run("benchmark"))
