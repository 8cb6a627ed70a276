"""A whole search: the tuners, the search's options, `run_search` and `train_best`.

Known KerasTuner problems, and what this module does about them:
- memory growing across trials (keras-tuner 395, 873, 1031): by default every trial runs in a
  process of its own; in process, the session is cleared and garbage collected after every
  trial, and the RSS is logged so that growth shows;
- resuming (439, 702, 835): KerasTuner 1.4.8 reloads its oracle; an interrupted trial runs
  again, completed ones never do. The definition file makes sure that the reloaded oracle belongs
  to the same search;
- distributed hangs (645, 915): see docs/TUNING.md.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np

from keras_resnet import data as data_lib
from keras_resnet import training
from keras_resnet.data.streamed import StreamedSource
from keras_resnet.training import RunPlan, TrainConfig, plan_run
from keras_resnet.training.config import DEFAULT_VAL_SIZE
from keras_resnet.training.inputs import (
    FolderData,
    FolderParts,
    folder_parts,
    open_folder_cache,
)
from keras_resnet.training.outputs import (
    BACKUP_DIR,
    CONFIG_FILE,
    METRICS_FILE,
    finished_metrics,
    from_data_fields,
)
from keras_resnet.tuning.hypermodel import (
    ResNetHyperModel,
    trial_train_config,
)
from keras_resnet.tuning.options import TUNERS, SearchOptions, check_fractions
from keras_resnet.tuning.report import best_trial, read_trials, write_report
from keras_resnet.tuning.space import SearchSpace, SearchSpaceError
from keras_resnet.tuning.store import (
    check_definition,
    check_writable,
    project_path,
    write_definition,
)
from keras_resnet.tuning.tuners import TrialLogging, make_tuner, tuner_class
from keras_resnet.utils import (
    keras_globals,
    write_text_atomic,
)


def is_distributed_worker() -> bool:
    """True in a KerasTuner worker process (KERASTUNER_ORACLE_IP set, the tuner id not chief)."""
    return "KERASTUNER_ORACLE_IP" in os.environ and "chief" not in os.environ.get(
        "KERASTUNER_TUNER_ID", ""
    )


def search_split(
    x, y, *, train_fraction: float = 1.0, validation_fraction: float = 0.1, seed: int = 0
):
    """Splits a train set into the search's train and validation parts.

    The validation part (`validation_fraction` of the train set) is held out first, so that it
    does not change with `train_fraction`; the test set is never seen by the search.

    Returns:
        `(x_train, y_train), (x_val, y_val)`.
    """
    check_fractions(train_fraction, validation_fraction)
    # The package's one seeded split (`keras_resnet.data.split`) for both cuts: the held-out
    # part is the first n of default_rng(seed).permutation, as this split always took it.
    rest, val = data_lib.split(len(x), validation_fraction, seed=seed)
    n_train = max(1, int(round(len(rest) * train_fraction)))
    if n_train < len(rest):
        _, chosen = data_lib.split(len(rest), n_train, seed=seed)
        rest = rest[chosen]
    return (x[rest], y[rest]), (x[val], y[val])


def plan_search(train: TrainConfig, dataset=None) -> RunPlan:
    """The search's base plan: its options resolved and its data opened by the same function
    as a run's (`training.plan_run(..., search=True)`: every data flag means the same), a
    folder as file lists (its cache is opened later, by `prepare_search`, once the search's
    checks have passed), the preprocessing record and its statistics.

    Raises:
        SearchSpaceError: a streamed TFDS dataset (trials take arrays or a folder's files).
    """
    if train.is_folder:
        plan = plan_run(dataclasses.replace(train, cache=None), dataset, folder=False)
    else:
        # Arrays: the search holds out its own validation part (`validation_fraction`); the
        # run's val_size is the final run's, which trains on the whole train set (final_config).
        plan = plan_run(dataclasses.replace(train, val_size=0), dataset, folder=False)
        val_size = train.val_size if train.val_size is not None else DEFAULT_VAL_SIZE
        plan = dataclasses.replace(plan, config=dataclasses.replace(plan.config, val_size=val_size))
    if isinstance(plan.data, StreamedSource) and not isinstance(plan.data, FolderData):
        raise SearchSpaceError(
            "dataset",
            f"a streamed TFDS dataset cannot be searched yet (its trials take arrays or a "
            f"folder's files), received dataset={train.dataset!r}",
        )
    return plan


def load_search_data(train: TrainConfig):
    """The search's data (`plan_search`'s): a `keras_resnet.data.Dataset` in memory, or a
    `training.inputs.FolderData` for a folder, never decoded whole."""
    return plan_search(train).data


def search_folder_parts(
    data: FolderData, *, train_fraction: float, validation_fraction: float, seed: int
) -> FolderParts:
    """The search's train and validation parts of a folder's training split, as file lists (or
    a cache's rows): the same cut as `search_split` makes of arrays, on the files' indices. The
    folder's val/ (or `val_size` hold-out) and test/ are left out: the search never sees them.

    Returns:
        A `FolderParts` with parts 'train' and 'val'.
    """
    count = data.folder.counts["train"]
    (train, _), (val, _) = search_split(
        np.arange(count),
        np.zeros(count),
        train_fraction=train_fraction,
        validation_fraction=validation_fraction,
        seed=seed,
    )
    return folder_parts(data, {"train": train, "val": val})


def prepare_search(space: SearchSpace, options: SearchOptions, dataset=None):
    """Every check of a search, writing nothing: the space, the options, the folders, the data
    and the stored definition.

    Returns:
        `(project_dir, plan, definition, split)`: `plan` the search's base `RunPlan`
        (`plan_search`); `split` is `((x_train, y_train), (x_val, y_val))` for arrays, a
        `training.inputs.FolderParts` (file lists) for a folder.
    """
    space.validate()
    options.validate()
    check_writable(options.directory, "directory")
    if options.final_epochs > 0:
        check_writable(options.output_dir, "output_dir")
    project_dir = project_path(options.directory, options.project_name)
    plan = plan_search(options.base_config(), dataset)
    dataset = plan.data
    space.check_input(dataset.image_shape)
    definition = options.definition(space, dataset.image_shape, plan.config)
    check_definition(project_dir, definition)  # raises before anything is written
    fractions = dict(
        train_fraction=options.train_fraction,
        validation_fraction=options.validation_fraction,
        seed=options.train.seed,
    )
    if isinstance(dataset, FolderData):
        check_folder_search(space, options.train)
        if options.train.cache is not None:  # built (once) only now that the checks passed
            dataset = open_folder_cache(dataset, options.train.cache)
        split = search_folder_parts(dataset, **fractions)
        n_train = split.part_counts["train"]
    else:
        split = search_split(dataset.x_train, dataset.y_train, **fractions)
        n_train = len(split[0][0])
    batch_size = options.train.batch_size
    if batch_size > n_train:
        raise SearchSpaceError(
            "batch_size",
            f"batch_size must be at most the {n_train} images trials train on, "
            f"received batch_size={batch_size}",
        )
    return project_dir, dataclasses.replace(plan, data=dataset), definition, split


def check_folder_search(space: SearchSpace, train: TrainConfig) -> None:
    """Raises SearchSpaceError for what a folder's streams do not do: mixup and CutMix are
    for datasets in memory (as in training)."""
    _, recipe = space.searched_fields()
    for name in ("mixup", "cutmix"):
        if name in recipe:
            raise SearchSpaceError(
                f"{name}_min",
                f"{name} is for datasets in memory, not folders (dataset={train.dataset!r}), "
                f"received {name}_min={getattr(space, f'{name}_min')}",
            )


def run_search(space: SearchSpace, options: SearchOptions, *, dataset=None) -> dict:
    """Runs (or resumes) a search, writes its report, and trains the best configuration.

    Every check happens before anything is written: an invalid space or option, an unwritable
    directory, or a directory that holds another search raises and leaves it as it was. Keras'
    global dtype policy, distribution and image data format are as before, also on error.

    In KerasTuner's distributed mode (KERASTUNER_TUNER_ID, _ORACLE_IP, _ORACLE_PORT) the chief
    serves the oracle, then reports and trains the best; workers run trials and return.

    A folder streams: trials get its file lists (`training.inputs.FolderParts`) and build their
    streams in their own process; nothing is decoded whole (docs/TUNING.md).

    Args:
        space: the search space.
        options: the search's options.
        dataset: a `keras_resnet.data.Dataset` (default: load `options.train.dataset`).

    Returns:
        A summary: project directory, trial counts, best trial, report folder, and the final
        run's metrics when `options.final_epochs` > 0.
    """
    with keras_globals():
        project_dir, plan, definition, split = prepare_search(space, options, dataset)
        dataset = plan.data
        write_definition(project_dir, definition)
        search_data, fit_args = search_inputs(dataset, split)
        hypermodel = ResNetHyperModel(space, plan, search_data, max_epochs=options.max_epochs)
        tuner = make_tuner(
            options.tuner,
            hypermodel,
            directory=options.directory,
            project_name=options.project_name,
            max_trials=options.max_trials,
            max_epochs=options.max_epochs,
            seed=options.train.seed,
            process_per_trial=options.process_per_trial,
            max_search_seconds=options.max_search_seconds,
        )
        tuner.search(**fit_args, epochs=options.max_epochs, verbose=options.train.verbose)
        summary: dict = {"project_dir": str(project_dir)}
        if isinstance(dataset, FolderData):  # files the trials could not read, non-images
            summary["data"] = {**search_data.skipped(), "images": search_data.part_counts}
        if is_distributed_worker():
            return summary
        summary.update(write_report(project_dir))
        if options.final_epochs > 0 and summary["best"] is not None:
            # A folder's final run opens (and streams) it again, as train.py does.
            final_data = None if isinstance(dataset, FolderData) else dataset
            summary["final"] = train_best(
                project_dir, options, dataset=final_data, base=plan.config
            )
        return summary


def search_inputs(dataset, split) -> tuple:
    """The hypermodel's data and `tuner.search`'s fit arguments: for arrays the train part as
    a `Dataset` (its normalization) and the arrays with one-hot targets; for a folder its
    `FolderParts` as both, which each trial turns into streams (`hypermodel.trial_fit_data`)."""
    if isinstance(dataset, FolderData):
        return split, {"x": split}
    (x_train, y_train), (x_val, y_val) = split
    classes = dataset.num_classes
    fit_args = {
        "x": x_train,
        "y": training.one_hot(y_train, classes),
        "validation_data": (x_val, training.one_hot(y_val, classes)),
    }
    return dataclasses.replace(dataset, x_train=x_train, y_train=y_train), fit_args


def final_config(
    best, options: SearchOptions, project_dir: str | os.PathLike, base: TrainConfig
) -> TrainConfig:
    """The final run's `TrainConfig`: the best trial's values over the search's base options
    (`base`, resolved), the recipe's own warmup, `final_epochs` on the whole train set (no
    validation part). A folder keeps its splits as train.py takes them: val/ (or the
    `val_size` hold-out of a folder without val/) validates, test/ (else val/) tests."""
    run_name = options.run_name or f"tuned_{Path(project_dir).name}"
    config = trial_train_config(base, best.values)
    data_fields = {name: None for name in from_data_fields()}
    return dataclasses.replace(
        config,
        model=config.model.replace(**{k: getattr(config.model, k) for k in data_fields}),
        epochs=max(1, options.final_epochs),
        val_size=config.val_size if config.is_folder else 0,
        run_name=run_name,
        output_dir=os.path.join(options.output_dir, run_name),
        track_test=True,
    )


def same_run(stored: dict, config: TrainConfig) -> bool:
    """Whether a run folder's config.json (whose model the training completed from the data:
    classes, shape, normalization) holds `config`."""
    ours = config.to_dict()
    stored = {k: v for k, v in stored.items() if k != "preprocessing"}
    for values in (stored, ours):
        for key in from_data_fields():
            values.get("model", {}).pop(key, None)
    return stored == ours


def train_best(
    project_dir: str | os.PathLike,
    options: SearchOptions,
    *,
    dataset=None,
    base: TrainConfig | None = None,
) -> dict:
    """Trains the best trial's configuration on the full train set with
    `keras_resnet.training.train` (epochs: `options.final_epochs`), into
    `<output_dir>/<run_name>/` (default run name `tuned_<project_name>`), a run folder that
    `keras-resnet export` takes. A finished run with the same configuration is not trained
    again; an interrupted one resumes (the training pipeline's BackupAndRestore).

    Returns:
        The run's metrics (metrics.json), plus the trial id and search directory.
    """
    best = best_trial(read_trials(project_dir))
    if best is None:
        raise ValueError(f"no completed trial in {project_dir}")
    if base is None:
        base = plan_search(options.base_config(), dataset).config
    config = final_config(best, options, project_dir, base)
    out = Path(config.output_dir)
    metrics_file, config_file = out / METRICS_FILE, out / CONFIG_FILE
    if finished_metrics(metrics_file, out / BACKUP_DIR) is not None and config_file.is_file():
        if same_run(json.loads(config_file.read_text()), config):
            metrics = json.loads(metrics_file.read_text())
            return {**metrics, "trial_id": best.trial_id, "reused": True}
        # A finished run of an earlier best configuration: the search's final run replaces it
        # (train() would refuse the changed options).
        config = dataclasses.replace(config, restart=True)
    with keras_globals():
        metrics = training.train(config, dataset=dataset)
    origin = {
        "trial_id": best.trial_id,
        "search_dir": os.fspath(project_dir),
        "val_accuracy": best.val_accuracy,
        "hyperparameters": best.values,
    }
    write_text_atomic(out / "tuning.json", json.dumps(origin, indent=2, default=str) + "\n")
    return {**metrics, "trial_id": best.trial_id}


__all__ = [
    "TUNERS",
    "SearchOptions",
    "TrialLogging",
    "check_folder_search",
    "check_fractions",
    "final_config",
    "is_distributed_worker",
    "load_search_data",
    "plan_search",
    "make_tuner",
    "prepare_search",
    "run_search",
    "same_run",
    "search_folder_parts",
    "search_inputs",
    "search_split",
    "train_best",
    "tuner_class",
]
