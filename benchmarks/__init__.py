"""The benchmark harness of the repository (not installed with keras_resnet, which it imports like
any user code): keras_resnet models against keras.applications and torchvision.

    python benchmarks/run.py --help          # the command line (docs/PERFORMANCE.md)
    keras-resnet benchmark --suite ...       # the same, from the repository root

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

Modules: `timing` (windows, `Result`, MFU, device record), `jax_trainer` (the compiled JAX step;
imported only on JAX), `keras_paths` (the Keras paths), `peers`, `report` (table, ratios, JSON),
`variants` (experimental layers), `suite` (`SuiteOptions`, `run_suite`) and `run` (the command
line); `data_speed.py` is the input-pipeline script of the GPU machine (tools/gpu/gpu_data.sh).

Nothing here imports Keras on import of the package, and no module imports TensorFlow at its top:
the GPU machine runs Keras on JAX without TensorFlow, and where TensorFlow is installed
torchvision must be imported before it (the other order segfaults with torch 2.14 + TF 2.21).
"""
