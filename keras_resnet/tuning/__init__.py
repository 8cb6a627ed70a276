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

from keras_resnet.tuning.hypermodel import (
    ResNetHyperModel,
    run_trial_file,
    run_trial_in_process,
    trial_epochs,
    trial_train_config,
)
from keras_resnet.tuning.report import (
    TrialRecord,
    best_trial,
    format_trials,
    mark_pareto,
    plot_pareto,
    read_trials,
    write_csv,
    write_report,
)
from keras_resnet.tuning.search import (
    TUNERS,
    SearchOptions,
    check_fractions,
    final_config,
    is_distributed_worker,
    make_tuner,
    prepare_search,
    run_search,
    same_run,
    search_split,
    train_best,
    tuner_class,
)
from keras_resnet.tuning.space import SearchSpace, SearchSpaceError, config_from_values, describe
from keras_resnet.tuning.store import (
    DEFINITION_FILE,
    EVENTS_FILE,
    OBJECTIVE,
    SearchMismatchError,
    check_definition,
    check_writable,
    log_event,
    peak_rss_bytes,
    project_path,
    read_events,
    rss_bytes,
    write_definition,
)

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
