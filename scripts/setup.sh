#!/usr/bin/env bash
# One-time set-up on a fresh Debian/Ubuntu machine: Debian's Fashion-MNIST files, a virtual
# environment ($VENV, default .venv) and this package with its test extras (TensorFlow, JAX,
# PyTorch + torchvision, ONNX, KerasTuner, pytest). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}

if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null; }
  else
    echo "setup: Fashion-MNIST not found; run: sudo apt-get install dataset-fashion-mnist" >&2
  fi
fi

[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
# torch==2.14.1 / torchvision==0.29.1 (pinned in the 'torch' extra) install from this machine's disk.
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[test]" 2>&1 \
  | grep -v "is ignored: it is neither a file nor a directory" || true
"$VENV/bin/python" -c "import keras_resnet, keras, tensorflow_datasets, keras_tuner; print('setup: ok, keras', keras.__version__)"
