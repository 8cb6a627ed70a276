"""The 'compiled' path on JAX: a Keras model's train step as one XLA program, no Keras trainer.

Imported only on the JAX backend (JAX is optional where TensorFlow or torch runs Keras).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from benchmarks.timing import (
    Timing,
    mean_sparse_ce,
    sgd_momentum,
    synthetic_data,
    time_windows,
)
from keras_resnet.utils import check_int


def augment_on_device(images, key, image_size: Sequence[int] | None):
    """uint8 batch -> float32: random horizontal flip, random 4 px pad-and-crop (at the native
    size), then a resize (if asked), on the device, as part of the compiled step."""
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
        check_int("steps_per_execution", steps_per_execution, 1)
        check_int("devices", devices, 1)
        if devices > len(jax.devices()):
            raise ValueError(
                f"devices must be <= {len(jax.devices())} (the devices present), "
                f"received devices={devices}"
            )
        self.model = model
        self.steps = steps_per_execution
        self.optimizer = sgd_momentum()
        self.optimizer.build(model.trainable_variables)
        self.devices = devices
        self.local_batch_norm = local_batch_norm
        self.mesh = None
        self.replicated = None
        self.batch_sharded = None
        if devices > 1:
            self.mesh = Mesh(np.array(jax.devices()[:devices]), ("batch",))
            self.replicated = NamedSharding(self.mesh, PartitionSpec())
            self.batch_sharded = NamedSharding(self.mesh, PartitionSpec("batch"))

    def state(self):
        state = (
            [v.value for v in self.model.trainable_variables],
            [v.value for v in self.model.non_trainable_variables],
            [v.value for v in self.optimizer.variables],
        )
        if self.mesh is not None:
            state = jax.device_put(state, self.replicated)
        return state

    def put_batch(self, array):
        return jax.device_put(array, self.batch_sharded)

    def put_replicated(self, array):
        return jax.device_put(array, self.replicated)

    def write_back(self, state) -> None:
        """Assigns a trained state to the model's variables, so the model reflects the run."""
        trainable, non_trainable, _ = state
        for v, value in zip(self.model.trainable_variables, trainable, strict=True):
            v.assign(value)
        for v, value in zip(self.model.non_trainable_variables, non_trainable, strict=True):
            v.assign(value)

    def _one_step(self, state, x, y):
        model, optimizer = self.model, self.optimizer
        trainable, non_trainable, opt_vars = state

        def loss_fn(trainable, non_trainable):
            y_pred, non_trainable = model.stateless_call(trainable, non_trainable, x, training=True)
            return mean_sparse_ce(y, y_pred), non_trainable

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

        def run(state, x, y):
            def body(_, carry):
                return self._one_step(carry[0], x, y)

            if self.steps == 1:
                return self._one_step(state, x, y)
            return jax.lax.fori_loop(0, self.steps, body, (state, jnp.float32(0)))

        if self.mesh is not None and self.local_batch_norm:
            P = PartitionSpec
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
                x = augment_on_device(jnp.take(images, idx, axis=0), k_aug, image_size)
                y = jnp.take(labels, idx, axis=0)
                if self.mesh is not None:
                    x = jax.lax.with_sharding_constraint(x, self.batch_sharded)
                    y = jax.lax.with_sharding_constraint(y, self.batch_sharded)
                return self._one_step(state, x, y)

            if self.steps == 1:
                return body(0, (state, jnp.float32(0)))
            return jax.lax.fori_loop(0, self.steps, body, (state, jnp.float32(0)))

        return jax.jit(run, donate_argnums=0)


def predict_fn(model):
    """The model's inference (training=False) as one jitted function of its variables."""

    def predict(trainable, non_trainable, x):
        return model.stateless_call(trainable, non_trainable, x, training=False)[0]

    return jax.jit(predict)


def compiled_peak_bytes(jitted, *args) -> int | None:
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


def sync(out) -> None:
    """Blocks until the device has computed `out`."""
    jax.block_until_ready(out)


def time_training(
    model,
    *,
    batch_size: int,
    windows: int,
    warmup: int,
    steps_per_execution: int = 1,
    devices: int = 1,
    local_batch_norm: bool = True,
    real: tuple[np.ndarray, np.ndarray] | None = None,
    image_size: Sequence[int] | None = None,
    profile_dir: str | None = None,
) -> Timing:
    """Times `windows` compiled programs of `steps_per_execution` steps each, then writes the
    trained state back into `model`. `batch_size` is the global batch. With `real=(images,
    labels)` each step draws a batch from that uint8 dataset on the device (see `real_step`);
    otherwise one synthetic batch on the device is reused. `profile_dir`: also trace a few more
    windows there with `jax.profiler` (xplane.pb, read offline for kernel times and gaps)."""
    trainer = JaxTrainer(
        model,
        steps_per_execution=steps_per_execution,
        devices=devices,
        local_batch_norm=local_batch_norm,
    )
    notes = []
    if real is None:
        num_classes = int(model.outputs[0].shape[-1])
        x, y = synthetic_data(batch_size, tuple(model.inputs[0].shape[1:]), num_classes)
        step, args = trainer.synthetic_step(), (trainer.put_batch(x), trainer.put_batch(y))
    else:
        images, labels = (trainer.put_replicated(a) for a in real)
        step, args = trainer.real_step(batch_size, image_size), (images, labels, jax.random.key(0))
        notes.append(
            "uint8 dataset resident on the device; gather + flip + crop"
            + (" + resize" if image_size else "")
            + " inside the compiled step"
        )
    holder = {"state": trainer.state(), "i": 0}
    peak = compiled_peak_bytes(step, holder["state"], *args, *(() if real is None else (0,)))

    def run():
        start = () if real is None else (holder["i"] * steps_per_execution,)
        holder["state"], loss = step(holder["state"], *args, *start)
        holder["i"] += 1
        return loss

    times = time_windows(run, sync, windows=windows, warmup=warmup)
    if profile_dir:
        with jax.profiler.trace(profile_dir):
            time_windows(run, sync, windows=min(windows, 5), warmup=0)
    final_loss = float(run())
    trainer.write_back(holder["state"])
    if devices > 1:
        kind = "local" if trainer.local_batch_norm else "synchronized"
        notes.append(f"data parallel, {kind} batch norm")
    return Timing(times, steps_per_execution, final_loss, peak, notes)


def time_inference(model, x: np.ndarray, *, windows: int, warmup: int) -> Timing:
    """Times the jitted inference of `model` on the batch `x`, resident on the device."""
    predict = predict_fn(model)
    tv = [v.value for v in model.trainable_variables]
    ntv = [v.value for v in model.non_trainable_variables]
    xd = jax.device_put(x)
    peak = compiled_peak_bytes(predict, tv, ntv, xd)
    times = time_windows(lambda: predict(tv, ntv, xd), sync, windows=windows, warmup=warmup)
    return Timing(times, peak_memory_bytes=peak)
