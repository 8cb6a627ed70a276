#!/bin/bash
# The GPU search of docs/TUNING.md, in one device call: scripts/tune.py on Fashion-MNIST (JAX,
# bf16), then the best configuration trained on the full train set for as many epochs (up to
# FINAL_MAX) as the time left allows. Results (search report, final metrics) go to $OUT.
# Env: BUDGET (s, whole script), SEARCH_S (s of search), FINAL_MAX (0: search only), SEARCH
# (tune.py flags), OUT, PY. JAX_COMPILATION_CACHE_DIR is honoured by JAX itself.
set -u
BUDGET=${BUDGET:-520}; SEARCH_S=${SEARCH_S:-$((BUDGET * 45 / 100))}; FINAL_MAX=${FINAL_MAX:-100}
OUT=${OUT:-/tmp/tune_out}; PY=${PY:-python3}; DIR=${DIR:-/tmp/tuning}
SEARCH=${SEARCH:---tuner random --max-trials 40 --max-epochs 3 --train-fraction 0.5 \
  --depths 18 34 --block-kinds basic bottleneck --expansion-min 2 --expansion-max 4 \
  --width-min 0.5 --width-max 1.5 --width-step 0.25 --lr-min 0.1 --lr-max 0.4 \
  --weight-decay-min 2e-3 --weight-decay-max 1e-2}
START=$(date +%s)
mkdir -p "$OUT"
(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || echo cpu) | tee "$OUT/device.txt"
# The search's events and trials go to $OUT every 15 s, so that a call cut short still reports.
(while sleep 15; do cp "$DIR/fmnist/events.jsonl" "$OUT/" 2>/dev/null
  "$PY" scripts/tune.py --report-only --directory "$DIR" --project-name fmnist >/dev/null 2>&1 &&
  cp -r "$DIR/fmnist/report" "$OUT/" 2>/dev/null; done) & COPIER=$!
timeout $((BUDGET - 60)) "$PY" scripts/tune.py --source-dir .data/fashion-mnist $SEARCH \
  --max-search-seconds "$SEARCH_S" --precision mixed_bfloat16 --steps-per-execution 8 \
  --directory "$DIR" --project-name fmnist --final-epochs 0 --quiet 2>&1 \
  | grep -v cuInit | tail -40 | tee "$OUT/search_log.txt"
echo "search done after $(( $(date +%s) - START )) s" | tee "$OUT/plan.txt"
cp -r "$DIR/fmnist/report" "$DIR/fmnist/events.jsonl" "$DIR/fmnist/keras_resnet_search.json" "$OUT/"
tar -C "$DIR" --exclude="*.h5" --exclude="*.keras" --exclude="checkpoint*" -czf "$OUT/project.tgz" fmnist
LEFT=$((BUDGET - ($(date +%s) - START)))
if [ "$FINAL_MAX" = 0 ]; then kill $COPIER; echo "FINAL_MAX=0: no final training"; exit 0; fi
# Final training: epoch time estimated from FLOPs against the default ResNet-18 (H200, bf16:
# ~60k train images/s, docs/results/resnet18_fashion_mnist_h200_100ep_metrics.json).
(while sleep 15; do cp /tmp/final/history.csv "$OUT/final_history.csv" 2>/dev/null; done) & COPIER2=$!
timeout $((LEFT - 10)) "$PY" - "$DIR/fmnist" "$LEFT" "$FINAL_MAX" <<'PY' 2>&1 | grep -v cuInit | tee "$OUT/final_log.txt"
import json, sys
import keras_resnet
from keras_resnet import tuning
project, left, final_max = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
best = tuning.best_trial(tuning.read_trials(project))
ref = keras_resnet.count_flops(keras_resnet.ResNet18(stem="cifar", num_classes=10,
                                                     input_shape=(28, 28, 1)))
epoch_s = 1.4 * 60000 / 60000 * max(1.0, best.flops / ref)  # train + per-epoch test pass
epochs = max(1, min(final_max, int((left - 55) / epoch_s)))
print(f"best trial {best.trial_id}: {tuning.describe(best.config)}, {best.flops / 1e6:.0f} "
      f"MFLOPs ({best.flops / ref:.2f} x ResNet-18); {left:.0f} s left -> {epochs} epochs",
      flush=True)
options = tuning.SearchOptions(source_dir=".data/fashion-mnist", precision="mixed_bfloat16",
                               steps_per_execution=8, final_epochs=epochs, verbose=2,
                               output_dir="/tmp", run_name="final")
print(json.dumps(tuning.train_best(project, options), indent=1, default=str))
PY
kill $COPIER $COPIER2 2>/dev/null
cp /tmp/final/metrics.json /tmp/final/history.csv /tmp/final/curves.png /tmp/final/config.json \
  /tmp/final/tuning.json "$OUT/" 2>/dev/null
echo "total $(( $(date +%s) - START )) s" | tee -a "$OUT/plan.txt"
