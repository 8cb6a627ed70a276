"""The accelerators a backend sees, in words, and the data-parallel set-up over them."""

from __future__ import annotations

import contextlib
import os
import platform
from typing import Any

import keras


def accelerators() -> list[Any]:
    """The backend's visible GPUs (or TPUs): JAX devices, TF logical GPUs or torch CUDA indices."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return [d for d in jax.devices() if d.platform != "cpu"]
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.config.list_logical_devices("GPU")
    if backend == "torch":
        import torch

        return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    return []


def device_description() -> str:
    """e.g. '1 x NVIDIA H100 80GB HBM3' or 'cpu (x86_64, 2 cores)'."""
    devices = accelerators()
    if not devices:
        return f"cpu ({platform.machine()}, {os.cpu_count()} cores)"
    backend = keras.backend.backend()
    if backend == "jax":
        name = devices[0].device_kind
    elif backend == "torch":
        import torch

        name = torch.cuda.get_device_name(0)
    else:
        name = devices[0].name
    return f"{len(devices)} x {name}"


def process_count() -> int:
    """Processes of a multi-host JAX run (KERAS_DISTRIBUTION_NUM_PROCESSES; 1 when unset)."""
    value = os.environ.get("KERAS_DISTRIBUTION_NUM_PROCESSES", "") or "1"
    return int(value) if value.isdigit() else 1


def distribution_scope(distribute: str):
    """Data parallelism over every visible GPU (`distribute='auto'`): JAX `DataParallel` (set as
    Keras' global distribution: call this inside `utils.keras_globals()`) or a TF
    `MirroredStrategy` scope.

    Multi-host (JAX): set KERAS_DISTRIBUTION_JOB_ADDRESSES, _NUM_PROCESSES and _PROCESS_ID in
    every process; `keras.distribution.initialize()` is then called here (docs/TRAINING.md).

    Returns:
        (a context manager to build and compile the model in, the number of devices).
    """
    backend = keras.backend.backend()
    if backend == "jax" and distribute == "auto" and process_count() > 1:
        # Multi-host: joins the other processes (addresses, count and rank from the
        # KERAS_DISTRIBUTION_* variables); list_devices() then spans every host.
        keras.distribution.initialize()
    devices = accelerators() if distribute == "auto" else []
    if len(devices) > 1 and backend == "jax":
        keras.distribution.set_distribution(
            keras.distribution.DataParallel(devices=keras.distribution.list_devices())
        )
    elif len(devices) > 1 and backend == "tensorflow":
        import tensorflow as tf

        return tf.distribute.MirroredStrategy().scope(), len(devices)
    return contextlib.nullcontext(), max(len(devices), 1)
