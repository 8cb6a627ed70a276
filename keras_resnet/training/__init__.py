"""Training with `model.fit`: the recipe, the callbacks and the run folder.

    >>> from keras_resnet.training import TrainConfig, train
    >>> metrics = train(TrainConfig.create(model="resnet18", width=0.25, epochs=1,
    ...                                    train_size=2000))

The recipe (defaults of `TrainConfig`): ResNet-18 with the CIFAR stem, SGD with Nesterov momentum,
linear warmup then cosine decay of the learning rate (`keras.optimizers.schedules.CosineDecay`),
decoupled weight decay kept off batch-norm parameters and biases, label smoothing 0.1, and
augmentation (random crop with padding, horizontal flip, random erasing) as layers inside the model.
The saved model takes raw 0-255 pixels: augmentation (inactive at inference) and the
normalization by the training set's mean and standard deviation are part of it.

A run writes into `saved_models/<run>/` (or `output_dir`):

    config.json        the exact configuration (every default resolved; "model" is the
                       architecture as built: ResNetConfig.to_dict())
    model.keras        the final model, Keras' own layers only (loads without keras_resnet)
    metrics.json       test accuracy and loss, epochs, wall time, images/s, backend, device, ...
    history.csv        one row per epoch (CSVLogger), with test accuracy and elapsed time
    curves.png         loss and accuracy per epoch
    checkpoints/best.keras   the model of the best validation accuracy (ModelCheckpoint)
    backup/            the last completed epoch; kept until metrics.json is written
    logs/              TensorBoard (when TensorFlow is installed)

Running the same command again after a crash resumes from the last completed epoch.

Modules: `config` (TrainConfig, presets) and `fields` (each option's metadata: flag group,
bounds, resume and search roles), `plan` (`plan_run`: the options resolved once, with the data
and the preprocessing record), `recipe` (model, optimizer, compile), `inputs` (what `fit` takes)
with `batches` (one-hot and per-process batches) and `folders` (image folders and their cache),
`callbacks` (the epoch clock, the background saves), `run_folder` (`RunFolder`: the folder's
layout, backup, history and "finished"), `outputs` (curves, JSON, the resume check), `devices`,
`distributed`, `run` (`train`).
"""

import importlib

# public name -> the submodule that defines it. The names load on first use (PEP 562), so
# that the command lines build their flags from the option dataclasses without Keras.
_EXPORTS = {
    "EpochClock": "callbacks",
    "async_safe": "callbacks",
    "DISTRIBUTE_MODES": "config",
    "MODEL_OPTIONS": "config",
    "OPTIMIZERS": "config",
    "PRECISIONS": "config",
    "PRESETS": "config",
    "XLA_MODES": "config",
    "TrainConfig": "config",
    "TrainingDiverged": "config",
    "default_model": "config",
    "merge_model": "config",
    "preset": "config",
    "accelerators": "devices",
    "device_description": "devices",
    "distribution_scope": "devices",
    "FitData": "inputs",
    "fit_data": "inputs",
    "load_data": "inputs",
    "split_validation": "inputs",
    "check_output_dir": "outputs",
    "plot_curves": "outputs",
    "read_history": "outputs",
    "time_to": "outputs",
    "FinishedRun": "plan",
    "RunPlan": "plan",
    "make_plan": "plan",
    "open_data": "plan",
    "plan_run": "plan",
    "build_model": "recipe",
    "build_optimizer": "recipe",
    "compile_model": "recipe",
    "one_hot": "recipe",
    "train": "run",
    "train_plan": "run",
}

__all__ = [
    "DISTRIBUTE_MODES",
    "MODEL_OPTIONS",
    "OPTIMIZERS",
    "PRECISIONS",
    "PRESETS",
    "XLA_MODES",
    "EpochClock",
    "FinishedRun",
    "FitData",
    "RunPlan",
    "TrainConfig",
    "TrainingDiverged",
    "accelerators",
    "async_safe",
    "build_model",
    "build_optimizer",
    "check_output_dir",
    "compile_model",
    "default_model",
    "device_description",
    "distribution_scope",
    "fit_data",
    "load_data",
    "make_plan",
    "merge_model",
    "one_hot",
    "open_data",
    "plan_run",
    "plot_curves",
    "preset",
    "read_history",
    "split_validation",
    "time_to",
    "train",
    "train_plan",
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
