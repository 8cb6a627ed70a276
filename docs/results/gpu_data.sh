#!/usr/bin/env bash
# Input-pipeline speed on the GPU machine (issue 11, point 4). One `run` call, from the project root,
# with carry [".whl"] (../shared/gpu/prepare.sh fills it). Keras on JAX: that machine has no TensorFlow.
#   bash docs/results/gpu_data.sh [count]      # default 50000 files; prints a Markdown table
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit
export PYTHONPATH=/tmp/site:$PWD KERAS_BACKEND=jax XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1
count=${1:-50000}
dir=/tmp/photos cache=/tmp/photos_cache out=${OUT:-/tmp}/gpu_data.jsonl
: > "$out"
nproc; nvidia-smi --query-gpu=name --format=csv,noheader; python3 -c 'import PIL, cv2; print(PIL.__version__, cv2.__version__)'
python3 benchmarks/data_speed.py generate $dir --count "$count" | tee -a "$out"
du -sh $dir/train
python3 benchmarks/data_speed.py decode $dir --sample 4000 | tee -a "$out"
python3 benchmarks/data_speed.py cache $dir $cache --steps 60 | tee -a "$out"
du -sh $cache
timeout 300 python3 benchmarks/data_speed.py fit $dir $cache --steps 100 | tee -a "$out"
python3 benchmarks/data_speed.py table "$out"
