"""`SearchOptions`: everything a search needs besides its space, in a module without Keras or
KerasTuner (`keras-resnet tune` builds its flags from these fields)."""

from __future__ import annotations

import dataclasses
import os

from keras_resnet.training.config import TrainConfig, field_names
from keras_resnet.training.outputs import from_data_fields
from keras_resnet.tuning.space import SearchSpace, SearchSpaceError
from keras_resnet.tuning.store import OBJECTIVE
from keras_resnet.utils import OptionError, check_choice, check_int, check_number

TUNERS = ("hyperband", "bayesian", "random")
DEFINITION_FORMAT = 2
# Values of an option declared search="off_when_zero" that leave it out of a stored definition
# (options added after searches were first stored: recipe levers, the cache, the statistics'
# source), so that a search stored before they existed resumes.
OFF_VALUES = (0, 0.0, None, False, "data")


# --------------------------------------------------------------------------------------------
# The options of a search
# --------------------------------------------------------------------------------------------


def _help(text: str, **extra) -> dict:
    return {"help": text, **extra}


@dataclasses.dataclass
class SearchOptions:
    """Everything a search needs besides its space. `train` is the configuration every trial
    (and the final training) starts from: data, batch size, precision, seed and the recipe."""

    tuner: str = dataclasses.field(
        default="hyperband",
        metadata=_help("KerasTuner algorithm (default hyperband)", choices=TUNERS),
    )
    max_trials: int = dataclasses.field(default=30, metadata=_help("most trials (default 30)"))
    max_epochs: int = dataclasses.field(
        default=9, metadata=_help("epochs of the longest trial (default 9)")
    )
    train_fraction: float = dataclasses.field(
        default=1.0,
        metadata=_help("fraction of the train set the trials train on (default 1.0)"),
    )
    validation_fraction: float = dataclasses.field(
        default=0.1,
        metadata=_help("fraction of the train set held out to score trials (default 0.1)"),
    )
    max_search_seconds: float = dataclasses.field(
        default=0.0, metadata=_help("start no trial after this many seconds (0: no limit)")
    )
    directory: str = dataclasses.field(
        default="runs/tuning", metadata=_help("folder of search projects (default runs/tuning)")
    )
    project_name: str = dataclasses.field(
        default="search", metadata=_help("the search's folder in --directory (default search)")
    )
    final_epochs: int = dataclasses.field(
        default=0,
        metadata=_help("epochs of the best configuration on the full train set (0: skip)"),
    )
    output_dir: str = dataclasses.field(
        default="saved_models", metadata=_help("folder of the final run (default saved_models)")
    )
    run_name: str | None = dataclasses.field(
        default=None, metadata=_help("the final run's folder in --output-dir (tuned_<project>)")
    )
    process_per_trial: bool = dataclasses.field(default=True, metadata=_help("", cli=False))
    train: TrainConfig = dataclasses.field(
        default_factory=TrainConfig, metadata=_help("", cli=False)
    )

    def validate(self) -> None:
        """Raises `SearchSpaceError` (its `field` names the option) for the first bad value."""
        try:
            check_choice("tuner", self.tuner, TUNERS)
            for field, minimum in (("max_trials", 1), ("max_epochs", 1), ("final_epochs", 0)):
                check_int(field, getattr(self, field), minimum)
            check_number("max_search_seconds", self.max_search_seconds, 0)
            check_fractions(self.train_fraction, self.validation_fraction)
        except OptionError as error:
            raise SearchSpaceError(error.field, str(error)) from None
        name = self.project_name
        if not name or os.sep in name or name in (".", ".."):
            raise SearchSpaceError(
                "project_name",
                f"project_name must be a plain folder name, received project_name={name!r}",
            )
        self.train.validate()

    def base_config(self):
        """The `TrainConfig` that every trial (and the final training) starts from."""
        return dataclasses.replace(self.train, tensorboard=False, track_test=False)

    def definition(self, space: SearchSpace, image_shape, resolved: TrainConfig) -> dict:
        """What must not change between a search and its resumption (max_trials may grow).

        Args:
            space: the search space.
            image_shape: the data's image shape.
            resolved: the search's base options, resolved (`RunPlan.config`).
        """
        train = resolved.to_dict()
        model_keys, recipe_keys = space.searched_fields()
        for key in (*field_names("search", "unchecked"), *recipe_keys):
            train.pop(key, None)
        for key in field_names("search", "off_when_zero"):
            if train.get(key, 1) in OFF_VALUES:
                train.pop(key, None)
        for key in (*model_keys, *from_data_fields()):
            train["model"].pop(key, None)
        return {
            "format": DEFINITION_FORMAT,
            "space": space.to_dict(),
            "tuner": self.tuner,
            "objective": OBJECTIVE,
            "max_epochs": self.max_epochs,
            "image_shape": list(image_shape),
            "train_fraction": self.train_fraction,
            "validation_fraction": self.validation_fraction,
            "train_config": train,
        }


def check_fractions(train_fraction: float, validation_fraction: float) -> None:
    """Raises OptionError unless train_fraction is in (0, 1] and validation_fraction in (0, 1)."""
    check_number("train_fraction", train_fraction, 0, 1, low_open=True)
    check_number("validation_fraction", validation_fraction, 0, 1, low_open=True, high_open=True)
