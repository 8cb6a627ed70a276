#!/bin/bash
# The search's best configuration trained at full length with several seeds,
# several runs per GPU at once (a Fashion-MNIST step leaves an H200 partly idle), beside the
# default recipe. One `run` call, carry [".data/fashion-mnist", ".whl"], from the project root.
# Env: CONFIG (the search's best_config.json, default
#   docs/results/tuning/h200x2_search/best_config.json),
#   EPOCHS (default 100), SEEDS (default "0 1 2"; "" runs none), DEFAULT_SEEDS (default recipe seeds, default
#   none), OUT, PY, GPUS (default every GPU).
# Each run: scripts/train.py --config CONFIG --seed S --epochs EPOCHS (validation: 5,000 images
# held out of the training set; the test split is scored at the end and chooses nothing).
# Back ($OUT, at most 8 files): runs.tgz (every run folder without its model files: config.json,
# metrics.json with the flip-TTA test accuracy, history.csv, curves.png, train.log) and log.txt.
# BUDGET (s, default 560): runs still going then are stopped, and what they wrote is packed.
set -u
CONFIG=${CONFIG:-docs/results/tuning/h200x2_search/best_config.json}; EPOCHS=${EPOCHS:-100}
SEEDS=${SEEDS-0 1 2}; DEFAULT_SEEDS=${DEFAULT_SEEDS:-}; OUT=${OUT:-/tmp/final_out}; PY=${PY:-python3}
GPUS=${GPUS:-$(nvidia-smi -L | wc -l)}; BUDGET=${BUDGET:-560}
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} KERAS_BACKEND=jax
export XLA_PYTHON_CLIENT_PREALLOCATE=false JAX_COMPILATION_CACHE_DIR=/tmp/jax_cache
mkdir -p "$OUT"; START=$(date +%s)
COMMON="--source-dir .data/fashion-mnist --loader idx --precision mixed_bfloat16 \
  --steps-per-execution 8 --verbose 2 --no-tensorboard --epochs $EPOCHS"
n=0; PIDS=()
for s in $SEEDS; do
  CUDA_VISIBLE_DEVICES=$((n % GPUS)) "$PY" scripts/train.py --config "$CONFIG" $COMMON --seed "$s" \
    --output-dir "/tmp/final_$s" > "/tmp/final_$s.log" 2>&1 & PIDS+=($!); n=$((n + 1))
done
for s in $DEFAULT_SEEDS; do
  CUDA_VISIBLE_DEVICES=$((n % GPUS)) "$PY" scripts/train.py $COMMON --seed "$s" \
    --output-dir "/tmp/default_$s" > "/tmp/default_$s.log" 2>&1 & PIDS+=($!); n=$((n + 1))
done
nvidia-smi --query-gpu=timestamp,index,utilization.gpu,memory.used --format=csv -l 10 \
  > /tmp/final_util.csv 2>/dev/null & SMI=$!
while (( $(date +%s) - START < BUDGET )); do
  alive=0; for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
  (( alive )) || break; sleep 5
done
# (never a bare `wait`: nvidia-smi -l runs until killed)
kill "$SMI" 2>/dev/null; for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
sleep 2; for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null; done; wait "${PIDS[@]}" 2>/dev/null
{
  echo "runs: $n on $GPUS GPUs, epochs $EPOCHS, config $CONFIG, $(( $(date +%s) - START )) s"
  for f in /tmp/final_*.log /tmp/default_*.log; do
    [ -e "$f" ] && { echo "== $f"; grep -v "^Epoch\|^I0000\|^WARNING: All log" "$f" | tail -n 6; }
  done
  awk -F, 'NR > 1 { n[$2]++; u[$2] += $3 } END { for (g in n) printf "GPU %s mean util %.0f%%\n", g, u[g] / n[g] }' \
    /tmp/final_util.csv
} > "$OUT/log.txt"
for s in $SEEDS; do cp "/tmp/final_$s.log" "/tmp/final_$s/train.log" 2>/dev/null; done
for s in $DEFAULT_SEEDS; do cp "/tmp/default_$s.log" "/tmp/default_$s/train.log" 2>/dev/null; done
cp /tmp/final_util.csv "$OUT/gpu_util.csv"
dirs=(); for s in $SEEDS; do dirs+=("final_$s"); done; for s in $DEFAULT_SEEDS; do dirs+=("default_$s"); done
tar -C /tmp --exclude="*.keras" --exclude="*.h5" --exclude="backup" --exclude="logs" \
  -czf "$OUT/runs.tgz" "${dirs[@]}"
cat "$OUT/log.txt"
