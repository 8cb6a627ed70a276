#!/bin/bash
# One device call: ResNet-50 (224 px, batch 256, bf16) training step of our model with
# keras_resnet.layers.BatchNormalization (at that call: normalizing in bf16;
# since then in float32, which that call measured as the bn-f32-apply variant), beside the same model with
# Keras' BatchNormalization (--variants keras-bn, the model before), the bfloat16-apply variant,
# and the peers (keras.applications fit, torchvision eager and torch.compile), re-measured here.
# Env: OUT, PY. Each benchmark is its own process; JSON + table per run go to $OUT.
set -u
OUT=${OUT:-/tmp/perf_out}; PY=${PY:-python3}; mkdir -p "$OUT"
# Run from the checkout's root, on the path: the harness benchmarks/ (its --variants in
# benchmarks/variants.py) imports keras_resnet from there.
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || echo cpu) | tee "$OUT/device.txt"
B="$PY benchmarks/run.py --batch-size 256 --image-size 224 --precision mixed_bfloat16 --warmup 3"
run() {
  local name=$1 limit=$2; shift 2
  echo "== $name ($(date -u +%H:%M:%S) UTC): $B $*" | tee -a "$OUT/log.txt"
  timeout "$limit" $B "$@" --json "$OUT/$name.json" 2>&1 | grep -v cuInit | tail -30 | tee -a "$OUT/log.txt"
}
run headline 330 --models resnet50 --paths compiled,fit --steps 32 --steps-per-execution 4 \
  --peers keras-fit,torch,torch-compile
run keras_bn 110 --models resnet50 --paths compiled --steps 32 --steps-per-execution 4 \
  --no-inference --variants keras-bn --peers none
run bf16_apply 110 --models resnet50 --paths compiled --steps 32 --steps-per-execution 4 \
  --no-inference --variants bn-bf16-apply --peers none
