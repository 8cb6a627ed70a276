#!/usr/bin/env bash
# Runs the test suite once per Keras backend (tensorflow, jax, torch). Extra arguments go to pytest,
# e.g. `scripts/test.sh -m "not slow"` or `KERAS_BACKENDS=jax scripts/test.sh tests/test_models.py`.
set -uo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
status=0
for backend in ${KERAS_BACKENDS:-tensorflow jax torch}; do
  echo "=== KERAS_BACKEND=$backend"
  KERAS_BACKEND=$backend "$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@" || status=1
done
exit $status
