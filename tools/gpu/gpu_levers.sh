#!/bin/bash
# One device call: two levers of the ResNet-50 step measured one at a time (224 px, bf16,
# synthetic data on the GPU): batch 384 beside torch.compile at the same batch, and 8 steps per
# execution at batch 512 (the batch-512 figure with 4 is in docs/results/perf/).
# Env: OUT, PY. Each benchmark is its own process; JSON + table per run go to $OUT.
set -u
OUT=${OUT:-/tmp/levers_out}; PY=${PY:-python3}; mkdir -p "$OUT"
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || echo cpu) | tee "$OUT/device.txt"
B="$PY benchmarks/run.py --models resnet50 --image-size 224 --precision mixed_bfloat16 --warmup 3 \
  --steps 16 --paths compiled --no-inference"
run() {
  local name=$1 limit=$2; shift 2
  echo "== $name ($(date -u +%H:%M:%S) UTC): $B $*" | tee -a "$OUT/log.txt"
  timeout "$limit" $B "$@" --json "$OUT/$name.json" 2>&1 | grep -v cuInit | tail -20 | tee -a "$OUT/log.txt"
}
run b384_spe4 200 --batch-size 384 --steps-per-execution 4 --peers torch-compile
run b512_spe8 130 --batch-size 512 --steps-per-execution 8 --peers none
