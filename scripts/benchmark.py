#!/usr/bin/env python
"""Training and inference throughput of one keras_resnet model (see `keras-resnet benchmark
--help`); the full harness with peers is `python benchmarks/run.py` (docs/PERFORMANCE.md)."""

import sys

from keras_resnet.cli import run

if __name__ == "__main__":
    sys.exit(run("benchmark"))
