"""Data-parallel training over several processes (hosts) on the JAX backend.

Keras' own variables start it: every process runs the same `keras-resnet train` command with

    KERAS_DISTRIBUTION_JOB_ADDRESSES  the coordinator's host:port (process 0's), or every
                                      process's address, comma-separated, process 0's first
    KERAS_DISTRIBUTION_NUM_PROCESSES  the number of processes, N
    KERAS_DISTRIBUTION_PROCESS_ID     this process's index, 0 to N - 1

and `initialize` joins them through `keras.distribution.initialize` (`jax.distributed`). A
`keras.distribution.DataParallel` then spans the devices of every process, and each training
batch a process feeds is its share of the global batch: Keras' JAX trainer assembles the
global batch from the processes' batches in process order
(`jax.make_array_from_process_local_data`). `--batch-size` stays the global batch, so the
learning rate, the steps per epoch and the run's figures are those of one process over all the
devices.

Each process reads only its share of the training data (`share_bounds`): every process draws
the same seeded order for an epoch, and process i takes rows [i * b, (i + 1) * b) of each
global batch of that order, b = batch_size / N. The global batches are then those of a
one-process run with the same seed, image for image. Validation and test splits are read whole
by every process (so that the figures are exact; the duplicated batches count every image N
times, which leaves means unchanged). Process 0 alone writes the run folder (`is_writer`).
"""

from __future__ import annotations

import contextlib
import os

import keras
import numpy as np

from keras_resnet.training import devices
from keras_resnet.utils import OptionError

ADDRESSES_ENV = "KERAS_DISTRIBUTION_JOB_ADDRESSES"
PROCESSES_ENV = "KERAS_DISTRIBUTION_NUM_PROCESSES"
PROCESS_ID_ENV = "KERAS_DISTRIBUTION_PROCESS_ID"


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    if not value.isdigit():
        raise ValueError(f"{name} must be a whole number, received {name}={value!r}")
    return int(value)


def environment() -> tuple[int, int]:
    """(processes, this process's index) from Keras' variables; (1, 0) when
    KERAS_DISTRIBUTION_NUM_PROCESSES is unset or 1.

    Raises:
        ValueError: a variable that is not a number, a process index out of range, or no job
            address for several processes (the message names the variable and its value).
    """
    count = _env_int(PROCESSES_ENV, 1)
    if count < 1:
        raise ValueError(f"{PROCESSES_ENV} must be at least 1, received {PROCESSES_ENV}={count}")
    if count == 1:
        return 1, 0
    index = _env_int(PROCESS_ID_ENV, -1)
    if not 0 <= index < count:
        raise ValueError(
            f"{PROCESS_ID_ENV} must be set to this process's index, 0 to {count - 1}, with "
            f"{PROCESSES_ENV}={count}; received "
            f"{PROCESS_ID_ENV}={os.environ.get(PROCESS_ID_ENV, '(unset)')!r}"
        )
    if not os.environ.get(ADDRESSES_ENV, "").strip():
        raise ValueError(
            f"{ADDRESSES_ENV} must name the coordinator (process 0's host:port) with "
            f"{PROCESSES_ENV}={count}; received it unset"
        )
    return count, index


def shard() -> tuple[int, int] | None:
    """(this process's index, processes) when several processes train together, else None."""
    count, index = environment()
    return (index, count) if count > 1 else None


def is_writer() -> bool:
    """Whether this process writes the run folder: process 0, or the only process."""
    return environment()[1] == 0


def initialize() -> None:
    """Joins the other processes (`keras.distribution.initialize`, which reads Keras' variables)
    when several are set; once per process, before JAX starts its devices. Nothing happens for
    one process.

    On a machine without accelerators the processes' CPU devices exchange gradients through
    Gloo (`jax_cpu_collectives_implementation`); Keras' own start also sums a seed over the CPU
    devices of every process, which needs it wherever it runs.

    Raises:
        ValueError: bad variables (`environment`), a backend other than JAX, or JAX started
            before this call.
    """
    count, _ = environment()
    if count == 1:
        return
    backend = keras.backend.backend()
    if backend != "jax":
        raise ValueError(
            f"training over several processes ({PROCESSES_ENV}={count}) needs the JAX backend "
            f"(KERAS_BACKEND=jax), received KERAS_BACKEND={backend!r}"
        )
    import jax

    if jax.distributed.is_initialized():
        return
    with contextlib.suppress(AttributeError, ValueError):  # an older JAX without the option
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        keras.distribution.initialize()
    except RuntimeError as error:  # e.g. "must be called before any JAX computations"
        raise ValueError(
            f"cannot join the other processes ({ADDRESSES_ENV}="
            f"{os.environ.get(ADDRESSES_ENV)!r}): {str(error).splitlines()[0]}"
        ) from None


def distribution_scope(distribute: str):
    """`devices.distribution_scope` for one process. For several: `keras.distribution.
    DataParallel` over the devices of every process (their GPUs, else their CPUs), set as
    Keras' distribution, with `auto_shard_dataset=False`: each process feeds its own share of
    every batch (`share_bounds`).

    Returns:
        (a context manager to build and compile the model in, the number of devices).

    Raises:
        OptionError: `distribute` is not 'auto' over several processes.
    """
    if shard() is None:
        return devices.distribution_scope(distribute)
    if distribute != "auto":
        raise OptionError(
            "distribute",
            f"several processes ({PROCESSES_ENV}={environment()[0]}) train data-parallel over "
            f"all their devices: distribute must be 'auto', received distribute={distribute!r}",
        )
    initialize()
    everywhere = keras.distribution.list_devices()
    keras.distribution.set_distribution(
        keras.distribution.DataParallel(devices=everywhere, auto_shard_dataset=False)
    )
    return contextlib.nullcontext(), len(everywhere)


def share_bounds(index: int, batch_size: int, share: tuple[int, int] | None) -> tuple[int, int]:
    """The positions [start, stop) in an epoch's order of one process's share of global batch
    `index` (`share` = (process index, processes); None: the whole batch).

    Raises:
        ValueError: `batch_size` is not a multiple of the processes.
    """
    start = index * batch_size
    if share is None:
        return start, start + batch_size
    process, count = share
    if batch_size % count:
        raise ValueError(
            f"batch_size must be a multiple of the {count} processes, "
            f"received batch_size={batch_size}"
        )
    part = batch_size // count
    return start + process * part, start + (process + 1) * part


@contextlib.contextmanager
def local_scope():
    """Keras' distribution unset for the block (in this thread), over several processes: a
    model built inside lives on this process's device only, so that process 0 can save it
    alone (saving a distributed model runs collectives that every process must join)."""
    if shard() is None:
        yield
        return
    previous = keras.distribution.distribution()
    keras.distribution.set_distribution(None)
    try:
        yield
    finally:
        keras.distribution.set_distribution(previous)


def barrier(name: str) -> None:
    """Waits until every process reaches the barrier `name` (nothing for one process)."""
    if shard() is not None:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def agree(value: int, what: str) -> None:
    """Raises ValueError in every process unless all processes hold the same `value`
    (nothing for one process).

    Args:
        value: a whole number each process computed (e.g. the epochs in the run's backup).
        what: the value in words, for the message (e.g. 'completed epochs in RUN/backup').
    """
    if shard() is None:
        return
    from jax.experimental import multihost_utils

    values = [int(v) for v in np.ravel(multihost_utils.process_allgather(np.int32(value)))]
    if len(set(values)) > 1:
        seen = ", ".join(f"process {i}: {v}" for i, v in enumerate(values))
        raise ValueError(f"the processes disagree on the {what} ({seen})")


__all__ = [
    "agree",
    "barrier",
    "distribution_scope",
    "environment",
    "initialize",
    "is_writer",
    "local_scope",
    "share_bounds",
    "shard",
]
