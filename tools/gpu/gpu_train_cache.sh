#!/usr/bin/env bash
# scripts/train.py from a folder of photo-like JPEGs through --cache, on one
# GPU and on every GPU of the machine, beside the synthetic compiled step measured in the same call.
# One `run` call from the project root with carry [".whl"] (../shared/gpu/prepare.sh fills it).
# Keras on JAX (the GPU machine has no TensorFlow).
#   bash tools/gpu/gpu_train_cache.sh [count] [epochs]   # default 50000 files, 3 epochs
# Files back ($OUT): rows.jsonl (generate + synthetic fit rows), train1.log/metrics1.json/history1.csv
# (1 GPU) and trainN.* (all GPUs).
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit
export PYTHONPATH=/tmp/site:$PWD KERAS_BACKEND=jax XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1
count=${1:-50000} epochs=${2:-3}
dir=/tmp/photos cache=/tmp/photos_cache out=${OUT:-/tmp/out}
gpus=$(nvidia-smi -L | wc -l)
mkdir -p "$out"; : > "$out/rows.jsonl"
nproc; nvidia-smi --query-gpu=name --format=csv,noheader; date -u
SECONDS=0
python3 benchmarks/data_speed.py generate $dir --count "$count" | tee -a "$out/rows.jsonl"
du -sh $dir/train; echo "generate: ${SECONDS}s"
common="--dataset $dir --cache $cache --model resnet50 --precision mixed_bfloat16 --epochs $epochs
  --verbose 2 --no-tensorboard --no-track-test --no-backup"
# 1 GPU, batch 256 (builds the cache: the log gives its rate).
CUDA_VISIBLE_DEVICES=0 timeout 200 python3 scripts/train.py $common --batch-size 256 \
  --output-dir /tmp/r1 2>&1 | grep -v "^I0000\|^WARNING: All log" | tee "$out/train1.log" | tail -8
cp /tmp/r1/metrics.json "$out/metrics1.json"; cp /tmp/r1/history.csv "$out/history1.csv"
echo "train 1 GPU: ${SECONDS}s"
# The synthetic step in this call: model.fit on uint8 arrays in memory, same model and batch.
CUDA_VISIBLE_DEVICES=0 timeout 120 python3 benchmarks/data_speed.py fit $dir $cache --steps 100 \
  --inputs synthetic | tee -a "$out/rows.jsonl"
echo "synthetic 1 GPU: ${SECONDS}s"
if [ "$gpus" -gt 1 ]; then
  timeout 150 python3 scripts/train.py $common --batch-size $((256 * gpus)) \
    --output-dir /tmp/rN 2>&1 | grep -v "^I0000\|^WARNING: All log" | tee "$out/trainN.log" | tail -8
  cp /tmp/rN/metrics.json "$out/metricsN.json"; cp /tmp/rN/history.csv "$out/historyN.csv"
  echo "train $gpus GPUs: ${SECONDS}s"
fi
python3 - "$out" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
rows = [json.loads(l) for l in (out / "rows.jsonl").read_text().splitlines() if l.startswith("{")]
synthetic = next((r["img_per_s"] for r in rows if r["what"].startswith("fit synthetic")), None)
for name in ("metrics1.json", "metricsN.json"):
    if (out / name).exists():
        m = json.loads((out / name).read_text())
        ratio = m["images_per_s"] / synthetic if synthetic else None
        print(name, m["num_devices"], "GPU(s):", round(m["images_per_s"]), "img/s; synthetic",
              synthetic, "ratio", ratio and round(ratio, 3), "skipped", m.get("skipped"))
PY
echo "total: ${SECONDS}s"
