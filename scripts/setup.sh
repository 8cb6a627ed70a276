#!/usr/bin/env bash
# One-time set-up: a virtual environment ($VENV, default .venv) with this package installed in it.
# Safe to run again.
#
#   ./scripts/setup.sh          # the package and its test extras (TensorFlow, JAX, PyTorch +
#   ./scripts/setup.sh test     #   torchvision, timm, ONNX, KerasTuner, pytest): what
#                               #   scripts/test.sh needs
#   ./scripts/setup.sh core     # the package and its core dependencies: enough for
#                               #   `keras-resnet train` and the quick start
#
# Fashion-MNIST needs nothing here: training reads a local copy when there is one, else it
# downloads it once through keras.datasets. Run as root on Debian/Ubuntu, the script also installs
# Debian's dataset-fashion-mnist, which training then reads offline.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
MODE=${1:-test}

case "$MODE" in
  core) target="." check="import keras_resnet, keras, tensorflow_datasets, keras_tuner" ;;
  test) target=".[test]" check="import keras_resnet, keras, tensorflow_datasets, keras_tuner, pytest" ;;
  *) echo "setup: unknown mode '$MODE': use 'core' or 'test'" >&2; exit 2 ;;
esac

# Optional fast path: Debian's Fashion-MNIST files, read offline. Never required.
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] \
  && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  { apt-get install -y -q dataset-fashion-mnist \
      || { apt-get update -q && apt-get install -y -q dataset-fashion-mnist; }; } >/dev/null 2>&1 \
    || echo "setup: dataset-fashion-mnist not installed; training will use keras.datasets"
fi

if [ ! -x "$VENV/bin/python" ]; then
  if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    echo "setup: needs Python 3.10 or newer as \$PYTHON (now: $("$PYTHON" --version 2>&1))" >&2
    exit 1
  fi
  if "$PYTHON" -m venv --help >/dev/null 2>&1 && "$PYTHON" -c "import ensurepip" 2>/dev/null; then
    "$PYTHON" -m venv "$VENV"
  elif "$PYTHON" -m virtualenv --version >/dev/null 2>&1; then
    "$PYTHON" -m virtualenv -q "$VENV"
  else
    echo "setup: $PYTHON cannot create a virtual environment (no venv/ensurepip): run" \
      "'apt-get install python3-venv', or '$PYTHON -m pip install --user virtualenv'" >&2
    exit 1
  fi
fi

# pipefail: the status is pip's; grep only hides a harmless notice from this machine's pip.conf.
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$target" 2>&1 \
  | { grep -v "is ignored: it is neither a file nor a directory" || true; }
"$VENV/bin/python" -c "$check; print('setup: ok ($MODE), keras', keras.__version__)"
