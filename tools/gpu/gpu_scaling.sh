#!/bin/bash
# One device call on a 2-GPU machine: ResNet-50 (224 px, batch 256 per GPU, bf16,
# steps_per_execution 4) on 1 GPU, on 2 GPUs with device-local batch norm (shard_map + one
# gradient all-reduce, PyTorch DDP's semantics, the default of --devices), and on 2 GPUs with
# batch norm over the global batch (--sync-batch-norm, XLA SPMD). Env: OUT, PY.
set -u
OUT=${OUT:-/tmp/scaling_out}; PY=${PY:-python3}; mkdir -p "$OUT"
# Run from the checkout's root, which goes on the path (the harness benchmarks/ imports keras_resnet).
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || echo cpu) | tee "$OUT/device.txt"
B="$PY benchmarks/run.py --models resnet50 --batch-size 256 --image-size 224 --precision mixed_bfloat16 --warmup 3 --no-inference --steps 32 --steps-per-execution 4 --peers none"
run() {
  local name=$1; shift
  echo "== $name ($(date -u +%H:%M:%S) UTC): $B $*" | tee -a "$OUT/log.txt"
  timeout 170 $B "$@" --json "$OUT/$name.json" 2>&1 | grep -v cuInit | tail -12 | tee -a "$OUT/log.txt"
}
run one_gpu --devices 1
run two_gpus_local_bn --devices 2
run two_gpus_sync_bn --devices 2 --sync-batch-norm
