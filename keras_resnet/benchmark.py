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

Peers: `keras.applications.ResNet50` on the same backend and precision, and torchvision's
`resnet50` eager and under `torch.compile` (bf16 autocast, channels_last).

Import torchvision before TensorFlow: the other order segfaults with torch 2.14 + TF 2.21.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib.util
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from keras_resnet.utils import check_int as _check_int

# Dense bf16 tensor-core peaks from the vendors' datasheets (SXM parts), for MFU.
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12}


@dataclass
class Result:
    """One measurement. `img_per_s` is `batch_size / median(step seconds)`."""

    name: str
    framework: str  # 'keras-jax', 'keras-tensorflow', 'keras-torch', 'torch'
    task: str  # 'train' or 'infer'
    path: str  # 'compiled', 'fit', 'eager', 'torch.compile', 'predict'
    data: str  # 'synthetic' or 'real:<dataset>'
    precision: str
    batch_size: int
    input_shape: tuple
    img_per_s: float
    step_ms: float
    step_ms_spread: tuple  # (min, max) of the timed windows, per step
    timed_steps: int
    devices: int = 1
    flops_per_image: int | None = None
    mfu: float | None = None
    peak_memory_bytes: int | None = None
    notes: list[str] = field(default_factory=list)


def time_windows(
    run: Callable[[], object], sync: Callable[[object], None], *, windows: int, warmup: int
) -> list[float]:
    """Seconds of each of `windows` timed calls of `run`, after `warmup` untimed ones.

    `sync(out)` blocks until the device has finished the work that produced `out`.
    """
    for _ in range(warmup):
        sync(run())
    times = []
    for _ in range(windows):
        start = time.perf_counter()
        sync(run())
        times.append(time.perf_counter() - start)
    return times


def summarize(times: Sequence[float], steps_per_window: int, batch_size: int) -> dict:
    """Median img/s and step milliseconds from window times; never zero or infinite."""
    if not times:
        raise ValueError("times must not be empty, received times=[]")
    median = statistics.median(times) / steps_per_window
    median = max(median, 1e-9)
    return {
        "img_per_s": batch_size / median,
        "step_ms": 1e3 * median,
        "step_ms_spread": (
            1e3 * min(times) / steps_per_window,
            1e3 * max(times) / steps_per_window,
        ),
        "timed_steps": len(times) * steps_per_window,
    }


def mfu(
    flops_per_image: int | None,
    img_per_s: float,
    task: str,
    peak_flops: float | None,
    devices: int = 1,
) -> float | None:
    """Model FLOPs utilization: achieved model FLOP/s over the peak of all devices used.

    A training step counts 3x the forward FLOPs (forward, and a backward pass of twice its cost).
    """
    if not flops_per_image or not peak_flops:
        return None
    factor = 3 if task == "train" else 1
    return factor * flops_per_image * img_per_s / (peak_flops * devices)


def device_info() -> dict:
    """Backend, accelerator name and library versions, for the JSON record."""
    import keras

    info = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "backend": keras.backend.backend(),
        "keras": keras.__version__,
        "python": platform.python_version(),
        "host": platform.node(),
        "device": "cpu",
    }
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        info["jax"] = jax.__version__
        devices = jax.devices()
        info["device"] = devices[0].device_kind
        info["device_count"] = len(devices)
    elif backend == "tensorflow":
        import tensorflow as tf

        info["tensorflow"] = tf.__version__
        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            info["device"] = tf.config.experimental.get_device_details(gpus[0]).get("device_name")
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available() and info["device"] == "cpu":
            info["device"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


def peak_flops_for(device: str) -> float | None:
    """Datasheet bf16 peak for a device name such as 'NVIDIA H100 80GB HBM3'; None if unknown."""
    for key, value in PEAK_BF16_FLOPS.items():
        if key in device.upper():
            return value
    return None


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


def synthetic_data(
    batch_size: int, input_shape: Sequence[int], num_classes: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """A random float32 batch (normal, not zeros: zeros can run faster than real data)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch_size, *input_shape), dtype=np.float32)
    y = rng.integers(0, num_classes, size=(batch_size,), dtype=np.int32)
    return x, y


def load_real_data(
    name: str = "fashion_mnist", image_size: Sequence[int] | None = None, limit: int | None = None
):
    """The training issue's dataset (`keras_resnet.data.load_dataset`), optionally cut to its
    first `limit` training images and resized to `image_size` (bilinear, on the default device,
    back to uint8), e.g. Fashion-MNIST at 224 px for a large-input benchmark."""
    import keras

    from keras_resnet import data as data_lib

    dataset = data_lib.load_dataset(name)
    if limit is not None:
        dataset = dataclasses.replace(
            dataset,
            x_train=dataset.x_train[:limit],
            y_train=dataset.y_train[:limit],
            x_test=dataset.x_test[:limit],
            y_test=dataset.y_test[:limit],
        )
    if image_size is None or tuple(image_size) == dataset.image_shape[:2]:
        return dataset

    def resize(images: np.ndarray) -> np.ndarray:
        chunks = []
        for start in range(0, len(images), 1024):
            chunk = keras.ops.image.resize(
                images[start : start + 1024].astype(np.float32),
                tuple(image_size),
                interpolation="bilinear",
            )
            chunks.append(np.clip(np.round(keras.ops.convert_to_numpy(chunk)), 0, 255))
        return np.concatenate(chunks).astype(np.uint8)

    return dataclasses.replace(
        dataset,
        name=f"{dataset.name}_{image_size[0]}px",
        x_train=resize(dataset.x_train),
        x_test=resize(dataset.x_test),
    )


# ---------------------------------------------------------------------------------------------
# Keras models
# ---------------------------------------------------------------------------------------------


def _optimizer():
    import keras

    return keras.optimizers.SGD(learning_rate=0.01, momentum=0.9)


def _loss(y_true, y_pred):
    import keras

    return keras.ops.mean(keras.losses.sparse_categorical_crossentropy(y_true, y_pred))


def _augment_on_device(images, key, image_size: Sequence[int] | None):
    """uint8 batch -> float32: resize (if asked), random horizontal flip, random 4 px
    pad-and-crop (at the native size), on the device, as part of the compiled step."""
    import jax
    import jax.numpy as jnp

    x = images.astype(jnp.float32)
    n, h, w, c = x.shape
    k_flip, k_crop = jax.random.split(key)
    flip = jax.random.bernoulli(k_flip, 0.5, (n, 1, 1, 1))
    x = jnp.where(flip, x[:, :, ::-1, :], x)
    pad = 4
    padded = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    offsets = jax.random.randint(k_crop, (n, 2), 0, 2 * pad + 1)

    def crop(image, offset):
        return jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (h, w, c))

    x = jax.vmap(crop)(padded, offsets)
    if image_size is not None and tuple(image_size) != (h, w):
        x = jax.image.resize(x, (n, *image_size, c), method="bilinear")
    return x


# ---------------------------------------------------------------------------------------------
# Experimental layer variants (measured here; candidates for keras_resnet.models)
# ---------------------------------------------------------------------------------------------

VARIANTS = ("keras-bn", "bn-bf16-apply", "shifted-maxpool")


def _bf16_apply_bn_class():
    from keras import ops

    from keras_resnet.layers import BatchNormalization

    class Bfloat16ApplyBatchNormalization(BatchNormalization):
        """keras_resnet's batch norm, but `x * a + b` computed in the input's dtype (bfloat16
        under mixed precision) instead of float32."""

        def _normalize(self, inputs, scale, offset):
            return inputs * ops.cast(scale, inputs.dtype) + ops.cast(offset, inputs.dtype)

    return Bfloat16ApplyBatchNormalization


def _shifted_maxpool_class():
    import keras
    from keras import ops

    class ShiftedMaxPooling2D(keras.layers.Layer):
        """Max-pooling as the maximum of k*k strided slices (channels_last, 'valid' padding).

        Same output as `MaxPooling2D`; its gradient is a chain of selects and pads that XLA fuses,
        instead of the select-and-scatter of `reduce_window`'s gradient.
        """

        def __init__(self, pool_size=3, strides=2, **kwargs):
            super().__init__(**kwargs)
            self.pool_size, self.strides = pool_size, strides

        def call(self, x):
            k, s = self.pool_size, self.strides
            h, w = x.shape[1], x.shape[2]
            ho, wo = (h - k) // s + 1, (w - k) // s + 1
            out = None
            for i in range(k):
                for j in range(k):
                    part = x[:, i : i + s * (ho - 1) + 1 : s, j : j + s * (wo - 1) + 1 : s, :]
                    out = part if out is None else ops.maximum(out, part)
            return out

        def compute_output_shape(self, input_shape):
            k, s = self.pool_size, self.strides
            n, h, w, c = input_shape
            return (n, (h - k) // s + 1, (w - k) // s + 1, c)

    return ShiftedMaxPooling2D


def with_variants(model, variants: Sequence[str]):
    """A copy of a channels_last keras_resnet model with some layers swapped (fresh weights):
    'keras-bn' (every batch norm back to `keras.layers.BatchNormalization`, the model before
    keras_resnet.layers.BatchNormalization), 'bn-bf16-apply' (our batch norm normalizing in
    bfloat16) and 'shifted-maxpool' (the stem's MaxPooling2D). The copy computes the same
    function as the original."""
    import keras

    from keras_resnet.layers import BatchNormalization

    for variant in variants:
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, received variant={variant!r}")
    if "keras-bn" in variants and "bn-bf16-apply" in variants:
        raise ValueError(
            f"variants 'keras-bn' and 'bn-bf16-apply' exclude each other, received {list(variants)}"
        )
    pool_class = _shifted_maxpool_class()

    def swap(layer):
        config = layer.get_config()
        if isinstance(layer, BatchNormalization):
            if "keras-bn" in variants:
                return keras.layers.BatchNormalization.from_config(config)
            if "bn-bf16-apply" in variants:
                return _bf16_apply_bn_class().from_config(config)
        if "shifted-maxpool" in variants and isinstance(layer, keras.layers.MaxPooling2D):
            return pool_class(
                layer.pool_size[0], layer.strides[0], name=layer.name, dtype=layer.dtype_policy
            )
        return layer.__class__.from_config(config)

    return keras.models.clone_model(model, clone_function=swap)


class JaxTrainer:
    """A compiled JAX train step over a Keras model: no Keras trainer in the loop.

    The state (trainable, non-trainable and optimizer variables) is donated to each call, so XLA
    updates it in place; `steps_per_execution` steps run inside one program (`lax.fori_loop`).
    With `devices > 1`, the batch is split over the devices and the state replicated (data
    parallelism). `local_batch_norm` (default): each device normalizes with its own batch's
    statistics and the step all-reduces the gradients once (`shard_map` + `pmean`, PyTorch DDP's
    semantics); otherwise the step is written for the global batch and XLA's SPMD partitioner
    inserts the collectives, which synchronizes every batch norm (an all-reduce per layer).
    """

    def __init__(
        self,
        model,
        *,
        steps_per_execution: int = 1,
        devices: int = 1,
        local_batch_norm: bool = True,
    ):
        import jax

        _check_int("steps_per_execution", steps_per_execution, 1)
        _check_int("devices", devices, 1)
        if devices > len(jax.devices()):
            raise ValueError(
                f"devices must be <= {len(jax.devices())} (the devices present), "
                f"received devices={devices}"
            )
        self.model = model
        self.steps = steps_per_execution
        self.optimizer = _optimizer()
        self.optimizer.build(model.trainable_variables)
        self.devices = devices
        self.local_batch_norm = local_batch_norm
        self.mesh = None
        if devices > 1:
            from jax.sharding import Mesh, NamedSharding, PartitionSpec

            self.mesh = Mesh(np.array(jax.devices()[:devices]), ("batch",))
            self.replicated = NamedSharding(self.mesh, PartitionSpec())
            self.batch_sharded = NamedSharding(self.mesh, PartitionSpec("batch"))

    def state(self):
        import jax

        state = (
            [v.value for v in self.model.trainable_variables],
            [v.value for v in self.model.non_trainable_variables],
            [v.value for v in self.optimizer.variables],
        )
        if self.mesh is not None:
            state = jax.device_put(state, self.replicated)
        return state

    def put_batch(self, array):
        import jax

        return jax.device_put(array, self.batch_sharded if self.mesh is not None else None)

    def _one_step(self, state, x, y):
        import jax

        model, optimizer = self.model, self.optimizer
        trainable, non_trainable, opt_vars = state

        def loss_fn(trainable, non_trainable):
            y_pred, non_trainable = model.stateless_call(trainable, non_trainable, x, training=True)
            return _loss(y, y_pred), non_trainable

        (loss, non_trainable), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            trainable, non_trainable
        )
        if self.mesh is not None and self.local_batch_norm:
            # Inside shard_map: one all-reduce of the gradients (and of the small moving
            # statistics), as PyTorch DDP does; the forward pass stays device-local.
            grads, non_trainable, loss = jax.lax.pmean((grads, non_trainable, loss), "batch")
        trainable, opt_vars = optimizer.stateless_apply(opt_vars, grads, trainable)
        return (trainable, non_trainable, opt_vars), loss

    def synthetic_step(self):
        """`step(state, x, y) -> (state, loss)`: `steps_per_execution` steps on one batch."""
        import jax

        def run(state, x, y):
            def body(_, carry):
                return self._one_step(carry[0], x, y)

            if self.steps == 1:
                return self._one_step(state, x, y)
            return jax.lax.fori_loop(0, self.steps, body, (state, jax.numpy.float32(0)))

        if self.mesh is not None and self.local_batch_norm:
            from jax.sharding import PartitionSpec as P

            run = jax.shard_map(
                run,
                mesh=self.mesh,
                in_specs=(P(), P("batch"), P("batch")),
                out_specs=(P(), P()),
                check_vma=False,
            )
        return jax.jit(run, donate_argnums=0)

    def real_step(self, batch_size: int, image_size: Sequence[int] | None):
        """`step(state, images, labels, key, start) -> (state, loss)`: each of the
        `steps_per_execution` steps gathers a random batch from the device-resident uint8
        dataset, augments it on the device and trains on it."""
        import jax
        import jax.numpy as jnp

        if self.mesh is not None and self.local_batch_norm:
            raise ValueError(
                "real data on several devices needs local_batch_norm=False, "
                "received local_batch_norm=True"
            )

        def run(state, images, labels, key, start):
            def body(i, carry):
                state, _ = carry
                k = jax.random.fold_in(key, start + i)
                k_idx, k_aug = jax.random.split(k)
                idx = jax.random.randint(k_idx, (batch_size,), 0, images.shape[0])
                x = _augment_on_device(jnp.take(images, idx, axis=0), k_aug, image_size)
                y = jnp.take(labels, idx, axis=0)
                if self.mesh is not None:
                    x = jax.lax.with_sharding_constraint(x, self.batch_sharded)
                    y = jax.lax.with_sharding_constraint(y, self.batch_sharded)
                return self._one_step(state, x, y)

            if self.steps == 1:
                return body(0, (state, jnp.float32(0)))
            return jax.lax.fori_loop(0, self.steps, body, (state, jnp.float32(0)))

        return jax.jit(run, donate_argnums=0)


def _predict_fn(model):
    """The model's inference (training=False) as one jitted function of its variables."""
    import jax

    def predict(trainable, non_trainable, x):
        return model.stateless_call(trainable, non_trainable, x, training=False)[0]

    return jax.jit(predict)


def _compiled_peak_bytes(jitted, *args) -> int | None:
    """Device memory the compiled program needs: arguments + outputs - aliased + temporaries."""
    try:
        analysis = jitted.lower(*args).compile().memory_analysis()
        return int(
            analysis.argument_size_in_bytes
            + analysis.output_size_in_bytes
            - analysis.alias_size_in_bytes
            + analysis.temp_size_in_bytes
        )
    except Exception:  # noqa: BLE001 - memory analysis is best effort (not on every platform)
        return None


def _framework() -> str:
    import keras

    return f"keras-{keras.backend.backend()}"


def _sync_jax(out) -> None:
    import jax

    jax.block_until_ready(out)


def bench_keras_train(
    model,
    *,
    name: str,
    batch_size: int,
    steps: int,
    warmup: int,
    precision: str,
    steps_per_execution: int = 1,
    devices: int = 1,
    peak_flops: float | None = None,
    num_classes: int | None = None,
    real: tuple[np.ndarray, np.ndarray] | None = None,
    dataset: str = "",
    image_size: Sequence[int] | None = None,
    profile_dir: str | None = None,
    sync_batch_norm: bool = False,
) -> Result:
    """Training throughput of a Keras model through the 'compiled' path.

    `batch_size` is per device. With `real=(images, labels)` (uint8 NHWC), batches are drawn from
    that dataset, resident on the device, and augmented there (resized to `image_size` if given);
    otherwise one synthetic batch resident on the device is reused. `profile_dir` (JAX): trace
    a few more steps there with `jax.profiler`. `sync_batch_norm`: with several devices,
    normalize over the global batch (always so for real data).
    """
    import keras

    from keras_resnet.analysis import count_flops

    _check_int("batch_size", batch_size, 1)
    _check_int("steps", steps, 1)
    input_shape = tuple(model.inputs[0].shape[1:])
    num_classes = num_classes or int(model.outputs[0].shape[-1])
    global_batch = batch_size * devices
    notes: list[str] = []
    windows = max(1, math.ceil(steps / steps_per_execution))
    peak_bytes = None
    if keras.backend.backend() == "jax":
        import jax

        trainer = JaxTrainer(
            model,
            steps_per_execution=steps_per_execution,
            devices=devices,
            local_batch_norm=not sync_batch_norm and real is None,
        )
        state = trainer.state()
        if real is None:
            x, y = synthetic_data(global_batch, input_shape, num_classes)
            x, y = trainer.put_batch(x), trainer.put_batch(y)
            step = trainer.synthetic_step()
            args = (x, y)
        else:
            images, labels = real
            where = trainer.replicated if trainer.mesh is not None else None
            images, labels = jax.device_put(images, where), jax.device_put(labels, where)
            step = trainer.real_step(global_batch, image_size)
            args = (images, labels, jax.random.key(0))
            notes.append(
                "uint8 dataset resident on the device; gather + flip + crop"
                + (" + resize" if image_size else "")
                + " inside the compiled step"
            )
        peak_bytes = _compiled_peak_bytes(step, state, *args, *(() if real is None else (0,)))
        holder = {"state": state, "i": 0}

        def run():
            extra = () if real is None else (holder["i"] * steps_per_execution,)
            holder["state"], loss = step(holder["state"], *args, *extra)
            holder["i"] += 1
            return loss

        times = time_windows(run, _sync_jax, windows=windows, warmup=warmup)
        if profile_dir:
            # A device trace of a few steps (xplane.pb), read offline for kernel times and gaps.
            with jax.profiler.trace(profile_dir):
                time_windows(run, _sync_jax, windows=min(windows, 5), warmup=0)
        final_loss = float(run())
        # Write the trained state back so that the model object reflects the run.
        trainable, non_trainable, _ = holder["state"]
        for v, value in zip(model.trainable_variables, trainable, strict=True):
            v.assign(value)
        for v, value in zip(model.non_trainable_variables, non_trainable, strict=True):
            v.assign(value)
        spe = steps_per_execution
        trainer_local = trainer.local_batch_norm
    else:
        if devices != 1:
            raise ValueError(
                f"devices must be 1 on the {keras.backend.backend()} backend, "
                f"received devices={devices}"
            )
        model.compile(optimizer=_optimizer(), loss="sparse_categorical_crossentropy")
        if real is None:
            x, y = synthetic_data(batch_size, input_shape, num_classes)
        rng = np.random.default_rng(0)

        def run():
            if real is None:
                return model.train_on_batch(x, y)
            idx = rng.integers(0, len(real[0]), batch_size)
            xb = real[0][idx].astype(np.float32)
            if image_size is not None and tuple(image_size) != xb.shape[1:3]:
                xb = keras.ops.convert_to_numpy(
                    keras.ops.image.resize(xb, tuple(image_size), interpolation="bilinear")
                )
            return model.train_on_batch(xb, real[1][idx])

        times = time_windows(run, lambda out: None, windows=steps, warmup=warmup)
        final_loss = float(np.asarray(run()).reshape(-1)[0])
        notes.append("train_on_batch (returns host values: synchronous)")
        if real is not None:
            notes.append("host pipeline: numpy gather + resize per step")
        spe = 1
        trainer_local = False
    if not math.isfinite(final_loss):
        notes.append(f"loss not finite: {final_loss}")
    stats = summarize(times, spe, global_batch)
    flops = count_flops(model)
    shape = input_shape
    if real is not None and image_size:
        shape = (*image_size, input_shape[-1])
    return Result(
        name=name,
        framework=_framework(),
        task="train",
        path="compiled" if keras.backend.backend() == "jax" else "train_on_batch",
        data="synthetic" if real is None else f"real:{dataset}",
        precision=precision,
        batch_size=global_batch,
        input_shape=tuple(shape),
        devices=devices,
        flops_per_image=flops,
        mfu=mfu(flops, stats["img_per_s"], "train", peak_flops, devices),
        peak_memory_bytes=peak_bytes,
        notes=notes
        + [
            f"steps_per_execution={spe}",
            *(
                [f"data parallel, {'local' if trainer_local else 'synchronized'} batch norm"]
                if devices > 1
                else []
            ),
            f"final loss {final_loss:.4g}",
        ],
        **stats,
    )


def bench_keras_fit(
    model,
    *,
    name: str,
    batch_size: int,
    steps: int,
    precision: str,
    steps_per_execution: int = 1,
    peak_flops: float | None = None,
) -> Result:
    """Training throughput through `model.compile` + `model.fit` on numpy arrays.

    Each epoch is `steps` batches (rounded to a multiple of `steps_per_execution`); the first
    epoch (compilation) is untimed and the figure is the median over 3 timed epochs.
    """
    import keras

    from keras_resnet.analysis import count_flops

    _check_int("steps", steps, 1)
    input_shape = tuple(model.inputs[0].shape[1:])
    num_classes = int(model.outputs[0].shape[-1])
    steps = max(steps_per_execution, steps - steps % steps_per_execution)
    x1, y1 = synthetic_data(batch_size, input_shape, num_classes)
    x = np.concatenate([x1] * steps)
    y = np.concatenate([y1] * steps)
    model.compile(
        optimizer=_optimizer(),
        loss="sparse_categorical_crossentropy",
        steps_per_execution=steps_per_execution,
    )
    epoch_times: list[float] = []

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            # Keras turns the logs into Python floats at the epoch's end, a device sync.
            epoch_times.append(time.perf_counter() - self.start)

    # One untimed epoch (compilation), then 3 timed ones.
    model.fit(
        x, y, batch_size=batch_size, epochs=4, shuffle=False, verbose=0, callbacks=[EpochTimer()]
    )
    times = epoch_times[1:]
    stats = summarize(times, steps, batch_size)
    flops = count_flops(model)
    return Result(
        name=name,
        framework=_framework(),
        task="train",
        path="fit",
        data="synthetic",
        precision=precision,
        batch_size=batch_size,
        input_shape=input_shape,
        flops_per_image=flops,
        mfu=mfu(flops, stats["img_per_s"], "train", peak_flops),
        notes=[
            f"numpy input, {steps} steps per epoch, steps_per_execution={steps_per_execution}",
            "median of 3 epochs after 1 warm-up epoch",
        ],
        **stats,
    )


def bench_keras_infer(
    model,
    *,
    name: str,
    batch_size: int,
    steps: int,
    warmup: int,
    precision: str,
    peak_flops: float | None = None,
) -> Result:
    """Inference throughput (training=False) on a synthetic batch resident on the device."""
    import keras

    from keras_resnet.analysis import count_flops

    input_shape = tuple(model.inputs[0].shape[1:])
    x, _ = synthetic_data(batch_size, input_shape, 2)
    peak_bytes = None
    if keras.backend.backend() == "jax":
        import jax

        predict = _predict_fn(model)
        tv = [v.value for v in model.trainable_variables]
        ntv = [v.value for v in model.non_trainable_variables]
        xd = jax.device_put(x)
        peak_bytes = _compiled_peak_bytes(predict, tv, ntv, xd)
        times = time_windows(lambda: predict(tv, ntv, xd), _sync_jax, windows=steps, warmup=warmup)
        path = "compiled"
    else:
        times = time_windows(
            lambda: model.predict_on_batch(x), lambda out: None, windows=steps, warmup=warmup
        )
        path = "predict_on_batch"
    stats = summarize(times, 1, batch_size)
    flops = count_flops(model)
    return Result(
        name=name,
        framework=_framework(),
        task="infer",
        path=path,
        data="synthetic",
        precision=precision,
        batch_size=batch_size,
        input_shape=input_shape,
        flops_per_image=flops,
        mfu=mfu(flops, stats["img_per_s"], "infer", peak_flops),
        peak_memory_bytes=peak_bytes,
        **stats,
    )


def interleaved_inference(
    models: dict,
    *,
    batch_size: int,
    rounds: int,
    steps: int,
    warmup: int = 2,
    precision: str = "float32",
) -> list[Result]:
    """Inference throughput of several models measured in alternation (A, B, A, B, ...), so that
    a shared, noisy machine slows each of them alike. Each round times `steps` batches per model;
    the figure is the median over all of a model's timed batches."""
    _check_int("rounds", rounds, 1)
    per_model: dict[str, list[float]] = {name: [] for name in models}
    inputs = {}
    for name, model in models.items():
        inputs[name] = synthetic_data(batch_size, tuple(model.inputs[0].shape[1:]), 2)[0]
        time_windows(
            lambda m=model, x=inputs[name]: m.predict_on_batch(x),
            lambda out: None,
            windows=0,
            warmup=warmup,
        )
    for _ in range(rounds):
        for name, model in models.items():
            x = inputs[name]
            per_model[name] += time_windows(
                lambda m=model, x=x: m.predict_on_batch(x),
                lambda out: None,
                windows=steps,
                warmup=0,
            )
    from keras_resnet.analysis import count_flops

    results = []
    for name, model in models.items():
        stats = summarize(per_model[name], 1, batch_size)
        results.append(
            Result(
                name=name,
                framework=_framework(),
                task="infer",
                path="predict_on_batch",
                data="synthetic",
                precision=precision,
                batch_size=batch_size,
                input_shape=tuple(model.inputs[0].shape[1:]),
                flops_per_image=count_flops(model),
                notes=[f"interleaved with the other models: {rounds} rounds x {steps} batches"],
                **stats,
            )
        )
    return results


def bench_pipeline(
    model_name: str,
    dataset,
    *,
    label: str | None = None,
    batch_size: int,
    epochs: int,
    precision: str,
    steps_per_execution: int = 1,
    output_dir: str,
    overrides: dict | None = None,
    peak_flops: float | None = None,
    flops_per_image: int | None = None,
) -> Result:
    """End to end through the training issue's pipeline: `keras_resnet.training.train` on a
    `keras_resnet.data.Dataset` (numpy uint8 -> `model.fit`, augmentation layers and
    normalization inside the model). The figure is the pipeline's own `images_per_s`: the median
    epoch (the first one compiles), from the first to the last training step of the epoch."""
    from keras_resnet import training

    _check_int("epochs", epochs, 1)
    config = training.TrainConfig(
        model=model_name,
        dataset=dataset.name,
        epochs=epochs,
        batch_size=batch_size,
        precision=precision,
        steps_per_execution=steps_per_execution,
        val_size=0,
        track_test=False,
        tensorboard=False,
        verbose=0,
        output_dir=output_dir,
        # One device, as the figure it is compared with (the pipeline's 'auto' spreads over all).
        distribute="off",
        **(overrides or {}),
    )
    metrics = training.train(config, dataset=dataset)
    rate = float(metrics["images_per_s"])
    augment = (
        "augmentation (RandomTranslation, RandomFlip, RandomErasing) inside the model"
        if config.augment
        else "no augmentation"
    )
    return Result(
        name=label or model_name,
        framework=_framework(),
        task="train",
        path="pipeline",
        data=f"real:{dataset.name}",
        precision=precision,
        batch_size=batch_size,
        input_shape=tuple(dataset.image_shape),
        img_per_s=rate,
        step_ms=1e3 * batch_size / rate,
        step_ms_spread=(float("nan"), float("nan")),
        timed_steps=(epochs - 1) * math.ceil(metrics["train_images"] / batch_size),
        flops_per_image=flops_per_image,
        mfu=mfu(flops_per_image, rate, "train", peak_flops),
        notes=[
            f"keras_resnet.training.train, {epochs} epochs of {metrics['train_images']} "
            f"images, median epoch; steps_per_execution={steps_per_execution}; {augment}"
        ],
    )


# ---------------------------------------------------------------------------------------------
# torchvision peers
# ---------------------------------------------------------------------------------------------


def bench_torchvision(
    arch: str = "resnet50",
    *,
    batch_size: int,
    image_size: Sequence[int],
    steps: int,
    warmup: int,
    compile: bool,
    precision: str,
    num_classes: int = 1000,
    task: str = "train",
    peak_flops: float | None = None,
    flops_per_image: int | None = None,
    in_channels: int = 3,
) -> Result:
    """torchvision model throughput: channels_last, bf16 autocast (when `precision` is
    'mixed_bfloat16'), SGD with momentum; eager or `torch.compile` (default mode)."""
    import torch
    import torch.nn.functional as F
    import torchvision

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = getattr(torchvision.models, arch)(num_classes=num_classes)
    if in_channels != 3:
        model.conv1 = torch.nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
    model = model.to(device).to(memory_format=torch.channels_last)
    bf16 = precision == "mixed_bfloat16"
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(batch_size, in_channels, *image_size, generator=g).to(device)
    x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, num_classes, (batch_size,), generator=g).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    forward = torch.compile(model) if compile else model

    def train_step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(forward(x), y)
        loss.backward()
        optimizer.step()
        return loss

    @torch.no_grad()
    def infer_step():
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
            return forward(x)

    if task == "train":
        model.train()
        run = train_step
    else:
        model.eval()
        run = infer_step

    def sync(out):
        if device == "cuda":
            torch.cuda.synchronize()

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = time_windows(run, sync, windows=steps, warmup=warmup)
    peak = int(torch.cuda.max_memory_allocated()) if device == "cuda" else None
    stats = summarize(times, 1, batch_size)
    return Result(
        name=f"torchvision.{arch}",
        framework="torch",
        task=task,
        path="torch.compile" if compile else "eager",
        data="synthetic",
        precision=precision,
        batch_size=batch_size,
        input_shape=(in_channels, *image_size),
        flops_per_image=flops_per_image,
        mfu=mfu(flops_per_image, stats["img_per_s"], task, peak_flops),
        peak_memory_bytes=peak,
        notes=[f"torch {torch.__version__}, channels_last" + (", bf16 autocast" if bf16 else "")],
        **stats,
    )


# ---------------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------------


def ratios(results: Sequence[Result]) -> list[dict]:
    """Ours over each peer, for training results of the same batch and input shape; and
    real-data over synthetic for the same model."""
    out = []
    ours = [r for r in results if r.task == "train" and not _is_peer(r)]
    peers = [r for r in results if r.task == "train" and _is_peer(r)]
    for a in ours:
        if a.data != "synthetic":
            continue
        for b in peers:
            # Peers are one architecture (ResNet-50): compare only our model of that depth.
            if (
                _arch(a.name) == _arch(b.name)
                and a.batch_size == b.batch_size
                and a.devices == b.devices
                and _hw(a.input_shape) == _hw(b.input_shape)
            ):
                out.append(
                    {"ours": _label(a), "peer": _label(b), "ratio": a.img_per_s / b.img_per_s}
                )
    for a in ours:
        if not a.data.startswith("real:"):
            continue
        for b in ours:
            if (
                b.data == "synthetic"
                and b.name == a.name
                and b.path == a.path
                and b.batch_size == a.batch_size
                and _hw(b.input_shape) == _hw(a.input_shape)
            ):
                out.append(
                    {"ours": _label(a), "peer": _label(b), "ratio": a.img_per_s / b.img_per_s}
                )
    return out


def _hw(shape: Sequence[int]) -> tuple:
    """Height and width of an input shape, HWC or CHW."""
    shape = tuple(shape)
    return shape[:2] if shape[-1] <= 4 else shape[1:]


def _arch(name: str) -> str:
    """'torchvision.resnet50' and 'resnet50[stride_in=1x1]' -> 'resnet50'."""
    return name.split("[")[0].rsplit(".", 1)[-1].lower()


def _is_peer(result: Result) -> bool:
    return result.name.startswith(("keras.applications", "torchvision"))


def _label(r: Result) -> str:
    return f"{r.name} [{r.framework} {r.path} {r.data} x{r.devices}]"


def format_table(results: Sequence[Result], ratio_rows: Sequence[dict] = ()) -> str:
    """The results as a text table, then the ratios."""
    header = (
        f"{'model':<30} {'framework':<16} {'task':<5} {'path':<14} {'data':<19} "
        f"{'batch':>5} {'img/s':>9} {'step ms':>8} {'MFU':>6} {'mem GiB':>7}"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        mfu_text = f"{100 * r.mfu:5.1f}%" if r.mfu is not None else "    -"
        mem = f"{r.peak_memory_bytes / 2**30:7.2f}" if r.peak_memory_bytes else "      -"
        lines.append(
            f"{r.name:<30} {r.framework:<16} {r.task:<5} {r.path:<14} {r.data:<19} "
            f"{r.batch_size:>5} {r.img_per_s:>9.1f} {r.step_ms:>8.2f} {mfu_text:>6} {mem}"
        )
    for row in ratio_rows:
        lines.append(f"ratio {row['ratio']:.3f}: {row['ours']} / {row['peer']}")
    return "\n".join(lines)


def to_json(
    results: Sequence[Result], info: dict, ratio_rows: Sequence[dict], extra: dict | None = None
) -> dict:
    """A JSON-ready record of one benchmark run."""
    return {
        "info": info,
        "results": [asdict(r) for r in results],
        "ratios": list(ratio_rows),
        **(extra or {}),
    }


# ---------------------------------------------------------------------------------------------
# The suite of scripts/benchmark.py
# ---------------------------------------------------------------------------------------------


def parse_model_spec(spec: str) -> tuple[str, dict, str]:
    """'resnet50:stride_in=1x1' -> ('resnet50', {'stride_in': '1x1'}, 'resnet50[stride_in=1x1]')."""
    name, _, options = spec.partition(":")
    overrides = {}
    for item in filter(None, options.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"model options must be key=value, received model={spec!r}")
        for cast in (int, float):
            try:
                value = cast(value)
                break
            except ValueError:
                continue
        overrides[key] = value
    label = f"{name}[{options}]" if options else name
    return name, overrides, label


def run_suite(args):
    """Everything `scripts/benchmark.py` measures, in its order: our models on each path, then
    the peers. `args` holds the script's options as attributes (its argparse namespace).

    Returns (results, device info, ratio rows); prints each result's row as it comes.
    Raises ValueError naming the first bad option.
    """
    import keras

    from keras_resnet import count_flops, get_model
    from keras_resnet.cli import model_overrides

    for name in (
        "batch_size",
        "image_size",
        "channels",
        "num_classes",
        "steps",
        "steps_per_execution",
        "devices",
    ):
        _check_int(name, getattr(args, name), 1)
    if "pipeline" in args.paths and args.data == "synthetic":
        raise ValueError("the 'pipeline' path needs real data, received --data synthetic")
    if args.peers and args.devices != 1:
        raise ValueError(f"peers run on one device; pass --peers none with devices={args.devices}")
    _check_int("warmup", args.warmup, 0)
    keras.mixed_precision.set_global_policy(args.precision)
    info = device_info()
    peak = args.peak_tflops * 1e12 if args.peak_tflops else peak_flops_for(info["device"])
    info["peak_flops"] = peak
    size = (args.image_size, args.image_size)
    shape = (*size, args.channels)
    common = dict(steps=args.steps, warmup=args.warmup, precision=args.precision, peak_flops=peak)
    results = []

    def record(result):
        results.append(result)
        print(format_table([result]), flush=True)

    if args.interleave_rounds:
        models = {}
        for spec in args.models:
            name, options, label = parse_model_spec(spec)
            models[label] = get_model(
                name,
                input_shape=shape,
                num_classes=args.num_classes,
                **{**model_overrides(args), **options},
            )
        models["keras.applications.ResNet50"] = keras.applications.ResNet50(
            weights=None, input_shape=shape, classes=args.num_classes
        )
        results = interleaved_inference(
            models,
            batch_size=args.batch_size,
            rounds=args.interleave_rounds,
            steps=args.steps,
            warmup=args.warmup,
            precision=args.precision,
        )
        ours = [r for r in results if not _is_peer(r)]
        peer = results[-1]
        ratio_rows = [
            {
                "ours": _label(r),
                "peer": _label(peer),
                "ratio": r.img_per_s / peer.img_per_s,
                "task": "infer",
            }
            for r in ours
        ]
        return results, info, ratio_rows

    dataset = normalization = None
    if args.data in ("real", "both"):
        from keras_resnet.data import channel_stats

        dataset = load_real_data(args.dataset, size, limit=args.real_limit)
        shape = dataset.image_shape
        # Raw uint8 pixels in; the models normalize them (their 'normalize' layer).
        normalization = channel_stats(dataset.x_train)
        info["dataset"] = {
            "name": dataset.name,
            "source": dataset.source,
            "train_images": len(dataset.x_train),
        }
    for spec in args.models:
        name, options, label = parse_model_spec(spec)
        overrides = {**model_overrides(args), **options}
        model = get_model(
            name,
            input_shape=shape,
            num_classes=args.num_classes,
            normalization=normalization,
            **overrides,
        )
        if args.variants:
            model = with_variants(model, args.variants)
            label += "+" + "+".join(args.variants)
        if "compiled" in args.paths:
            train_args = dict(
                name=label,
                batch_size=args.batch_size,
                steps_per_execution=args.steps_per_execution,
                devices=args.devices,
                sync_batch_norm=args.sync_batch_norm,
                **common,
            )
            if args.data in ("synthetic", "both"):
                record(bench_keras_train(model, profile_dir=args.profile, **train_args))
            if dataset is not None:
                real = (dataset.x_train, dataset.y_train.astype("int32"))
                record(bench_keras_train(model, real=real, dataset=dataset.name, **train_args))
        if "pipeline" in args.paths:
            import tempfile

            pipeline_overrides = {"stem": "imagenet", **overrides}
            if args.pipeline_no_augment:
                pipeline_overrides["augment"] = False
            record(
                bench_pipeline(
                    name,
                    dataset,
                    label=label,
                    batch_size=args.batch_size,
                    epochs=args.pipeline_epochs,
                    precision=args.precision,
                    steps_per_execution=args.steps_per_execution,
                    output_dir=tempfile.mkdtemp(prefix="bench_pipeline_"),
                    overrides=pipeline_overrides,
                    peak_flops=peak,
                    flops_per_image=count_flops(model),
                )
            )
        if "fit" in args.paths:
            record(
                bench_keras_fit(
                    model,
                    name=label,
                    batch_size=args.batch_size,
                    steps_per_execution=args.steps_per_execution,
                    steps=args.steps,
                    precision=args.precision,
                    peak_flops=peak,
                )
            )
        if not args.no_inference:
            record(bench_keras_infer(model, name=label, batch_size=args.batch_size, **common))

    if any(p.startswith("keras") for p in args.peers):
        app = keras.applications.ResNet50(weights=None, input_shape=shape, classes=args.num_classes)
        app_name = "keras.applications.ResNet50"
        if "keras-fit" in args.peers:
            record(
                bench_keras_fit(
                    app,
                    name=app_name,
                    batch_size=args.batch_size,
                    steps=args.steps,
                    precision=args.precision,
                    peak_flops=peak,
                )
            )
        if "keras-compiled" in args.peers:
            record(bench_keras_train(app, name=app_name, batch_size=args.batch_size, **common))
    if any(p.startswith("torch") for p in args.peers):
        if importlib.util.find_spec("torchvision") is None:
            print("torchvision is not installed: torch peers skipped", file=sys.stderr)
        else:
            # torchvision's resnet50 is v1.5, as ours (keras.applications' is v1, 6% fewer).
            flops_r50 = count_flops(
                get_model("resnet50", input_shape=shape, num_classes=args.num_classes)
            )
            for compiled in (False, True):
                if ("torch-compile" if compiled else "torch") not in args.peers:
                    continue
                record(
                    bench_torchvision(
                        "resnet50",
                        batch_size=args.batch_size,
                        image_size=size,
                        compile=compiled,
                        num_classes=args.num_classes,
                        in_channels=args.channels,
                        flops_per_image=flops_r50,
                        **common,
                    )
                )
    return results, info, ratios(results)
