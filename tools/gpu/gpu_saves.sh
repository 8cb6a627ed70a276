#!/bin/bash
# One device call: what the per-epoch saves and a cold start cost. Fashion-MNIST ResNet-18
# (CIFAR stem), the default recipe at 40 epochs (batch 256, lr 0.2, bf16, 8 steps per
# execution, no validation split, the test split scored every epoch), four runs one after the
# other on one GPU:
#   saves_cold   backup + best checkpoint every epoch (the default), empty compilation cache
#   nosave_cold  --no-backup --no-checkpoint, another empty compilation cache
#   saves_warm   as saves_cold, its compilation cache filled by saves_cold
#   nosave_warm  as nosave_cold, its cache filled by nosave_cold
# Back ($OUT): log.txt and each run's metrics.json and history.csv (save_wait_s per epoch).
# Env: OUT, PY, EPOCHS (40), BUDGET (s, 560: runs not started by then are skipped).
set -u
OUT=${OUT:-/tmp/saves_out}; PY=${PY:-python3}; EPOCHS=${EPOCHS:-40}; BUDGET=${BUDGET:-560}
mkdir -p "$OUT"; START=$(date +%s)
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
unset JAX_COMPILATION_CACHE_DIR
(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || echo cpu) | tee "$OUT/device.txt"
COMMON="--source-dir .data/fashion-mnist --loader idx --precision mixed_bfloat16 --steps-per-execution 8 \
  --verbose 2 --no-tensorboard --epochs $EPOCHS --batch-size 256 --learning-rate 0.2 --val-size 0"
for spec in saves_cold:/tmp/cc_saves: nosave_cold:/tmp/cc_nosave:--no-backup,--no-checkpoint \
            saves_warm:/tmp/cc_saves: nosave_warm:/tmp/cc_nosave:--no-backup,--no-checkpoint; do
  IFS=: read -r name cache flags <<<"$spec"
  left=$(( BUDGET - ($(date +%s) - START) ))
  if (( left < 60 )); then echo "$name: skipped (budget)" | tee -a "$OUT/log.txt"; continue; fi
  T0=$(date +%s)
  echo "== $name ($(date -u +%H:%M:%S) UTC) cache $cache ${flags//,/ }" | tee -a "$OUT/log.txt"
  timeout "$left" "$PY" scripts/train.py $COMMON --compilation-cache "$cache" ${flags//,/ } \
    --output-dir "/tmp/$name" 2>&1 | grep -v "cuInit\|^Epoch" | tail -3 | tee -a "$OUT/log.txt"
  echo "$name process wall: $(( $(date +%s) - T0 )) s; cache files: $(find "$cache" -type f | wc -l)" \
    | tee -a "$OUT/log.txt"
  for f in metrics.json history.csv; do cp "/tmp/$name/$f" "$OUT/${name}_$f" 2>/dev/null; done
done
