#!/usr/bin/env bash
# Input-pipeline speed on the GPU machine. One `run` call, from the project root,
# with carry [".whl"] (../shared/gpu/prepare.sh fills it). Keras on JAX: that machine has no TensorFlow.
#   bash tools/gpu/gpu_data.sh [count] [devices]   # default 50000 files, 1 GPU; Markdown table
# With devices N > 1 (a machine of N GPUs), `fit` runs again on N GPUs (DataParallel, global batch
# 256 N) for synthetic and cache inputs, so one call gives the scaling too. About 5 minutes at 50000.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit
export PYTHONPATH=/tmp/site:$PWD KERAS_BACKEND=jax XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1
count=${1:-50000} devices=${2:-1}
dir=/tmp/photos cache=/tmp/photos_cache out=${OUT:-/tmp}/gpu_data.jsonl
: > "$out"
nproc; nvidia-smi --query-gpu=name --format=csv,noheader; python3 -c 'import PIL, cv2; print(PIL.__version__, cv2.__version__)'
SECONDS=0
python3 benchmarks/data_speed.py generate $dir --count "$count" | tee -a "$out"
du -sh $dir/train; echo "generate: ${SECONDS}s"
python3 benchmarks/data_speed.py decode $dir --sample 2000 | tee -a "$out"
echo "decode: ${SECONDS}s"
python3 benchmarks/data_speed.py cache $dir $cache --steps 60 | tee -a "$out"
du -sh $cache; echo "cache: ${SECONDS}s"
timeout 240 python3 benchmarks/data_speed.py fit $dir $cache --steps 100 | tee -a "$out"
echo "fit: ${SECONDS}s"
if [ "$devices" -gt 1 ]; then
  timeout 200 python3 benchmarks/data_speed.py fit $dir $cache --steps 60 --devices "$devices" \
    --inputs synthetic cache | tee -a "$out"
  echo "fit on $devices GPUs: ${SECONDS}s"
fi
python3 benchmarks/data_speed.py table "$out"
