"""Hyperparameter search over keras_resnet's own hyperparameters, with KerasTuner.

KerasTuner's `HyperResNet` is tf.keras-only, bottleneck-only, and tunes neither width nor
expansion. This package searches the builder's options (a `ResNetConfig`) and the training
recipe instead, with the training pipeline of `keras_resnet.training`:

    space.py       `SearchSpace`: the ranges, their KerasTuner hyperparameters, and
                   `config_from_values` (a trial's values -> ResNetConfig + recipe values)
    store.py       the search folder's own records: the definition file, events.jsonl
    report.py      trials.md, trials.csv and pareto.png (`write_report`)
    hypermodel.py  `ResNetHyperModel`, and the trial process (`run_trial_in_process`)
    search.py      the tuners, `SearchOptions`, `run_search`, `train_best`

The command line is `keras-resnet tune` (`keras_resnet.cli.tune`); docs/TUNING.md describes
the search folder, resuming, the distributed mode and the memory figures.
"""

from __future__ import annotations

import importlib

# public name -> the submodule that defines it. The names load on first use (PEP 562), so
# that the command lines build their flags from the option dataclasses without Keras.
_EXPORTS = {
    "ResNetHyperModel": "hypermodel",
    "run_trial_file": "hypermodel",
    "run_trial_in_process": "hypermodel",
    "trial_epochs": "hypermodel",
    "trial_train_config": "hypermodel",
    "TrialRecord": "report",
    "best_trial": "report",
    "format_trials": "report",
    "mark_pareto": "report",
    "plot_pareto": "report",
    "read_trials": "report",
    "write_csv": "report",
    "write_report": "report",
    "TUNERS": "options",
    "SearchOptions": "options",
    "check_fractions": "options",
    "final_config": "search",
    "is_distributed_worker": "search",
    "make_tuner": "tuners",
    "prepare_search": "search",
    "run_search": "search",
    "same_run": "search",
    "search_split": "search",
    "train_best": "search",
    "tuner_class": "tuners",
    "SearchSpace": "space",
    "SearchSpaceError": "space",
    "config_from_values": "space",
    "describe": "space",
    "DEFINITION_FILE": "store",
    "EVENTS_FILE": "store",
    "OBJECTIVE": "store",
    "SearchMismatchError": "store",
    "check_definition": "store",
    "check_writable": "store",
    "log_event": "store",
    "peak_rss_bytes": "store",
    "project_path": "store",
    "read_events": "store",
    "rss_bytes": "store",
    "write_definition": "store",
}

__all__ = [
    "DEFINITION_FILE",
    "EVENTS_FILE",
    "OBJECTIVE",
    "TUNERS",
    "ResNetHyperModel",
    "SearchMismatchError",
    "SearchOptions",
    "SearchSpace",
    "SearchSpaceError",
    "TrialRecord",
    "best_trial",
    "check_definition",
    "check_fractions",
    "check_writable",
    "config_from_values",
    "describe",
    "final_config",
    "format_trials",
    "is_distributed_worker",
    "log_event",
    "make_tuner",
    "mark_pareto",
    "peak_rss_bytes",
    "plot_pareto",
    "prepare_search",
    "project_path",
    "read_events",
    "read_trials",
    "rss_bytes",
    "run_search",
    "same_run",
    "run_trial_file",
    "run_trial_in_process",
    "search_split",
    "train_best",
    "trial_epochs",
    "trial_train_config",
    "tuner_class",
    "write_csv",
    "write_definition",
    "write_report",
]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    else:
        try:  # a submodule not imported yet
            value = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
