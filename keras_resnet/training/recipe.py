"""The training recipe: the model that trains (augmentation -> normalization -> ResNet), the
optimizer and its schedule, `model.compile`, and fine-tuning (starting weights, frozen stages,
a head-only warm-up)."""

from __future__ import annotations

import dataclasses
import logging
import os

import keras
import numpy as np

from keras_resnet import data as data_lib
from keras_resnet import finetune
from keras_resnet.models import build_model as build_resnet
from keras_resnet.training.config import TrainConfig
from keras_resnet.utils import OptionError

log = logging.getLogger("keras_resnet")


def build_model(plan, *, augment: bool | None = None):
    """The training model of a `RunPlan`: raw 0-255 pixels -> augmentation (training only) ->
    normalization -> ResNet -> softmax.

    Args:
        plan: the run's plan (`plan.model` is the architecture, completed from the data).
        augment: False builds the same network without the augmentation layers (the inference
            model: same layer names and weights); None follows `plan.config.augment`.

    Returns:
        A `keras.Model` whose input layer is named 'image'.
    """
    config, architecture = plan.config, plan.model
    inputs = keras.Input(shape=architecture.image_shape, name="image")
    x = inputs
    # Folders over SMALL_IMAGE_MAX px are augmented by the pipeline (random-resized crop, flip).
    if (config.augment if augment is None else augment) and not plan.pipeline_augments:
        layers = data_lib.augmentation(
            architecture.image_shape,
            pad=config.crop_padding,
            flip=config.flip,
            erasing=config.erasing,
            seed=config.seed,
        )
        if layers.layers:
            x = layers(x)
    return build_resnet(architecture, input_tensor=x)


def load_initial_weights(model, plan) -> None:
    """Loads the plan's starting weights into the training `model`: through the builders'
    `weights=` (a state dict gets a new classifier when the class count differs, and an adapted
    first convolution for 1 or 4 channels; `keras_resnet.weights` logs both), into the bare
    network, then copied layer by layer (the training model adds augmentation layers)."""
    architecture = plan.model
    try:
        loaded = build_resnet(architecture, weights=os.fspath(plan.weights))
    except ValueError as error:
        raise OptionError("weights", str(error)) from None
    for layer in loaded.layers:
        if layer.weights:
            model.get_layer(layer.name).set_weights(layer.get_weights())
    log.info("weights: %s loaded into %s", plan.config.weights, architecture.name)


def prepare_finetuning(model, plan, data=None, *, warm_up: bool = True) -> None:
    """Fine-tuning before `compile_model`: the starting weights (`plan.weights`), the
    head-only warm-up (`head_epochs`, only when `warm_up` and `data` are given: a resumed run
    has its weights from the backup), then the frozen stem and stages (`freeze_stages`; batch
    norm of frozen layers runs in inference mode).

    Args:
        model: the training model (`build_model`), not compiled yet.
        plan: the run's plan.
        data: the run's `inputs.FitData`, for the warm-up.
        warm_up: False skips the warm-up.
    """
    config = plan.config
    if plan.weights is not None:
        load_initial_weights(model, plan)
    if config.head_epochs and warm_up and data is not None:
        trainable = [n for n in finetune.freeze_backbone(model) if model.get_layer(n).weights]
        log.info("head-only warm-up: %d epoch(s) training %s", config.head_epochs, trainable)
        # No average over the warm-up: its end would otherwise be the head's averaged weights.
        warm = dataclasses.replace(config, epochs=config.head_epochs, warmup_epochs=0.0, ema=0.0)
        compile_model(model, dataclasses.replace(plan, config=warm))
        model.fit(
            **data.fit_arguments(),
            epochs=config.head_epochs,
            callbacks=[keras.callbacks.TerminateOnNaN(raise_error=True)],
            verbose=config.verbose,
        )
        finetune.unfreeze(model)
    if config.freeze_stages is not None:
        try:
            frozen = finetune.freeze_stages(model, config.freeze_stages)
        except ValueError as error:
            raise OptionError("freeze_stages", str(error)) from None
        log.info(
            "frozen (batch norm in inference mode): %d layers, stem to stage %d",
            len(frozen),
            config.freeze_stages,
        )


def build_optimizer(config: TrainConfig, steps_per_epoch: int, model=None):
    """SGD (Nesterov) or AdamW with linear warmup and cosine decay to 0.

    Weight decay is decoupled (Keras' `weight_decay`), and kept off every variable of rank <= 1
    (batch-norm gamma and beta, biases) with `optimizer.exclude_from_weight_decay`: decaying them
    only fights the normalization (Goyal et al. 2017, sec. 5.1 note; TF Model Garden does the
    same). Pass `model` to set that exclusion.

    With `config.ema` the optimizer also keeps an exponential moving average of the trainable
    weights (Keras' `use_ema`, `ema_momentum=config.ema`; batch-norm statistics are not
    averaged); `training_callbacks` makes evaluation and checkpoints use it.

    Args:
        config: the run's options, resolved (`RunPlan.config`).
        steps_per_epoch: training steps an epoch (`RunPlan.steps_per_epoch`).
        model: the model whose rank <= 1 variables are kept out of weight decay.
    """
    total = config.epochs * steps_per_epoch
    warmup = min(int(round(config.warmup_epochs * steps_per_epoch)), total - 1)
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else config.learning_rate,
        decay_steps=max(total - warmup, 1),
        alpha=0.0,
        warmup_target=config.learning_rate if warmup else None,
        warmup_steps=warmup,
    )
    ema = {"use_ema": True, "ema_momentum": config.ema} if config.ema else {}
    if config.optimizer == "sgd":
        optimizer = keras.optimizers.SGD(
            schedule,
            momentum=config.momentum,
            nesterov=True,
            weight_decay=config.weight_decay or None,
            **ema,
        )
    else:
        optimizer = keras.optimizers.AdamW(schedule, weight_decay=config.weight_decay, **ema)
    if model is not None and config.weight_decay:
        optimizer.exclude_from_weight_decay(
            var_list=[v for v in model.trainable_variables if len(v.shape) <= 1]
        )
    return optimizer


class SwapEMAWeights(keras.callbacks.SwapEMAWeights):
    """Keras' `SwapEMAWeights`, which also knows where a resumed run's average is.

    With `swap_on_epoch=True` the model holds the average from each epoch's end to the next
    epoch's start, so that the callbacks after this one (the test evaluation, the best
    checkpoint, the backup) see it. The backup is thus written swapped: the average in the
    model, the raw weights in the optimizer's average slots. A `fit` that starts at an epoch
    > 0 has been restored from such a backup, and swaps back before training on.
    """

    def on_train_begin(self, logs=None):
        self.first_epoch = True

    def on_epoch_begin(self, epoch, logs=None):
        if self.swap_on_epoch and getattr(self, "first_epoch", False) and epoch > 0:
            # Keras' own flag: "the model holds the average", so the swap below restores it.
            self._ema_weights_in_model = True
        self.first_epoch = False
        super().on_epoch_begin(epoch, logs)

    def _backend_finalize_ema_values(self, optimizer):
        # Keras assigns each weight's array itself to its average slot after the last epoch.
        # On JAX, an evaluation after that (the run's per-epoch test figure) donates the
        # weights' arrays and reattaches only the weights: the slots would hold deleted arrays
        # and the backup's save_weights fail ("Array has been deleted"). A copy keeps them.
        for var, average in zip(
            optimizer._trainable_variables, optimizer._model_variables_moving_average, strict=True
        ):
            average.assign(keras.ops.copy(var))


def training_callbacks(config: TrainConfig, *, swap_on_epoch: bool = True) -> list:
    """The recipe's callbacks, to be placed before every callback that evaluates or saves the
    model: with `config.ema`, the swap of the averaged weights into the model for validation,
    the epoch-end callbacks and the end of `fit` (`SwapEMAWeights`). [] without EMA.

    Args:
        config: the run's options.
        swap_on_epoch: True (a run): the model holds the average at each epoch's end, so that
            the test evaluation and the best checkpoint see it. False (a search trial): only
            validation sees it, and a trial's checkpoint holds the raw weights that a
            continued Hyperband trial trains on.

    Returns:
        A list of Keras callbacks.
    """
    if not config.ema:
        return []
    return [SwapEMAWeights(swap_on_epoch=swap_on_epoch)]


def compile_model(model, plan):
    """`model.compile` with the plan's recipe: `build_optimizer`'s optimizer, cross-entropy on
    one-hot targets with label smoothing, accuracy, XLA and steps per execution."""
    config = plan.config
    model.compile(
        optimizer=build_optimizer(config, plan.steps_per_epoch, model),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
        metrics=["accuracy"],
        jit_compile={"auto": "auto", "on": True, "off": False}[config.xla],
        steps_per_execution=config.steps_per_execution,
    )
    return model


def one_hot(labels, num_classes: int) -> np.ndarray:
    """Integer labels as the float32 one-hot targets of the recipe's loss (label smoothing
    needs dense targets)."""
    return np.eye(num_classes, dtype=np.float32)[labels]
