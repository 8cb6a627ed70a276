"""Throughput benchmarks: keras_resnet models against keras.applications and torchvision.

Every figure is the median over timed windows after a warm-up, each window closed by a device
synchronization, so that asynchronous dispatch cannot flatter it. Training figures count one
optimizer step (SGD with momentum, sparse cross-entropy) per batch; model FLOPs utilization (MFU)
counts a training step as 3x the forward FLOPs of `keras_resnet.count_flops`.

Training paths for Keras models:
    'compiled'  one XLA program per step on JAX (`stateless_call` + `optimizer.stateless_apply`
                under `jax.jit` with the state donated, `steps_per_execution` steps per program
                through `lax.fori_loop`, data resident on the device). On TensorFlow and torch
                it falls back to `train_on_batch`.
    'fit'       `model.compile(...)` + `model.fit(numpy arrays)`, what a user writes; timed per
                epoch (the epoch ends with a host synchronization).
    'pipeline'  `keras_resnet.training.train` end to end on a real dataset.

Peers: `keras.applications.ResNet50` on the same backend and precision, and torchvision's
`resnet50` eager and under `torch.compile` (bf16 autocast, channels_last).

Modules: `timing` (windows, `Result`, MFU, device), `jax_trainer` (the compiled JAX step; imported
only on JAX), `keras_paths` (the Keras paths), `peers`, `report` (table, ratios, JSON) and `suite`
(`SuiteOptions`, `run_suite`). The experimental layer variants are in `experiments/variants.py`
of a source checkout, not in the package.

Import torchvision before TensorFlow: the other order segfaults with torch 2.14 + TF 2.21.
"""

from __future__ import annotations

from keras_resnet.benchmark.keras_paths import (
    bench_keras_fit,
    bench_keras_infer,
    bench_keras_train,
    bench_pipeline,
    interleaved_inference,
    load_real_data,
)
from keras_resnet.benchmark.peers import bench_torchvision
from keras_resnet.benchmark.report import format_table, ratios, to_json
from keras_resnet.benchmark.suite import (
    PATHS,
    PEERS,
    ModelSpec,
    SuiteOptions,
    parse_model_spec,
    run_suite,
)
from keras_resnet.benchmark.timing import (
    PEAK_BF16_FLOPS,
    Result,
    device_info,
    make_result,
    mfu,
    peak_flops_for,
    summarize,
    synthetic_data,
    time_windows,
)

__all__ = [
    "PATHS",
    "PEAK_BF16_FLOPS",
    "PEERS",
    "ModelSpec",
    "Result",
    "SuiteOptions",
    "bench_keras_fit",
    "bench_keras_infer",
    "bench_keras_train",
    "bench_pipeline",
    "bench_torchvision",
    "device_info",
    "format_table",
    "interleaved_inference",
    "load_real_data",
    "make_result",
    "mfu",
    "parse_model_spec",
    "peak_flops_for",
    "ratios",
    "run_suite",
    "summarize",
    "synthetic_data",
    "time_windows",
    "to_json",
]
