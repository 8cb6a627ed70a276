"""Training and inference throughput of Keras models: the 'compiled' step (JAX; elsewhere
`train_on_batch`), `model.fit`, `predict`, models measured in alternation, and the end-to-end
pipeline of `keras_resnet.training`."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence

import keras
import numpy as np

from benchmarks.timing import (
    Result,
    Timing,
    make_result,
    no_sync,
    sgd_momentum,
    summarize,
    synthetic_data,
    time_windows,
)
from keras_resnet.analysis import count_flops
from keras_resnet.utils import check_int


def _jax_trainer():
    """The JAX-only module, imported where it is used: JAX is optional on the other backends."""
    from benchmarks import jax_trainer

    return jax_trainer


def _on_jax() -> bool:
    return keras.backend.backend() == "jax"


def _input_shape(model) -> tuple:
    return tuple(model.inputs[0].shape[1:])


def resize_images(images: np.ndarray, image_size: Sequence[int], chunk: int = 1024) -> np.ndarray:
    """uint8 NHWC images resized (bilinear, on the default device, in chunks) back to uint8."""
    out = []
    for start in range(0, len(images), chunk):
        part = keras.ops.image.resize(
            images[start : start + chunk].astype(np.float32),
            tuple(image_size),
            interpolation="bilinear",
        )
        out.append(np.clip(np.round(keras.ops.convert_to_numpy(part)), 0, 255))
    return np.concatenate(out).astype(np.uint8)


def load_real_data(
    name: str = "fashion_mnist", image_size: Sequence[int] | None = None, limit: int | None = None
):
    """A dataset of `keras_resnet.data.load_dataset`, optionally cut to its first `limit` images
    per split and resized to `image_size` (bilinear, back to uint8), e.g. Fashion-MNIST at 224 px
    for a large-input benchmark.

    Returns:
        A `keras_resnet.data.Dataset`.
    """
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
    return dataclasses.replace(
        dataset,
        name=f"{dataset.name}_{image_size[0]}px",
        x_train=resize_images(dataset.x_train, image_size),
        x_test=resize_images(dataset.x_test, image_size),
    )


def _time_train_on_batch(
    model,
    *,
    batch_size: int,
    steps: int,
    warmup: int,
    real: tuple[np.ndarray, np.ndarray] | None,
    image_size: Sequence[int] | None,
) -> Timing:
    """The 'compiled' path's stand-in off JAX: `train_on_batch`, which returns host values (so
    each call is synchronous); real batches are gathered and resized on the host."""
    model.compile(optimizer=sgd_momentum(), loss="sparse_categorical_crossentropy")
    num_classes = int(model.outputs[0].shape[-1])
    x, y = synthetic_data(batch_size, _input_shape(model), num_classes)
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

    times = time_windows(run, no_sync, windows=steps, warmup=warmup)
    final_loss = float(np.asarray(run()).reshape(-1)[0])
    notes = ["train_on_batch (returns host values: synchronous)"]
    if real is not None:
        notes.append("host pipeline: numpy gather + resize per step")
    return Timing(times, 1, final_loss, None, notes)


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
    real: tuple[np.ndarray, np.ndarray] | None = None,
    dataset: str = "",
    image_size: Sequence[int] | None = None,
    profile_dir: str | None = None,
    sync_batch_norm: bool = False,
) -> Result:
    """Training throughput of a Keras model through the 'compiled' path.

    Args:
        model: a built Keras classifier (sparse labels).
        name: the result's name.
        batch_size: per device.
        steps, warmup: timed and untimed steps.
        precision: recorded in the result (the model was built under it).
        steps_per_execution: steps per compiled program (JAX).
        devices: data parallel over this many devices (JAX).
        peak_flops: the devices' peak FLOP/s, for MFU.
        real: `(images, labels)` (uint8 NHWC): batches drawn from that dataset, resident on the
            device, augmented there (resized to `image_size` if given); otherwise one synthetic
            batch on the device is reused.
        dataset: the real dataset's name, for the record.
        image_size: resize real batches to this (height, width).
        profile_dir: JAX: trace a few more steps there with `jax.profiler`.
        sync_batch_norm: with several devices, normalize over the global batch (always so for
            real data).

    Returns:
        The `Result`; the model's variables hold the trained state.
    """
    check_int("batch_size", batch_size, 1)
    check_int("steps", steps, 1)
    input_shape = _input_shape(model)
    global_batch = batch_size * devices
    if _on_jax():
        timing = _jax_trainer().time_training(
            model,
            batch_size=global_batch,
            windows=max(1, math.ceil(steps / steps_per_execution)),
            warmup=warmup,
            steps_per_execution=steps_per_execution,
            devices=devices,
            local_batch_norm=not sync_batch_norm and real is None,
            real=real,
            image_size=image_size,
            profile_dir=profile_dir,
        )
    elif devices != 1:
        raise ValueError(
            f"devices must be 1 on the {keras.backend.backend()} backend, "
            f"received devices={devices}"
        )
    else:
        timing = _time_train_on_batch(
            model,
            batch_size=batch_size,
            steps=steps,
            warmup=warmup,
            real=real,
            image_size=image_size,
        )
    notes = [*timing.notes, f"steps_per_execution={timing.steps_per_window}"]
    if not math.isfinite(timing.final_loss):
        notes.append(f"loss not finite: {timing.final_loss}")
    notes.append(f"final loss {timing.final_loss:.4g}")
    if real is not None and image_size:
        input_shape = (*image_size, input_shape[-1])
    return make_result(
        summarize(timing.times, timing.steps_per_window, global_batch),
        name=name,
        task="train",
        path="compiled" if _on_jax() else "train_on_batch",
        data="synthetic" if real is None else f"real:{dataset}",
        precision=precision,
        batch_size=global_batch,
        input_shape=input_shape,
        devices=devices,
        flops_per_image=count_flops(model),
        peak_flops=peak_flops,
        peak_memory_bytes=timing.peak_memory_bytes,
        notes=notes,
    )


class _EpochTimer(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.times: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        # Keras turns the logs into Python floats at the epoch's end, a device sync.
        self.times.append(time.perf_counter() - self.start)


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
    check_int("steps", steps, 1)
    input_shape = _input_shape(model)
    steps = max(steps_per_execution, steps - steps % steps_per_execution)
    x1, y1 = synthetic_data(batch_size, input_shape, int(model.outputs[0].shape[-1]))
    model.compile(
        optimizer=sgd_momentum(),
        loss="sparse_categorical_crossentropy",
        steps_per_execution=steps_per_execution,
    )
    timer = _EpochTimer()
    model.fit(
        np.concatenate([x1] * steps),
        np.concatenate([y1] * steps),
        batch_size=batch_size,
        epochs=4,
        shuffle=False,
        verbose=0,
        callbacks=[timer],
    )
    return make_result(
        summarize(timer.times[1:], steps, batch_size),
        name=name,
        task="train",
        path="fit",
        precision=precision,
        batch_size=batch_size,
        input_shape=input_shape,
        flops_per_image=count_flops(model),
        peak_flops=peak_flops,
        notes=[
            f"numpy input, {steps} steps per epoch, steps_per_execution={steps_per_execution}",
            "median of 3 epochs after 1 warm-up epoch",
        ],
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
    input_shape = _input_shape(model)
    x, _ = synthetic_data(batch_size, input_shape, 2)
    if _on_jax():
        timing = _jax_trainer().time_inference(model, x, windows=steps, warmup=warmup)
        path = "compiled"
    else:
        times = time_windows(
            lambda: model.predict_on_batch(x), no_sync, windows=steps, warmup=warmup
        )
        timing, path = Timing(times), "predict_on_batch"
    return make_result(
        summarize(timing.times, 1, batch_size),
        name=name,
        task="infer",
        path=path,
        precision=precision,
        batch_size=batch_size,
        input_shape=input_shape,
        flops_per_image=count_flops(model),
        peak_flops=peak_flops,
        peak_memory_bytes=timing.peak_memory_bytes,
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
    check_int("rounds", rounds, 1)
    per_model: dict[str, list[float]] = {name: [] for name in models}
    calls = {}
    for name, model in models.items():
        x = synthetic_data(batch_size, _input_shape(model), 2)[0]
        calls[name] = lambda m=model, x=x: m.predict_on_batch(x)
        time_windows(calls[name], no_sync, windows=0, warmup=warmup)
    for _ in range(rounds):
        for name in models:
            per_model[name] += time_windows(calls[name], no_sync, windows=steps, warmup=0)
    return [
        make_result(
            summarize(per_model[name], 1, batch_size),
            name=name,
            task="infer",
            path="predict_on_batch",
            precision=precision,
            batch_size=batch_size,
            input_shape=_input_shape(model),
            flops_per_image=count_flops(model),
            notes=[f"interleaved with the other models: {rounds} rounds x {steps} batches"],
        )
        for name, model in models.items()
    ]


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
    """End to end through `keras_resnet.training.train` on a `keras_resnet.data.Dataset` (numpy
    uint8 -> `model.fit`, augmentation layers and normalization inside the model). The figure is
    the pipeline's own `images_per_s`: the median epoch (the first one compiles), from the first
    to the last training step of the epoch. `overrides`: `TrainConfig.create` options, model
    options (width, stem, ...) and training options (augment, ...) side by side."""
    from keras_resnet import training

    check_int("epochs", epochs, 1)
    config = training.TrainConfig.create(
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
        "augmentation (RandomPadCrop, RandomFlip, RandomErasing) inside the model"
        if config.augment
        else "no augmentation"
    )
    stats = {
        "img_per_s": rate,
        "step_ms": 1e3 * batch_size / rate,
        "step_ms_spread": (float("nan"), float("nan")),
        "timed_steps": (epochs - 1) * math.ceil(metrics["train_images"] / batch_size),
    }
    return make_result(
        stats,
        name=label or model_name,
        task="train",
        path="pipeline",
        data=f"real:{dataset.name}",
        precision=precision,
        batch_size=batch_size,
        input_shape=dataset.image_shape,
        flops_per_image=flops_per_image,
        peak_flops=peak_flops,
        notes=[
            f"keras_resnet.training.train, {epochs} epochs of {metrics['train_images']} "
            f"images, median epoch; steps_per_execution={steps_per_execution}; {augment}"
        ],
    )
