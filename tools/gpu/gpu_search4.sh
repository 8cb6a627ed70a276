#!/bin/bash
# Run once, cut short (docs/results/tuning/x2_partial/README.md). The distributed Hyperband search
# on one machine with 4 H200s, resumable across device calls of at most 10 minutes:
#   a KerasTuner chief (oracle only, on the CPU) + one worker per GPU (CUDA_VISIBLE_DEVICES=i),
#   each trial in a process of its own on its worker's GPU (Keras on JAX, bf16; no TensorFlow
#   on the GPU machine). After SEARCH_S seconds the workers and the chief are stopped; trials
#   cut short run again in the next call (KerasTuner's retry of RUNNING trials).
# What comes back ($OUT, at most 8 files of 16 MiB): state.tgz.part-aa.. (the search folder
#   without checkpoints: oracle, trial.json files, events.jsonl, definition), report/trials.md,
#   report/trials.csv, report/pareto.png, report/best_config.json, gpu_util.csv, search_log.txt.
# Next call: put the returned state.tgz.part-* into $STATE (an untracked, not ignored folder of
#   the checkout, or a carried path) and run this script again with the same SEARCH.
# Hyperband trials continued from a parent whose checkpoint did not travel (checkpoints of wide
#   networks are far over 128 MiB) train from scratch for all their epochs ('no_parent' events).
# A trial must fit in one call (SEARCH_S): otherwise it is cut and retried forever. On an H200
#   the default ResNet-18 trains about 1 s per Fashion-MNIST epoch (docs/TRAINING.md); a width-3
#   ResNet-34 is ~18x the FLOPs: ~27 epochs in ~400 s by that estimate, hence width <= 3 below.
# Env: BUDGET (s, whole script, default 560), SEARCH_S (s of search, default BUDGET - 80),
#   SEARCH (tune.py flags), STATE (folder of carried parts), OUT, PY, GPUS (default: every GPU),
#   PER_GPU (workers per GPU, default 1: a Fashion-MNIST ResNet-18 step leaves an H200 mostly
#   idle, so 2 workers a GPU run more trials an hour), PORT.
set -u
BUDGET=${BUDGET:-560}; SEARCH_S=${SEARCH_S:-$((BUDGET - 80))}
GPUS=${GPUS:-$(nvidia-smi -L | wc -l)}; PER_GPU=${PER_GPU:-1}
OUT=${OUT:-/tmp/tune4_out}; PY=${PY:-python3}; DIR=${DIR:-/tmp/tuning4}; PORT=${PORT:-8470}
STATE=${STATE:-docs/results/tuning/gpu4_state}; PROJECT=fmnist4
SEARCH=${SEARCH:---tuner hyperband --max-epochs 27 --max-trials 300 \
  --train-fraction 1.0 --validation-fraction 0.1 \
  --depths 18 34 --custom-stages 4-4-4 --block-kinds basic bottleneck \
  --expansion-min 2 --expansion-max 4 --width-min 1 --width-max 3 --width-step 0.5 \
  --stems cifar --downsamples conv avg --drop-path-rate-min 0 --drop-path-rate-max 0.2 \
  --lr-min 0.05 --lr-max 0.4 --weight-decay-min 2e-3 --weight-decay-max 1e-2 \
  --label-smoothing-min 0 --label-smoothing-max 0.2 --erasing-min 0 --erasing-max 0.6}
COMMON="--source-dir .data/fashion-mnist --loader idx --precision mixed_bfloat16 \
  --steps-per-execution 8 --directory $DIR --project-name $PROJECT --final-epochs 0 --quiet"
START=$(date +%s)
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} KERAS_BACKEND=jax
export XLA_PYTHON_CLIENT_PREALLOCATE=false JAX_COMPILATION_CACHE_DIR=/tmp/jax_cache
export KERASTUNER_ORACLE_IP=127.0.0.1 KERASTUNER_ORACLE_PORT=$PORT
mkdir -p "$OUT" "$DIR"
# keras-tuner's distributed mode needs grpcio (a binary wheel: put one for cp312 in .whl/).
"$PY" -c "import keras_tuner, grpc" 2>/dev/null ||
  "$PY" -m pip install -q --no-index --find-links .whl keras_tuner grpcio ||
  { echo "keras_tuner and grpcio are needed (wheels in .whl/)" | tee "$OUT/search_log.txt"; exit 1; }
if ls "$STATE"/state.tgz.part-* >/dev/null 2>&1; then
  cat "$STATE"/state.tgz.part-* | tar -C "$DIR" -xzf - && echo "resumed from $STATE"
fi
nvidia-smi --query-gpu=timestamp,index,utilization.gpu,memory.used --format=csv -l 5 \
  > "$OUT/gpu_util.csv" 2>/dev/null & SMI=$!
# The chief serves the oracle and trains nothing: keep it off the GPUs.
CUDA_VISIBLE_DEVICES="" JAX_PLATFORMS=cpu KERASTUNER_TUNER_ID=chief \
  setsid "$PY" scripts/tune.py $COMMON $SEARCH > "$OUT/chief.log" 2>&1 & CHIEF=$!
for _ in $(seq 120); do (echo > /dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 1; done
WORKERS=()
# Killed from outside (the call's limit): stop everything and still pack what is there.
finish() {
  for pid in "${WORKERS[@]}" "$CHIEF"; do kill -KILL -- "-$pid" 2>/dev/null; done
  tar -C "$DIR" --exclude="*.h5" --exclude="*.keras" --exclude="*.pkl" -czf - "$PROJECT" |
    split -b 16M - "$OUT/state.tgz.part-"
  exit 124
}
trap finish TERM INT
for ((i = 0; i < GPUS * PER_GPU; i++)); do
  CUDA_VISIBLE_DEVICES=$((i % GPUS)) KERASTUNER_TUNER_ID=tuner$i \
    setsid "$PY" scripts/tune.py $COMMON $SEARCH > "$OUT/worker$i.log" 2>&1 & WORKERS+=($!)
done
# Stop at SEARCH_S (or earlier when every worker is done): workers first (their trial processes
# die with them), then the chief. Each is its own process group (setsid).
while (( $(date +%s) - START < SEARCH_S )); do
  alive=0; for pid in "${WORKERS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
  (( alive )) || break; sleep 5
done
for pid in "${WORKERS[@]}"; do kill -TERM -- "-$pid" 2>/dev/null; done; sleep 5
for pid in "${WORKERS[@]}"; do kill -KILL -- "-$pid" 2>/dev/null; done
kill -TERM -- "-$CHIEF" 2>/dev/null; sleep 3; kill -KILL -- "-$CHIEF" 2>/dev/null
kill "$SMI" 2>/dev/null
echo "search stopped after $(( $(date +%s) - START )) s" | tee "$OUT/search_log.txt"
tail -n 5 "$OUT"/worker*.log "$OUT/chief.log" >> "$OUT/search_log.txt"
rm -f "$OUT"/worker*.log "$OUT/chief.log"
"$PY" scripts/tune.py --report-only --directory "$DIR" --project-name "$PROJECT" > /dev/null &&
  cp -r "$DIR/$PROJECT/report" "$OUT/"
# The state without checkpoints; parts of 16 MiB (a search of a few hundred trials is < 1 MiB).
tar -C "$DIR" --exclude="*.h5" --exclude="*.keras" --exclude="*.pkl" --exclude="report" -czf - "$PROJECT" |
  split -b 16M - "$OUT/state.tgz.part-"
ls -la "$OUT" "$OUT/report" | tee -a "$OUT/search_log.txt"
echo "total $(( $(date +%s) - START )) s" | tee -a "$OUT/search_log.txt"
