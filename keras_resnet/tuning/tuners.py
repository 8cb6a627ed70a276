"""The KerasTuner tuners of a search: `TrialLogging` (every trial's start and end logged with
the RSS, each trial in a process of its own or the session cleared after it), `tuner_class` and
`make_tuner`."""

from __future__ import annotations

import gc
import os
import time

import keras
import keras_tuner

from keras_resnet.tuning.hypermodel import run_trial_in_process, trial_epochs
from keras_resnet.tuning.options import TUNERS
from keras_resnet.tuning.store import OBJECTIVE, log_event, rss_bytes
from keras_resnet.utils import check_choice


class TrialLogging:
    """Mixed into a KerasTuner tuner: logs every trial's start and end (with the RSS) to
    events.jsonl, runs each trial in a process of its own (`process_per_trial`) or clears the
    Keras session after it, and starts no trial after `max_search_seconds` (0: no limit)."""

    process_per_trial = True
    max_search_seconds = 0.0

    def _configure_tensorboard_dir(self, callbacks, trial, execution=0):
        # KerasTuner's hook imports tensorboard on the TensorFlow backend even when no
        # TensorBoard callback is used; tensorboard is not a dependency of TensorFlow 2.21.
        if any(type(c).__name__ == "TensorBoard" for c in callbacks):
            super()._configure_tensorboard_dir(callbacks, trial, execution)

    def _populate_initial_space(self):
        # KerasTuner's own builds (and here compiles) a whole model per conditional branch only
        # to list the hyperparameters, in the search's process; the space declares them all
        # directly, the conditional `expansion` included.
        hp = self.oracle.get_space()
        self.hypermodel.space.declare(hp)
        self.oracle.update_space(hp)

    def run_trial(self, trial, *args, **kwargs):
        event = {"trial_id": trial.trial_id, "tuner_id": self.tuner_id}
        log_event(self.project_dir, event="start", **event)
        self.child_peak_rss = None
        if not self.process_per_trial:
            return super().run_trial(trial, *args, **kwargs)
        values = trial.hyperparameters.values
        max_epochs = kwargs.pop("epochs", None) or self.hypermodel.max_epochs
        initial_epoch, epochs = trial_epochs(values, max_epochs)
        parent = values.get("tuner/trial_id")  # Hyperband: continue from this trial
        kwargs.pop("callbacks", None)
        payload = {
            "hp": trial.hyperparameters.get_config(),
            "hypermodel": self.hypermodel,
            "args": args,
            "kwargs": {**kwargs, "epochs": epochs, "initial_epoch": initial_epoch},
            "checkpoint": self._get_checkpoint_fname(trial.trial_id),
            "parent_checkpoint": parent and self._get_checkpoint_fname(parent),
            "project_dir": self.project_dir,
            "event": event,
        }
        metrics, self.child_peak_rss = run_trial_in_process(
            payload,
            self.get_trial_dir(trial.trial_id),
            on_start=lambda pid: log_event(self.project_dir, event="child", child_pid=pid, **event),
        )
        return metrics

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        # In process: KerasTuner clears the session before a build; clearing after the trial as
        # well frees the last model between trials, and gc breaks the reference cycles
        # (model <-> callbacks <-> History) that keep a model alive (keras-tuner 873, 1031).
        keras.backend.clear_session()
        gc.collect()
        log_event(
            self.project_dir,
            event="end",
            trial_id=trial.trial_id,
            tuner_id=self.tuner_id,
            status=str(trial.status),
            rss=rss_bytes(),
            child_peak_rss=getattr(self, "child_peak_rss", None),
        )
        # A time budget: once spent, no new trial starts (the oracle stops at max_trials).
        elapsed = time.monotonic() - self.search_started
        if self.max_search_seconds and elapsed > self.max_search_seconds:
            if hasattr(self.oracle, "trials"):  # a local oracle, not a distributed worker's client
                self.oracle.max_trials = len(self.oracle.trials)

    def search(self, *args, **kwargs):
        self.search_started = time.monotonic()
        return super().search(*args, **kwargs)


def tuner_class(kind: str, process_per_trial: bool = True, max_search_seconds: float = 0):
    """KerasTuner's tuner of `kind` ('hyperband', 'bayesian', 'random') with `TrialLogging`."""
    check_choice("tuner", kind, TUNERS)
    base = {
        "hyperband": keras_tuner.Hyperband,
        "bayesian": keras_tuner.BayesianOptimization,
        "random": keras_tuner.RandomSearch,
    }[kind]
    attributes = {
        "process_per_trial": bool(process_per_trial),
        "max_search_seconds": float(max_search_seconds),
    }
    return type(f"ResNet{base.__name__}", (TrialLogging, base), attributes)


def make_tuner(
    kind: str,
    hypermodel,
    *,
    directory,
    project_name: str,
    max_trials: int,
    max_epochs: int,
    seed: int | None = None,
    factor: int = 3,
    process_per_trial: bool = True,
    max_search_seconds: float = 0,
):
    """A KerasTuner tuner ('hyperband', 'bayesian' or 'random') maximizing val_accuracy.

    With `process_per_trial` (default) every trial trains in a fresh process, so that the
    search's memory does not grow with the number of trials. With `max_search_seconds`, no trial
    starts once that much time has passed since `search()` began (0: no limit).

    It reloads the search in `directory/project_name` when there is one (KerasTuner's
    `overwrite=False`): completed trials are kept, an interrupted one runs again.
    """
    cls = tuner_class(kind, process_per_trial, max_search_seconds)
    common = dict(
        objective=keras_tuner.Objective(OBJECTIVE, direction="max"),
        seed=seed,
        directory=os.fspath(directory),
        project_name=project_name,
        overwrite=False,
    )
    if kind != "hyperband":
        return cls(hypermodel, max_trials=max_trials, **common)
    tuner = cls(hypermodel, max_epochs=max_epochs, factor=factor, hyperband_iterations=1, **common)
    # Hyperband takes no max_trials, but its oracle honours the attribute (not part of the saved
    # state, so it is set again on every run).
    tuner.oracle.max_trials = max_trials
    return tuner


# --------------------------------------------------------------------------------------------
# A whole search
# --------------------------------------------------------------------------------------------
