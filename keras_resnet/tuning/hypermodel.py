"""The HyperModel: a trial is a `keras_resnet.training.TrainConfig` (the trial's architecture and
recipe values over a base configuration), built and compiled by `keras_resnet.training`, and
trained in a fresh process of its own (`run_trial_in_process`) or in the search's process.

Each trial records its parameter count, FLOPs (`keras_resnet.count_flops`), validation accuracy
and wall time as KerasTuner metrics.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import time
import traceback
from pathlib import Path

import keras
import keras_tuner

from keras_resnet import training
from keras_resnet.analysis import count_flops, count_params
from keras_resnet.data import gpu_crop, pipelines
from keras_resnet.data.mixing import MixedBatches
from keras_resnet.data.streamed import StreamedSource
from keras_resnet.subprocess_utils import run_isolated
from keras_resnet.training import TrainConfig
from keras_resnet.training.recipe import training_callbacks
from keras_resnet.tuning.space import SearchSpace, config_from_values
from keras_resnet.tuning.store import OBJECTIVE, log_event, peak_rss_bytes
from keras_resnet.utils import dtype_policy, write_text_atomic

TRIAL_TARGET = "keras_resnet.tuning.hypermodel:run_trial_file"


def trial_epochs(values: dict, max_epochs: int) -> tuple[int, int]:
    """`(initial_epoch, epochs)` of a trial: Hyperband sets them in 'tuner/...' values (a
    continued trial trains epochs initial..epochs from its parent's weights); the other tuners
    train every trial for `max_epochs`."""
    return int(values.get("tuner/initial_epoch", 0)), int(values.get("tuner/epochs", max_epochs))


def trial_train_config(base: TrainConfig, values: dict, epochs: int | None = None) -> TrainConfig:
    """The `TrainConfig` of a trial: `base` with the trial's architecture (onto `base.model`)
    and recipe values; with `epochs`, also its epoch count.

    The one place that knows how a trial's values land on a TrainConfig. The warmup is at most
    a fifth of the trial's epochs (the recipe's 2 epochs would fill a 1-epoch Hyperband trial
    with warmup and never decay the learning rate).
    """
    model, recipe = config_from_values(values, base.model)
    config = dataclasses.replace(base, model=model, **recipe)
    if epochs is not None:
        warmup = min(base.warmup_epochs, epochs / 5)
        config = dataclasses.replace(config, epochs=max(1, epochs), warmup_epochs=warmup)
    return config


def trial_fit_data(config: TrainConfig, x, y=None, validation_data=None) -> dict:
    """`model.fit`'s data arguments of a trial.

    Arrays: `x`, `y` (one-hot) and `validation_data` as given, served as a run serves them
    (`MixedBatches`: whole batches, mixed with mixup or CutMix). A folder (`x` a
    `training.inputs.FolderParts` of parts 'train' and 'val'): streams of those parts built
    now, at the trial's batch size (tf.data on TensorFlow, a PyDataset with worker threads
    elsewhere, or the cache's rows); only the file lists cross into a trial's process, never
    images.
    """
    if isinstance(x, StreamedSource):

        def stream(part, train=False):
            return x.fit_stream(
                part, config.batch_size, train=train, seed=config.seed, augment=config.augment
            )

        validation = validation_data if validation_data is not None else stream("val")
        return {"x": stream("train", train=True), "validation_data": validation, "shuffle": False}
    # Arrays as a run serves them: whole batches in a new order every epoch (the last partial
    # batch dropped, as the schedule counts), mixed with mixup or CutMix when asked.
    batches = MixedBatches(
        x,
        y,
        config.batch_size,
        mixup=config.mixup,
        cutmix=config.cutmix,
        drop_remainder=True,
        seed=config.seed,
    )
    if validation_data is not None:  # batches of the trial's size, not fit's 32
        validation_data = MixedBatches(*validation_data, config.batch_size, shuffle=False)
    return {"x": batches, "validation_data": validation_data, "shuffle": False}


class ResNetHyperModel(keras_tuner.HyperModel):
    """A KerasTuner HyperModel over keras_resnet, trained with `keras_resnet.training`.

    Args:
        space: the `SearchSpace`.
        base: the search's `training.RunPlan` (`plan_run(..., folder=False)`): the resolved
            options every trial starts from (data, batch size, precision, recipe) and the
            preprocessing record with the normalization statistics; or a `TrainConfig`,
            planned here over `dataset`.
        dataset: a `keras_resnet.data.Dataset` whose `x_train` is the search's train part, or
            for a folder its `training.inputs.FolderParts` (file lists): it gives the
            schedule's length (the count of training images).
        max_epochs: epochs of a trial when the tuner does not set them (random, bayesian).
    """

    def __init__(self, space: SearchSpace, base, dataset, *, max_epochs: int = 10):
        super().__init__(name="keras_resnet", tunable=True)
        self.space = space
        if isinstance(base, TrainConfig):  # options alone: planned over the search's part
            base = training.plan_run(dataclasses.replace(base, val_size=0), dataset, folder=False)
        self.base = base.for_trial(base.config, dataset)  # holds the search's part only
        self.dataset = dataset
        self.max_epochs = int(max_epochs)

    def build(self, hp):
        """The trial's compiled training model. Its layers take the trial's precision; Keras'
        global dtype policy is as it was before the call, also on error."""
        values = self.space.declare(hp)
        initial_epoch, epochs = trial_epochs(values, self.max_epochs)
        # A continued Hyperband trial starts a new optimizer on its parent's weights; its
        # schedule spans only the epochs it trains (a warm restart, as in SGDR).
        config = trial_train_config(self.base.config, values, epochs - initial_epoch)
        plan = self.base.for_trial(config)
        with dtype_policy(config.precision):
            model = training.build_model(plan)
            if plan.streamed and plan.data.cache is not None:
                # Cache batches are squashed images and their sizes: cropped in the model.
                model = gpu_crop.training_model(model, seed=config.seed)
            return training.compile_model(model, plan)

    def fit(
        self,
        hp,
        model,
        x,
        y=None,
        *,
        validation_data=None,
        epochs=None,
        initial_epoch=0,
        callbacks=None,
        **kwargs,
    ):
        """Trains with `model.fit` and returns the trial's metrics: the best epoch's
        val_accuracy (as KerasTuner takes it from a History), params, flops, seconds, epochs.

        The trial's recipe applies: with EMA, validation scores the averaged weights (the
        checkpoint keeps the raw ones, which a continued Hyperband trial trains on); with mixup
        or CutMix, `x` and `y` are fed as mixed batches (`keras_resnet.data.MixedBatches`).
        For a folder, `x` is its `FolderParts` (file lists) and the streams are built here, in
        the trial's process, at the trial's batch size (`trial_fit_data`).
        """
        epochs = self.max_epochs if epochs is None else epochs
        kwargs.setdefault("verbose", self.base.config.verbose)
        config = trial_train_config(self.base.config, hp.values)
        callbacks = training_callbacks(config, swap_on_epoch=False) + list(callbacks or [])
        data = trial_fit_data(config, x, y, validation_data)
        start = time.perf_counter()
        with pipelines.quiet_end_of_data():
            history = model.fit(
                **data, epochs=epochs, initial_epoch=initial_epoch, callbacks=callbacks, **kwargs
            )
        seconds = time.perf_counter() - start
        accuracies = history.history.get(OBJECTIVE) or [float("nan")]
        network = gpu_crop.backbone_of(model)  # without a cache's crop wrapper
        return {
            OBJECTIVE: float(max(accuracies)),
            "val_loss": float(min(history.history.get("val_loss") or [float("nan")])),
            # Augmentation has no weights and no convolutions: these are the ResNet's own.
            "params": count_params(network),
            "flops": count_flops(network),
            "seconds": seconds,
            "epochs": int(epochs),
        }


def train_one_trial(payload: dict) -> dict:
    """Builds the trial's model, loads its parent trial's weights (Hyperband), logs a 'fit'
    event, and fits with a best-epoch checkpoint. Returns the trial's metrics.

    A Hyperband trial whose parent's checkpoint is gone trains from scratch for all its epochs
    (logged as a 'no_parent' event): a search resumed on another machine carries its trial
    records but not the checkpoints, which for wide networks exceed what can be carried (a
    width-4 ResNet-18 holds 179 M weights, 0.7 GB). That is Hyperband without weight reuse:
    the same decisions, more epochs.
    """
    hp = keras_tuner.HyperParameters.from_config(payload["hp"])
    hypermodel = payload["hypermodel"]
    parent = payload["parent_checkpoint"]
    if parent and not os.path.isfile(parent):
        if payload.get("project_dir"):
            log_event(payload["project_dir"], event="no_parent", **payload["event"])
        parent = None
        hp.values["tuner/initial_epoch"] = 0  # the schedule spans every epoch
        payload = {**payload, "kwargs": {**payload["kwargs"], "initial_epoch": 0}}
    model = hypermodel.build(hp)
    if parent:
        model.load_weights(parent)
    checkpoint = keras.callbacks.ModelCheckpoint(
        payload["checkpoint"],
        monitor=OBJECTIVE,
        mode="max",
        save_best_only=True,
        save_weights_only=True,
    )
    if payload.get("project_dir"):
        log_event(payload["project_dir"], event="fit", **payload["event"])
    return hypermodel.fit(hp, model, *payload["args"], callbacks=[checkpoint], **payload["kwargs"])


def run_trial_file(payload_file: str, result_file: str) -> int:
    """A trial process' whole job (see `run_trial_in_process`): the payload from a pickle
    file, the metrics and the process' peak RSS into `result_file` (written whole)."""
    try:
        with open(payload_file, "rb") as f:
            payload = pickle.load(f)
        result = {"status": "ok", "metrics": train_one_trial(payload)}
    except BaseException:  # noqa: BLE001 - everything goes back to the tuner as a failed trial
        result = {"status": "error", "traceback": traceback.format_exc()}
    result["peak_rss"] = peak_rss_bytes()
    write_text_atomic(result_file, json.dumps(result))
    return 0 if result["status"] == "ok" else 1


def run_trial_in_process(
    payload: dict, work_dir: str | os.PathLike, on_start=None
) -> tuple[dict, int]:
    """Runs one trial in a fresh Python process (`run_isolated`, which dies with this one);
    returns (metrics, the child's peak RSS).

    A process per trial hands all of a trial's memory back to the system when it ends: within
    one process, RSS grows with every trial on TensorFlow and JAX even after `clear_session()`
    (figures in docs/TUNING.md). The payload (hypermodel with its data, hyperparameters, fit
    arguments) goes by a pickle file in the trial's folder, deleted afterwards. `on_start(pid)`
    is called once the child runs.

    Raises:
        RuntimeError: the trial failed (its traceback in the message), or its process died
            without a result.
    """
    work_dir = Path(work_dir)
    payload_file = work_dir / f"payload.{os.getpid()}.pkl"
    result_file = work_dir / f"result.{os.getpid()}.json"
    result_file.unlink(missing_ok=True)
    try:
        with open(payload_file, "wb") as f:
            pickle.dump(payload, f, protocol=pickle.HIGHEST_PROTOCOL)
        child = run_isolated(TRIAL_TARGET, [payload_file, result_file], on_start=on_start)
        if not result_file.is_file():
            raise RuntimeError(
                f"the trial's process died without a result (exit code {child.returncode})"
            )
        result = json.loads(result_file.read_text())
    finally:
        payload_file.unlink(missing_ok=True)
        result_file.unlink(missing_ok=True)
    if result["status"] != "ok":
        raise RuntimeError(f"the trial failed in its process:\n{result['traceback']}")
    return result["metrics"], result["peak_rss"]


__all__ = [
    "ResNetHyperModel",
    "run_trial_file",
    "run_trial_in_process",
    "train_one_trial",
    "trial_epochs",
    "trial_fit_data",
    "trial_train_config",
]
