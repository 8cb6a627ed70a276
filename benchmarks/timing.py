"""Timing and the record of one measurement: windows closed by a device synchronization, the
median step, model FLOPs utilization, the device, and the `Result` every path returns.

The device is `keras_resnet.training.devices`' (`device_description`); only the accelerator's
product name, which the MFU peak needs and TensorFlow's logical devices do not give, is probed
here."""

from __future__ import annotations

import datetime
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import keras
import numpy as np

from keras_resnet.training.devices import accelerators, device_description
from keras_resnet.utils import installed

# Dense bf16 tensor-core peaks from the vendors' datasheets (SXM parts), for MFU.
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12}


@dataclass
class Result:
    """One measurement. `img_per_s` is `batch_size / median(step seconds)`."""

    name: str
    framework: str  # 'keras-jax', 'keras-tensorflow', 'keras-torch', 'torch'
    task: str  # 'train' or 'infer'
    path: str  # 'compiled', 'fit', 'eager', 'torch.compile', 'predict_on_batch', 'pipeline'
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


def no_sync(out) -> None:
    """For calls that return host values (`train_on_batch`, `predict_on_batch`): already synced."""


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


def make_result(
    stats: dict,
    *,
    name: str,
    task: str,
    path: str,
    precision: str,
    batch_size: int,
    input_shape: Sequence[int],
    data: str = "synthetic",
    framework: str | None = None,
    devices: int = 1,
    flops_per_image: int | None = None,
    peak_flops: float | None = None,
    peak_memory_bytes: int | None = None,
    notes: Sequence[str] = (),
) -> Result:
    """A `Result` from `summarize`'s `stats`, with its MFU computed from the FLOPs and the peak.

    Args:
        stats: `img_per_s`, `step_ms`, `step_ms_spread`, `timed_steps`.
        framework: default `keras-<backend>`.
        Other arguments: the fields of `Result` of the same name.

    Returns:
        The `Result`.
    """
    return Result(
        name=name,
        framework=framework or f"keras-{keras.backend.backend()}",
        task=task,
        path=path,
        data=data,
        precision=precision,
        batch_size=batch_size,
        input_shape=tuple(input_shape),
        devices=devices,
        flops_per_image=flops_per_image,
        mfu=mfu(flops_per_image, stats["img_per_s"], task, peak_flops, devices),
        peak_memory_bytes=peak_memory_bytes,
        notes=list(notes),
        **stats,
    )


def accelerator_name() -> str | None:
    """The product name of the first accelerator Keras' backend sees ('NVIDIA H200'), None on CPU.

    `device_description` words the set ('1 x NVIDIA H200') but, on TensorFlow, names a logical
    device ('/device:GPU:0'); the datasheet peak of `peak_flops_for` needs the product's name.
    """
    devices = accelerators()
    if not devices:
        return None
    backend = keras.backend.backend()
    if backend == "jax":
        return devices[0].device_kind
    if backend == "tensorflow":
        import tensorflow as tf

        gpu = tf.config.list_physical_devices("GPU")[0]
        return tf.config.experimental.get_device_details(gpu).get("device_name")
    import torch

    return torch.cuda.get_device_name(0)


def device_info() -> dict:
    """Backend, devices and library versions, for the JSON record: `device` is
    `keras_resnet.training.devices.device_description()`, `accelerator` the product name (the
    torch peers' GPU when Keras' backend sees none), or None on CPU."""
    backend = keras.backend.backend()
    info = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "backend": backend,
        "keras": keras.__version__,
        "python": platform.python_version(),
        "host": platform.node(),
        "device": device_description(),
        "device_count": max(1, len(accelerators())),
        "accelerator": accelerator_name(),
    }
    if backend == "jax":
        import jax

        info["jax"] = jax.__version__
    elif backend == "tensorflow":
        import tensorflow as tf

        info["tensorflow"] = tf.__version__
    if installed("torch"):
        import torch

        info["torch"] = torch.__version__
        if info["accelerator"] is None and torch.cuda.is_available():
            info["accelerator"] = torch.cuda.get_device_name(0)
    return info


def peak_flops_for(device: str | None) -> float | None:
    """Datasheet bf16 peak for a device name such as 'NVIDIA H100 80GB HBM3'; None if unknown."""
    for key, value in PEAK_BF16_FLOPS.items():
        if device and key in device.upper():
            return value
    return None


def synthetic_data(
    batch_size: int, input_shape: Sequence[int], num_classes: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """A random float32 batch (normal, not zeros: zeros can run faster than real data)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch_size, *input_shape), dtype=np.float32)
    y = rng.integers(0, num_classes, size=(batch_size,), dtype=np.int32)
    return x, y


def sgd_momentum() -> keras.optimizers.Optimizer:
    """The optimizer of every training figure: SGD, learning rate 0.01, momentum 0.9."""
    return keras.optimizers.SGD(learning_rate=0.01, momentum=0.9)


def mean_sparse_ce(y_true, y_pred):
    """The loss of every training figure: mean sparse categorical cross-entropy."""
    return keras.ops.mean(keras.losses.sparse_categorical_crossentropy(y_true, y_pred))


@dataclass
class Timing:
    """What a training or inference loop measured, before it becomes a `Result`."""

    times: list[float]
    steps_per_window: int = 1
    final_loss: float | None = None
    peak_memory_bytes: int | None = None
    notes: list[str] = field(default_factory=list)
