#!/bin/bash
# One device call: ResNet-18 (CIFAR stem) on Fashion-MNIST, wall time to 95% test
# accuracy with short schedules of the default recipe (train.py; all 60k training images, no
# validation split, the test split evaluated after every epoch), then the real-data throughput
# of the training module beside the device-resident synthetic step, with the recipe's extras
# switched off one run to cost them.
# Env: RUNS ("epochs:batch:lr[:flag,flag] ...", flags given to train.py), THROUGHPUT (0: skip the
# throughput part), OUT, PY. With JAX_COMPILATION_CACHE_DIR set, the runs share
# XLA's persistent cache: a repeated configuration measures a warm start.
set -u
OUT=${OUT:-/tmp/t95_out}; PY=${PY:-python3}; mkdir -p "$OUT"
# Run from the checkout's root, which goes on the path (scripts/ and benchmarks/ import keras_resnet).
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
RUNS=${RUNS:-"30:256:0.2 40:256:0.2 30:512:0.4"}
(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || echo cpu) | tee "$OUT/device.txt"
COMMON="--source-dir .data/fashion-mnist --precision mixed_bfloat16 --steps-per-execution 8 --verbose 2 --no-tensorboard"
i=0
for r in $RUNS; do
  i=$((i + 1)); IFS=: read -r E BS LR FLAGS <<<"$r"; name="run${i}_e${E}_b${BS}"
  T0=$(date +%s)
  echo "== $name ($(date -u +%H:%M:%S) UTC) ${FLAGS:-}" | tee -a "$OUT/log.txt"
  timeout 200 "$PY" scripts/train.py $COMMON --epochs "$E" --batch-size "$BS" --learning-rate "$LR" \
    --val-size 0 ${FLAGS//,/ } --output-dir "/tmp/$name" 2>&1 | grep -v cuInit | tail -3 | tee -a "$OUT/log.txt"
  echo "$name process wall: $(( $(date +%s) - T0 )) s" | tee -a "$OUT/log.txt"
  for f in metrics.json history.csv; do cp "/tmp/$name/$f" "$OUT/${name}_$f" 2>/dev/null; done
done
[ "${THROUGHPUT:-1}" = 0 ] && exit 0
# Throughput: synthetic and real data in the compiled step, and the training module (pipeline).
timeout 150 "$PY" benchmarks/run.py --models resnet18 --stem cifar --image-size 28 --num-classes 10 \
  --batch-size 256 --precision mixed_bfloat16 --data both --paths compiled,pipeline --no-inference \
  --peers none --steps 40 --pipeline-epochs 3 --steps-per-execution 8 --json "$OUT/realdata.json" 2>&1 \
  | grep -v cuInit | tail -14 | tee -a "$OUT/log.txt"
# The training module without its extras (no augmentation, label smoothing, weight decay).
timeout 90 "$PY" scripts/train.py $COMMON --epochs 3 --val-size 0 --no-track-test --no-augment \
  --label-smoothing 0 --weight-decay 0 --output-dir /tmp/plain 2>&1 | grep -v cuInit | tail -2 | tee -a "$OUT/log.txt"
cp /tmp/plain/metrics.json "$OUT/plain_metrics.json" 2>/dev/null
