#!/bin/bash
# The final training of a GPU search's best configuration, in one device call: the search project
# that gpu_search.sh returned with FINAL_MAX=0 (project.tgz, no weights) is unpacked, its best
# trial trained on the full train set (JAX, bf16) for as many epochs as fit TRAIN_S seconds.
# Results (final_metrics.json, final_history.csv, final_curves.png, final_config.json,
# final_tuning.json, final_log.txt, final_device.txt) go to $OUT.
# Env: PROJECT_TGZ, TRAIN_S (s the training should take), LIMIT_S (s after which it is killed),
# MIN_EPOCHS, MAX_EPOCHS, OUT, PY, DIR, DRY_RUN (1: print the plan, train nothing).
set -u
PROJECT_TGZ=${PROJECT_TGZ:?set PROJECT_TGZ to a packed search project (tar -czf of its folder)}
TRAIN_S=${TRAIN_S:-480}; LIMIT_S=${LIMIT_S:-540}; MIN_EPOCHS=${MIN_EPOCHS:-10}
MAX_EPOCHS=${MAX_EPOCHS:-100}; DRY_RUN=${DRY_RUN:-0}
OUT=${OUT:-/tmp/final_out}; PY=${PY:-python3}; DIR=${DIR:-/tmp/tuning}; RUN=/tmp/final
START=$(date +%s)
mkdir -p "$OUT" "$DIR"
GPU=$(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo cpu)
echo "$GPU" | tee "$OUT/final_device.txt"
tar -C "$DIR" -xzf "$PROJECT_TGZ" || { echo "cannot unpack $PROJECT_TGZ"; exit 1; }
[ "$DRY_RUN" = 1 ] || rm -rf "$RUN"  # a fresh run, not a resumed or reused one
# history.csv goes to $OUT every 15 s, so that a run cut short still reports its epochs.
(while sleep 15; do cp "$RUN/history.csv" "$OUT/final_history.csv" 2>/dev/null; done) & COPIER=$!
set -o pipefail
timeout "$LIMIT_S" "$PY" - "$DIR/fmnist" "$GPU" "$TRAIN_S" "$MIN_EPOCHS" "$MAX_EPOCHS" \
  "$DRY_RUN" <<'PY' 2>&1 | grep -v -e cuInit -e cuda_timer.cc | tee "$OUT/final_log.txt"
import json, sys, time
import keras_resnet
from keras_resnet import tuning
project, gpu = sys.argv[1], sys.argv[2]
train_s, min_e, max_e, dry = float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
best = tuning.best_trial(tuning.read_trials(project))
ref = keras_resnet.count_flops(keras_resnet.ResNet18(stem="cifar", num_classes=10,
                                                     input_shape=(28, 28, 1)))
ratio = best.flops / ref
# The default ResNet-18 (cifar stem, 28x28) trains ~60k images/s in bf16 on an H200: ~1.4 s an
# epoch with the test pass (docs/results/resnet18_fashion_mnist_h200_100ep_metrics.json),
# scaled by FLOPs; an H100 taken as 30% slower; ~40 s of compilation.
slower = 1.3 if "H100" in gpu else 1.0
epoch_s = 1.4 * max(1.0, ratio) * slower
compile_s = 40.0
epochs = max(min_e, min(max_e, int((train_s - compile_s) / epoch_s)))
print(f"best trial {best.trial_id}: {tuning.describe(best.config)}, "
      f"lr {best.values.get('learning_rate'):.4g}, wd {best.values.get('weight_decay'):.4g}; "
      f"val accuracy {best.val_accuracy:.4f}", flush=True)
print(f"params {best.params:,}, {best.flops / 1e6:.1f} MFLOPs ({ratio:.2f} x ResNet-18's "
      f"{ref / 1e6:.1f}); search trial took {best.seconds:.1f} s for {best.epochs} epochs", flush=True)
print(f"device {gpu}: ~{epoch_s:.1f} s/epoch + {compile_s:.0f} s -> {epochs} epochs "
      f"(~{compile_s + epochs * epoch_s:.0f} s of {train_s:.0f})", flush=True)
if dry == "1":
    sys.exit(0)
options = tuning.SearchOptions(source_dir=".data/fashion-mnist", precision="mixed_bfloat16",
                               steps_per_execution=8, final_epochs=epochs, verbose=2,
                               output_dir="/tmp", run_name="final")
start = time.perf_counter()
result = tuning.train_best(project, options)
print(json.dumps(result, indent=1, default=str))
print(f"train_best took {time.perf_counter() - start:.1f} s", flush=True)
PY
RC=$?
kill $COPIER 2>/dev/null
for f in metrics.json history.csv curves.png config.json tuning.json; do
  cp "$RUN/$f" "$OUT/final_$f" 2>/dev/null || echo "no $RUN/$f"
done
echo "exit $RC; total $(( $(date +%s) - START )) s" | tee -a "$OUT/final_log.txt"
exit $RC
