#!/usr/bin/env bash
# Runs the test suite once per Keras backend (tensorflow, jax, torch). By default the tests
# marked `slow` (long trainings, kill soaks, big-model parity at 224 px, multi-process searches)
# are left out, so that the three backends run in CI's time; `--all` runs them too. Tests of
# backend-agnostic logic (marked `one_backend` in tests/conftest.py) run on one backend only;
# KERAS_RESNET_EVERY_BACKEND=1 runs them on each.
# Extra arguments go to pytest, e.g. `scripts/test.sh -k parity` or
# `KERAS_BACKENDS=jax scripts/test.sh tests/test_models.py`.
set -uo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
markers=(-m "not slow")
if [ "${1:-}" = "--all" ]; then markers=(); shift; fi
status=0
for backend in ${KERAS_BACKENDS:-tensorflow jax torch}; do
  echo "=== KERAS_BACKEND=$backend"
  start=$(date +%s)
  KERAS_BACKEND=$backend "$VENV/bin/python" -m pytest -q -p no:cacheprovider --durations=15 \
    "${markers[@]}" "$@" || status=1
  echo "=== KERAS_BACKEND=$backend: $(( $(date +%s) - start )) s"
done
exit $status
