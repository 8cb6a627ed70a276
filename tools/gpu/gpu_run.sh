#!/bin/bash
# The GPU accuracy run of docs/TRAINING.md: the default recipe (ResNet-18, CIFAR stem,
# Fashion-MNIST) on the JAX backend, with bf16, XLA and 8 steps per execution.
# EPOCHS=default: train.py's default number of epochs. EPOCHS unset: as many as fit the time
# budget, from a 3-epoch probe that measures images/s first.
# Env: BUDGET (s, whole script), EPOCHS, MAX_EPOCHS, PROBE_SIZE, EXTRA (more flags), OUT, PY.
set -u
BUDGET=${BUDGET:-500}; MAX_EPOCHS=${MAX_EPOCHS:-100}; PROBE_SIZE=${PROBE_SIZE:-25600}
OUT=${OUT:-/tmp/gpu_out}; EXTRA=${EXTRA:-}; PY=${PY:-python3}
# The scripts are thin shims over the package: run from the checkout's root, which goes on the path.
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
START=$(date +%s)
mkdir -p "$OUT"
export JAX_COMPILATION_CACHE_DIR=/tmp/jax_cache  # the main run reuses the probe's compilations
COMMON="--source-dir .data/fashion-mnist --precision mixed_bfloat16 --steps-per-execution 8 --verbose 2 $EXTRA"
(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || echo cpu) | tee "$OUT/device.txt"
if [ "${EPOCHS:-}" = default ]; then
  EPOCHS_FLAG=""
else
"$PY" scripts/train.py $COMMON --epochs 3 --train-size "$PROBE_SIZE" --val-size 0 --no-track-test \
  --output-dir /tmp/probe 2>&1 | grep -v cuInit | tail -4
IPS=$("$PY" -c "import json; print(json.load(open('/tmp/probe/metrics.json'))['images_per_s'])")
LEFT=$((BUDGET - ($(date +%s) - START)))
EPOCHS=$("$PY" -c "
ips, left = $IPS, $LEFT
epoch = 55000 / ips + 15000 / (3 * ips) + 0.5   # train + validation/test forward + overhead
print(max(1, min($MAX_EPOCHS, int((left - 120) / epoch))))")
echo "probe: $IPS images/s; $LEFT s left -> $EPOCHS epochs" | tee "$OUT/plan.txt"
EPOCHS_FLAG="--epochs $EPOCHS"
fi
T0=$(date +%s)
# history.csv goes to $OUT every 15 s, so that a run cut short still reports its epochs.
(while sleep 15; do cp /tmp/run/history.csv "$OUT/" 2>/dev/null; done) & COPIER=$!
timeout $((BUDGET - (T0 - START) - 15)) "$PY" scripts/train.py $COMMON $EPOCHS_FLAG \
  --output-dir /tmp/run 2>&1 | grep -v cuInit | tee "$OUT/train_log.txt"
kill $COPIER
echo "train.py process wall time: $(( $(date +%s) - T0 )) s" | tee -a "$OUT/plan.txt"
cp /tmp/run/metrics.json /tmp/run/history.csv /tmp/run/curves.png /tmp/run/config.json "$OUT/" 2>/dev/null
ls -la /tmp/run
