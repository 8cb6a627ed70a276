"""Hyperparameter search over keras_resnet's own hyperparameters, with KerasTuner.

KerasTuner's `HyperResNet` is tf.keras-only, bottleneck-only, and tunes neither width nor
expansion. `ResNetHyperModel` searches the builder's arguments instead:

    depth           18, 34, 50, 101, 152: the blocks per stage of `keras_resnet.DEPTHS`
    block           'basic' or 'bottleneck' (overrides the depth's own block kind)
    expansion       output channels per inner channel; bottleneck only (a conditional
                    hyperparameter: basic blocks keep the paper's 1)
    width           multiplier on every stage's width
    stem            'cifar' or 'imagenet'
    learning_rate   peak of the warmup + cosine schedule
    weight_decay    decoupled weight decay of the optimizer

A trial is a `keras_resnet.training.TrainConfig` (these values over a base configuration), and it
trains with that module's pipeline: `build_model` (augmentation and normalization inside the
model), `build_optimizer` (SGD Nesterov, warmup + cosine), the same loss with label smoothing.
Each trial records its parameter count, FLOPs (`keras_resnet.count_flops`), validation accuracy
and wall time as trial metrics. The best configuration is then trained by
`keras_resnet.training.train` on the full train set, into a run folder of `saved_models/`.

A search directory (`<directory>/<project_name>/`) holds KerasTuner's oracle and trials, plus:

    keras_resnet_search.json   the search definition (space, tuner, data, epochs); a later run
                               with another definition is refused before anything is written
    events.jsonl               one line per trial start and end: trial id, tuner id, pid, and
                               the process' resident memory (RSS) after the trial
    report/                    trials.md, trials.csv and pareto.png (`write_report`)

Known KerasTuner problems, and what this module does about them:
- memory growing across trials (keras-tuner 395, 873, 1031): the session is cleared and garbage
  collected after every trial, and the RSS is logged so that growth shows;
- resuming (439, 702, 835): KerasTuner 1.4.8 reloads its oracle; an interrupted trial runs
  again, completed ones never do. The definition file makes sure that the reloaded oracle belongs
  to the same search;
- distributed hangs (645, 915): see docs/TUNING.md.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from keras_resnet.models import BASE_WIDTH, BLOCKS, DEPTHS, STEMS, total_stride

TUNERS = ("hyperband", "bayesian", "random")
OBJECTIVE = "val_accuracy"
DEFINITION_FILE = "keras_resnet_search.json"
EVENTS_FILE = "events.jsonl"


class SearchSpaceError(ValueError):
    """An invalid search space or option; `field` is its name (the flag without `--`)."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


class SearchMismatchError(ValueError):
    """The search directory holds another search (other space, tuner or data)."""


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """The ranges searched. Ranges are inclusive; a range whose min equals its max is fixed, and
    so is a list of one value.

    Attributes:
        depths: depths to choose from (keys of `keras_resnet.DEPTHS`).
        block_kinds: block kinds to choose from ('basic', 'bottleneck').
        expansion_min, expansion_max: expansion of bottleneck blocks.
        width_min, width_max, width_step: the width multiplier, on a grid of `width_step`.
        stems: stems to choose from ('cifar', 'imagenet').
        lr_min, lr_max: peak learning rate, sampled on a log scale.
        weight_decay_min, weight_decay_max: decoupled weight decay, sampled on a log scale.

    The learning-rate and weight-decay defaults bracket the training recipe's (SGD, 0.2 at batch
    256, weight decay 5e-3) by a factor of about 2 either way.
    """

    depths: tuple[int, ...] = (18, 34)
    block_kinds: tuple[str, ...] = BLOCKS
    expansion_min: int = 2
    expansion_max: int = 4
    width_min: float = 0.25
    width_max: float = 1.0
    width_step: float = 0.25
    stems: tuple[str, ...] = ("cifar",)
    lr_min: float = 0.1
    lr_max: float = 0.4
    weight_decay_min: float = 2e-3
    weight_decay_max: float = 1e-2

    def __post_init__(self):
        for name in ("depths", "block_kinds", "stems"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        self.validate()

    # ---- validation -----------------------------------------------------------------------
    def validate(self) -> None:
        """Raises `SearchSpaceError` naming the first invalid field and its value."""

        def number(field, minimum, *, integer=False, strict=True):
            value = getattr(self, field)
            ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
            if (
                isinstance(value, bool)
                or not ok_type
                or not math.isfinite(value)
                or (value <= minimum if strict else value < minimum)
            ):
                kind = "an integer" if integer else "a number"
                sign = ">" if strict else ">="
                raise SearchSpaceError(
                    field, f"{field} must be {kind} {sign} {minimum}, received {field}={value!r}"
                )

        def ordered(low, high):
            if getattr(self, low) > getattr(self, high):
                raise SearchSpaceError(
                    low,
                    f"{low} must be <= {high}, received {low}={getattr(self, low)!r} and "
                    f"{high}={getattr(self, high)!r}",
                )

        def choices(field, allowed):
            value = getattr(self, field)
            if not value or any(v not in allowed for v in value) or len(set(value)) != len(value):
                raise SearchSpaceError(
                    field,
                    f"{field} must be distinct values from {tuple(allowed)}, "
                    f"received {field}={list(value)!r}",
                )

        choices("depths", sorted(DEPTHS))
        choices("block_kinds", BLOCKS)
        number("expansion_min", 1, integer=True, strict=False)
        number("expansion_max", 1, integer=True, strict=False)
        ordered("expansion_min", "expansion_max")
        number("width_min", 0)
        number("width_max", 0)
        number("width_step", 0)
        ordered("width_min", "width_max")
        # The narrowest network must keep at least one channel in the stem (64 * width).
        if round(BASE_WIDTH * self.width_min) < 1:
            raise SearchSpaceError(
                "width_min",
                "width_min must leave one channel per layer (>= 1/64), "
                f"received width_min={self.width_min!r}",
            )
        choices("stems", STEMS)
        number("lr_min", 0)
        number("lr_max", 0)
        ordered("lr_min", "lr_max")
        number("weight_decay_min", 0, strict=False)
        number("weight_decay_max", 0, strict=False)
        ordered("weight_decay_min", "weight_decay_max")
        if self.weight_decay_min == 0 and self.weight_decay_max > 0:
            raise SearchSpaceError(
                "weight_decay_min",
                "weight_decay_min must be > 0 when weight_decay_max > 0 "
                "(it is sampled on a log scale), received weight_decay_min=0",
            )

    def check_input(self, image_shape: Sequence[int]) -> None:
        """Raises `SearchSpaceError` when a stem cannot take images of `image_shape` (HWC)."""
        for stem in self.stems:
            downsampling = total_stride(stem, 4)  # every depth of DEPTHS has 4 stages
            if min(image_shape[:2]) < downsampling:
                raise SearchSpaceError(
                    "stems",
                    f"stems: {stem!r} needs images of at least {downsampling} px, the "
                    f"data's are {tuple(image_shape)}, received stems={list(self.stems)!r}",
                )

    # ---- hyperparameters -------------------------------------------------------------------
    def widths(self) -> list[float]:
        """The width grid: width_min, width_min + step, ... up to width_max."""
        count = int(math.floor((self.width_max - self.width_min) / self.width_step + 1e-9)) + 1
        return [round(self.width_min + i * self.width_step, 6) for i in range(count)]

    def declare(self, hp) -> dict:
        """Declares the hyperparameters on a KerasTuner `HyperParameters` and returns the trial's
        configuration (see `config_from_values`)."""
        _choice_or_fixed(hp, "depth", list(self.depths), ordered=True)
        _choice_or_fixed(hp, "block", list(self.block_kinds))
        if "bottleneck" in self.block_kinds:
            with hp.conditional_scope("block", ["bottleneck"]):
                _int_or_fixed(hp, "expansion", self.expansion_min, self.expansion_max)
        # A Choice rather than a Float with a step: its values are exact (no 0.7500000000000001),
        # and the Bayesian oracle treats an ordered Choice as a number.
        _choice_or_fixed(hp, "width", self.widths(), ordered=True)
        _choice_or_fixed(hp, "stem", list(self.stems))
        _log_float_or_fixed(hp, "learning_rate", self.lr_min, self.lr_max)
        _log_float_or_fixed(hp, "weight_decay", self.weight_decay_min, self.weight_decay_max)
        return config_from_values(hp.values)

    def to_dict(self) -> dict:
        return {
            key: list(value) if isinstance(value, tuple) else value
            for key, value in dataclasses.asdict(self).items()
        }


def _choice_or_fixed(hp, name, values, ordered=False):
    if len(values) == 1:
        return hp.Fixed(name, values[0])
    return hp.Choice(name, values, ordered=ordered)


def _int_or_fixed(hp, name, low, high):
    return hp.Fixed(name, low) if low == high else hp.Int(name, low, high)


def _log_float_or_fixed(hp, name, low, high):
    if low == high:
        return hp.Fixed(name, float(low))
    return hp.Float(name, low, high, sampling="log")


def config_from_values(values: dict) -> dict:
    """A trial's configuration from its hyperparameter values: `TrainConfig` fields.

    Returns:
        e.g. `{"model": "resnet34", "block": "bottleneck", "expansion": 2, "width": 0.5,
        "stem": "cifar", "learning_rate": 0.2, "weight_decay": 0.005}`. `expansion` is None for
        basic blocks (the builder's default, 1).
    """
    block = values["block"]
    return {
        "model": f"resnet{int(values['depth'])}",
        "block": block,
        "expansion": int(values["expansion"]) if block == "bottleneck" else None,
        "width": float(values["width"]),
        "stem": values["stem"],
        "learning_rate": float(values["learning_rate"]),
        "weight_decay": float(values["weight_decay"]),
    }


def describe(config: dict) -> str:
    """A short name for a trial's architecture, e.g. 'resnet34 bottleneck e2 w0.5 cifar'."""
    text = f"{config['model']} {config['block']}"
    if config["block"] == "bottleneck":
        text += f" e{config['expansion']}"
    return f"{text} w{config['width']:g} {config['stem']}"


# --------------------------------------------------------------------------------------------
# The search directory: its definition, its events
# --------------------------------------------------------------------------------------------


def project_path(directory: str | os.PathLike, project_name: str) -> Path:
    return Path(directory) / project_name


def check_definition(project_dir: str | os.PathLike, definition: dict) -> bool:
    """Compares `definition` with the one stored in `project_dir`, writing nothing.

    Returns:
        True when the directory holds this search (a resume), False when there is no search yet.

    Raises:
        SearchMismatchError: the directory holds another search, or a KerasTuner project that
            was not made by this module.
    """
    project_dir = Path(project_dir)
    stored_file = project_dir / DEFINITION_FILE
    if stored_file.is_file():
        try:
            stored = json.loads(stored_file.read_text())
        except json.JSONDecodeError as error:
            raise SearchMismatchError(f"{stored_file} is not valid JSON ({error})") from error
        normalized = json.loads(json.dumps(definition))
        if stored != normalized:
            differences = _differences(stored, normalized)
            raise SearchMismatchError(
                f"{project_dir} holds a search with a different definition ("
                + "; ".join(differences[:4])
                + "). Use the same flags to resume it, or another --project-name or "
                "--directory for a new search; nothing was changed"
            )
        return True
    if (project_dir / "oracle.json").exists() or any(project_dir.glob("trial_*")):
        raise SearchMismatchError(
            f"{project_dir} holds a KerasTuner project without {DEFINITION_FILE}: not a "
            "keras_resnet search; use another --project-name or --directory, nothing was changed"
        )
    return False


def _differences(stored, new, prefix="") -> list[str]:
    if isinstance(stored, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(stored) | set(new)):
            out += _differences(stored.get(key), new.get(key), f"{prefix}{key}.")
        return out
    if stored != new:
        return [f"{prefix.rstrip('.')}: {stored!r} there, {new!r} here"]
    return []


def write_definition(project_dir: str | os.PathLike, definition: dict) -> None:
    """Writes the search definition atomically (a kill never leaves half a file)."""
    project_dir = Path(project_dir)
    project_dir.mkdir(parents=True, exist_ok=True)
    tmp = project_dir / f".{DEFINITION_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(definition, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, project_dir / DEFINITION_FILE)


def rss_bytes() -> int:
    """The process' resident set size now (Linux /proc), or its peak where /proc is missing."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return peak_rss_bytes()


def peak_rss_bytes() -> int:
    """The process' peak resident set size (getrusage; kilobytes on Linux, bytes on macOS)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def log_event(project_dir: str | os.PathLike, **event) -> None:
    """Appends one JSON line to events.jsonl. A single short write with O_APPEND is atomic, so
    the chief and workers of a distributed search can share the file."""
    event = {"time": time.time(), "pid": os.getpid(), **event}
    line = (json.dumps(event, sort_keys=True) + "\n").encode()
    fd = os.open(Path(project_dir) / EVENTS_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def read_events(project_dir: str | os.PathLike) -> list[dict]:
    """The events of a search directory, oldest first (a torn last line is skipped)."""
    path = Path(project_dir) / EVENTS_FILE
    if not path.is_file():
        return []
    events = []
    for line in path.read_text().splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class TrialRecord:
    """One trial of a search, as read back from its directory."""

    trial_id: str
    status: str
    values: dict
    val_accuracy: float | None
    params: int | None
    flops: int | None
    seconds: float | None
    epochs: int | None
    pareto: bool = False

    @property
    def config(self) -> dict:
        return config_from_values(self.values)


def _metric(trial_json: dict, name: str, best: str = "last"):
    history = trial_json.get("metrics", {}).get("metrics", {}).get(name)
    if not history or not history.get("observations"):
        return None
    values = [v for obs in history["observations"] for v in obs["value"]]
    if not values:
        return None
    return {"max": max, "min": min, "last": lambda v: v[-1]}[best](values)


def read_trials(project_dir: str | os.PathLike) -> list[TrialRecord]:
    """Every trial of a search directory (from KerasTuner's trial_*/trial.json), by trial id."""
    records = []
    for path in sorted(Path(project_dir).glob("trial_*/trial.json")):
        data = json.loads(path.read_text())
        values = dict(data.get("hyperparameters", {}).get("values", {}))
        flops, params = _metric(data, "flops"), _metric(data, "params")
        seconds, epochs = _metric(data, "seconds"), _metric(data, "epochs")
        records.append(
            TrialRecord(
                trial_id=str(data["trial_id"]),
                status=str(data.get("status")),
                values=values,
                val_accuracy=_metric(data, OBJECTIVE, best="max"),
                params=None if params is None else int(params),
                flops=None if flops is None else int(flops),
                seconds=seconds,
                epochs=None if epochs is None else int(epochs),
            )
        )
    mark_pareto(records)
    return records


def mark_pareto(records: Sequence[TrialRecord]) -> list[TrialRecord]:
    """Marks (and returns) the Pareto front of completed trials: no other trial is at least as
    accurate with at most as many FLOPs, and better in one of the two."""
    done = [r for r in records if r.val_accuracy is not None and r.flops is not None]
    front = []
    for r in done:
        r.pareto = not any(
            o is not r
            and o.flops <= r.flops
            and o.val_accuracy >= r.val_accuracy
            and (o.flops < r.flops or o.val_accuracy > r.val_accuracy)
            for o in done
        )
        if r.pareto:
            front.append(r)
    return sorted(front, key=lambda r: r.flops)


def best_trial(records: Sequence[TrialRecord]) -> TrialRecord | None:
    """The most accurate completed trial (ties: fewer FLOPs, then the earlier trial)."""
    done = [r for r in records if r.status == "COMPLETED" and r.val_accuracy is not None]
    if not done:
        return None
    return min(done, key=lambda r: (-r.val_accuracy, r.flops or 0, r.trial_id))


def format_trials(records: Sequence[TrialRecord]) -> str:
    """The trials as a Markdown table; '*' marks the Pareto front."""
    header = (
        "| trial | status | architecture | lr | weight decay | epochs | params | MFLOPs "
        "| val acc | seconds | Pareto |"
    )
    lines = [header, "|" + "|".join(["---"] * (header.count("|") - 1)) + "|"]

    def fmt(value, spec):
        return "" if value is None else format(value, spec)

    for r in records:
        try:
            config = r.config
            arch = describe(config)
            lr, wd = config["learning_rate"], config["weight_decay"]
        except KeyError:  # a trial that never got values
            arch, lr, wd = "", None, None
        lines.append(
            f"| {r.trial_id} | {r.status} | {arch} | {fmt(lr, '.3g')} | {fmt(wd, '.2g')} "
            f"| {fmt(r.epochs, 'd')} | {fmt(r.params, ',d')} "
            f"| {fmt(None if r.flops is None else r.flops / 1e6, '.1f')} "
            f"| {fmt(r.val_accuracy, '.4f')} | {fmt(r.seconds, '.1f')} "
            f"| {'*' if r.pareto else ''} |"
        )
    return "\n".join(lines)


def _write_csv(records: Sequence[TrialRecord], path: Path) -> None:
    import csv

    names = sorted({k for r in records for k in r.values})
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            [
                "trial_id",
                "status",
                "val_accuracy",
                "params",
                "flops",
                "seconds",
                "epochs",
                "pareto",
                *names,
            ]
        )
        for r in records:
            writer.writerow(
                [
                    r.trial_id,
                    r.status,
                    r.val_accuracy,
                    r.params,
                    r.flops,
                    r.seconds,
                    r.epochs,
                    int(r.pareto),
                    *(r.values.get(k, "") for k in names),
                ]
            )


def plot_pareto(records: Sequence[TrialRecord], path: str | os.PathLike, title: str = "") -> None:
    """PNG of validation accuracy against FLOPs, the Pareto front drawn and the best starred."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in records if r.val_accuracy is not None and r.flops is not None]
    front = sorted((r for r in done if r.pareto), key=lambda r: r.flops)
    best = best_trial(records)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    ax.scatter(
        [r.flops / 1e6 for r in done],
        [r.val_accuracy for r in done],
        s=22,
        color="tab:blue",
        alpha=0.6,
        label="trial",
    )
    if front:
        ax.step(
            [r.flops / 1e6 for r in front],
            [r.val_accuracy for r in front],
            where="post",
            color="tab:red",
            linewidth=1.2,
            label="Pareto front",
        )
        ax.scatter(
            [r.flops / 1e6 for r in front],
            [r.val_accuracy for r in front],
            s=40,
            facecolors="none",
            edgecolors="tab:red",
        )
    if best is not None and best.flops is not None:
        ax.scatter(
            [best.flops / 1e6],
            [best.val_accuracy],
            marker="*",
            s=180,
            color="gold",
            edgecolors="black",
            zorder=5,
            label=f"best (trial {best.trial_id})",
        )
    if done and max(r.flops for r in done) > 10 * min(r.flops for r in done):
        ax.set_xscale("log")
    ax.set_xlabel("forward MFLOPs per image (multiply-add = 2)")
    ax.set_ylabel("validation accuracy")
    ax.set_title(title or "keras_resnet search: accuracy against FLOPs")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(project_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> dict:
    """Writes trials.md, trials.csv and pareto.png for a search directory (default
    `<project_dir>/report/`), and returns a summary: the trial count and the best trial.

    Works on any search directory at any time, also while a search runs or after it was killed.
    """
    project_dir = Path(project_dir)
    if not project_dir.is_dir():
        raise FileNotFoundError(f"no search directory at {project_dir}")
    records = read_trials(project_dir)
    out = Path(out_dir) if out_dir is not None else project_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    best = best_trial(records)
    lines = [f"# Search {project_dir.name}", ""]
    definition_file = project_dir / DEFINITION_FILE
    if definition_file.is_file():
        definition = json.loads(definition_file.read_text())
        lines += ["Definition: `" + json.dumps(definition, sort_keys=True) + "`", ""]
    lines += [format_trials(records), ""]
    if best is not None:
        lines.append(
            f"Best: trial {best.trial_id}, {describe(best.config)}, "
            f"val accuracy {best.val_accuracy:.4f}."
        )
    (out / "trials.md").write_text("\n".join(lines) + "\n")
    _write_csv(records, out / "trials.csv")
    plot_pareto(records, out / "pareto.png", title=f"{project_dir.name}: accuracy against FLOPs")
    return {
        "trials": len(records),
        "completed": sum(r.status == "COMPLETED" for r in records),
        "best": None if best is None else dataclasses.asdict(best),
        "report_dir": str(out),
    }


# --------------------------------------------------------------------------------------------
# Data for the search
# --------------------------------------------------------------------------------------------


def search_split(
    x, y, *, train_fraction: float = 1.0, validation_fraction: float = 0.1, seed: int = 0
):
    """Splits a train set into the search's train and validation parts.

    The validation part (`validation_fraction` of the train set) is held out first, so that it
    does not change with `train_fraction`; the test set is never seen by the search.

    Returns:
        `(x_train, y_train), (x_val, y_val)`.
    """
    import numpy as np

    if not 0 < train_fraction <= 1:
        raise ValueError(
            f"train_fraction must be in (0, 1], received train_fraction={train_fraction!r}"
        )
    if not 0 < validation_fraction < 1:
        raise ValueError(
            "validation_fraction must be in (0, 1), received "
            f"validation_fraction={validation_fraction!r}"
        )
    order = np.random.default_rng(seed).permutation(len(x))
    n_val = max(1, int(round(len(x) * validation_fraction)))
    val, rest = order[:n_val], order[n_val:]
    n_train = max(1, int(round(len(rest) * train_fraction)))
    train = np.sort(rest[:n_train])
    val = np.sort(val)
    return (x[train], y[train]), (x[val], y[val])


# --------------------------------------------------------------------------------------------
# The HyperModel and the tuners
# --------------------------------------------------------------------------------------------


def _keras_tuner():
    import keras_tuner

    return keras_tuner


def trial_epochs(values: dict, max_epochs: int) -> tuple[int, int]:
    """`(initial_epoch, epochs)` of a trial: Hyperband sets them in 'tuner/...' values (a
    continued trial trains epochs initial..epochs from its parent's weights); the other tuners
    train every trial for `max_epochs`."""
    return int(values.get("tuner/initial_epoch", 0)), int(values.get("tuner/epochs", max_epochs))


def trial_train_config(base, config: dict, epochs: int):
    """The `TrainConfig` of a trial: `base` with the trial's values and its epoch count.

    The warmup is at most a fifth of the trial's epochs (the recipe's 2 epochs would fill a
    1-epoch Hyperband trial with warmup and never decay the learning rate).
    """
    return dataclasses.replace(
        base, **config, epochs=max(1, epochs), warmup_epochs=min(base.warmup_epochs, epochs / 5)
    )


class ResNetHyperModel(_keras_tuner().HyperModel):
    """A KerasTuner HyperModel over keras_resnet, trained with `keras_resnet.training`.

    Args:
        space: the `SearchSpace`.
        base: the `TrainConfig` every trial starts from (data, batch size, precision, recipe).
        dataset: a `keras_resnet.data.Dataset` whose `x_train` is the search's train part: the
            normalization statistics come from it, and it sets the schedule's length.
        max_epochs: epochs of a trial when the tuner does not set them (random, bayesian).
    """

    def __init__(self, space: SearchSpace, base, dataset, *, max_epochs: int = 10):
        super().__init__(name="keras_resnet", tunable=True)
        self.space = space
        self.base = base.resolve()
        self.dataset = dataset
        self.max_epochs = int(max_epochs)

    def build(self, hp):
        import keras

        from keras_resnet import training

        config = self.space.declare(hp)
        initial_epoch, epochs = trial_epochs(hp.values, self.max_epochs)
        # A continued Hyperband trial starts a new optimizer on its parent's weights; its
        # schedule spans only the epochs it trains (a warm restart, as in SGDR).
        train_config = trial_train_config(self.base, config, epochs - initial_epoch)
        keras.config.set_dtype_policy(train_config.precision)
        steps_per_epoch = math.ceil(len(self.dataset.x_train) / train_config.batch_size)
        model = training.build_model(train_config, self.dataset)
        return training.compile_model(model, train_config, steps_per_epoch)

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
        val_accuracy (as KerasTuner takes it from a History), params, flops, seconds, epochs."""
        from keras_resnet.analysis import count_flops, count_params

        epochs = self.max_epochs if epochs is None else epochs
        kwargs.setdefault("verbose", self.base.verbose)
        start = time.perf_counter()
        history = model.fit(
            x,
            y,
            batch_size=self.base.batch_size,
            epochs=epochs,
            initial_epoch=initial_epoch,
            validation_data=validation_data,
            callbacks=callbacks,
            shuffle=True,
            **kwargs,
        )
        seconds = time.perf_counter() - start
        accuracies = history.history.get(OBJECTIVE) or [float("nan")]
        return {
            OBJECTIVE: float(max(accuracies)),
            "val_loss": float(min(history.history.get("val_loss") or [float("nan")])),
            # Augmentation has no weights and no convolutions: these are the ResNet's own.
            "params": count_params(model),
            "flops": count_flops(model),
            "seconds": seconds,
            "epochs": int(epochs),
        }


def _trial_main(payload_file: str, result_file: str) -> int:
    """A child process' whole job: one trial (see `run_trial_in_process`). Builds the model,
    loads the parent trial's weights (Hyperband), fits with a best-epoch checkpoint, and writes
    the metrics and the child's peak RSS to `result_file`."""
    import pickle
    import traceback

    _die_with_parent()
    try:
        with open(payload_file, "rb") as f:
            payload = pickle.load(f)
        import keras

        hp = _keras_tuner().HyperParameters.from_config(payload["hp"])
        hypermodel = payload["hypermodel"]
        model = hypermodel.build(hp)
        if payload["parent_checkpoint"]:
            model.load_weights(payload["parent_checkpoint"])
        checkpoint = keras.callbacks.ModelCheckpoint(
            payload["checkpoint"],
            monitor=OBJECTIVE,
            mode="max",
            save_best_only=True,
            save_weights_only=True,
        )
        metrics = hypermodel.fit(
            hp, model, *payload["args"], callbacks=[checkpoint], **payload["kwargs"]
        )
        result = {"status": "ok", "metrics": metrics, "peak_rss": peak_rss_bytes()}
    except BaseException:  # noqa: BLE001 - everything goes back to the tuner as a failed trial
        result = {
            "status": "error",
            "traceback": traceback.format_exc(),
            "peak_rss": peak_rss_bytes(),
        }
    tmp = f"{result_file}.tmp"
    with open(tmp, "w") as f:
        json.dump(result, f)
    os.replace(tmp, result_file)
    return 0 if result["status"] == "ok" else 1


def _die_with_parent() -> None:
    """On Linux, ask the kernel to kill this process when its parent dies (even by SIGKILL), so
    that a killed search leaves no orphan trial writing into its directory."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
        if os.getppid() == 1:  # the parent died before prctl took effect
            os._exit(1)


def run_trial_in_process(
    payload: dict, work_dir: str | os.PathLike, on_start=None
) -> tuple[dict, int]:
    """Runs one trial in a fresh Python process; returns (metrics, the child's peak RSS).

    A process per trial hands all of a trial's memory back to the system when it ends: within
    one process, RSS grows with every trial on TensorFlow and JAX even after `clear_session()`
    (figures in docs/TUNING.md). A plain `python -c` child, not multiprocessing: 'fork' can
    deadlock a process that runs TensorFlow's or JAX's threads, and 'spawn' re-imports the
    caller's `__main__`. The payload (hypermodel with its data, hyperparameters, fit arguments)
    goes by a pickle file in the trial's folder, deleted afterwards. `on_start(pid)` is called
    once the child runs.
    """
    import pickle
    import subprocess

    work_dir = Path(work_dir)
    payload_file = work_dir / f"payload.{os.getpid()}.pkl"
    result_file = work_dir / f"result.{os.getpid()}.json"
    result_file.unlink(missing_ok=True)
    with open(payload_file, "wb") as f:
        pickle.dump(payload, f, protocol=pickle.HIGHEST_PROTOCOL)
    code = (
        "import sys; from keras_resnet.tuning import _trial_main; "
        "sys.exit(_trial_main(sys.argv[1], sys.argv[2]))"
    )
    try:
        child = subprocess.Popen(
            [sys.executable, "-c", code, os.fspath(payload_file), os.fspath(result_file)]
        )
        if on_start is not None:
            on_start(child.pid)
        returncode = child.wait()
        if not result_file.is_file():
            raise RuntimeError(
                f"the trial's process died without a result (exit code {returncode})"
            )
        result = json.loads(result_file.read_text())
    finally:
        payload_file.unlink(missing_ok=True)
        result_file.unlink(missing_ok=True)
    if result["status"] != "ok":
        raise RuntimeError(f"the trial failed in its process:\n{result['traceback']}")
    return result["metrics"], result["peak_rss"]


def _tuner_class(kind: str, process_per_trial: bool, max_search_seconds: float = 0):
    """A KerasTuner tuner class that logs every trial's start and end (with the RSS), and runs
    each trial in a process of its own (or, in process, clears the Keras session after it)."""
    kt = _keras_tuner()
    base = {
        "hyperband": kt.Hyperband,
        "bayesian": kt.BayesianOptimization,
        "random": kt.RandomSearch,
    }[kind]

    class Tuner(base):
        def _configure_tensorboard_dir(self, callbacks, trial, execution=0):
            # KerasTuner imports tensorboard on the TensorFlow backend even when no TensorBoard
            # callback is used; tensorboard is not a dependency of TensorFlow 2.21.
            if any(type(c).__name__ == "TensorBoard" for c in callbacks):
                super()._configure_tensorboard_dir(callbacks, trial, execution)

        def _populate_initial_space(self):
            # KerasTuner's own builds (and here compiles) a whole model per conditional branch
            # only to list the hyperparameters, in the search's process; the space declares
            # them all directly, the conditional `expansion` included.
            hp = self.oracle.get_space()
            self.hypermodel.space.declare(hp)
            self.oracle.update_space(hp)

        def run_trial(self, trial, *args, **kwargs):
            log_event(
                self.project_dir, event="start", trial_id=trial.trial_id, tuner_id=self.tuner_id
            )
            self._child_peak_rss = None
            if not process_per_trial:
                return super().run_trial(trial, *args, **kwargs)
            values = trial.hyperparameters.values
            initial_epoch, epochs = trial_epochs(
                values, kwargs.pop("epochs", None) or self.hypermodel.max_epochs
            )
            parent = values.get("tuner/trial_id")  # Hyperband: continue from this trial
            kwargs.pop("callbacks", None)
            payload = {
                "hp": trial.hyperparameters.get_config(),
                "hypermodel": self.hypermodel,
                "args": args,
                "kwargs": {**kwargs, "epochs": epochs, "initial_epoch": initial_epoch},
                "checkpoint": self._get_checkpoint_fname(trial.trial_id),
                "parent_checkpoint": parent and self._get_checkpoint_fname(parent),
            }
            metrics, self._child_peak_rss = run_trial_in_process(
                payload,
                self.get_trial_dir(trial.trial_id),
                on_start=lambda pid: log_event(
                    self.project_dir,
                    event="child",
                    trial_id=trial.trial_id,
                    tuner_id=self.tuner_id,
                    child_pid=pid,
                ),
            )
            return metrics

        def on_trial_end(self, trial):
            super().on_trial_end(trial)
            import keras

            # In process: KerasTuner clears the session before a build; clearing after the trial
            # as well frees the last model between trials, and gc breaks the reference cycles
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
                child_peak_rss=getattr(self, "_child_peak_rss", None),
            )
            # A time budget: once spent, no new trial starts (the oracle stops at max_trials).
            if max_search_seconds and time.monotonic() - self._started > max_search_seconds:
                oracle = self.oracle
                if hasattr(oracle, "trials"):  # a local oracle, not a distributed worker's client
                    oracle.max_trials = len(oracle.trials)

        def search(self, *args, **kwargs):
            self._started = time.monotonic()
            return super().search(*args, **kwargs)

    Tuner.__name__ = Tuner.__qualname__ = f"ResNet{base.__name__}"
    return Tuner


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
    if kind not in TUNERS:
        raise ValueError(f"tuner must be one of {TUNERS}, received tuner={kind!r}")
    kt = _keras_tuner()
    common = dict(
        objective=kt.Objective(OBJECTIVE, direction="max"),
        seed=seed,
        directory=os.fspath(directory),
        project_name=project_name,
        overwrite=False,
    )
    cls = _tuner_class(kind, process_per_trial, max_search_seconds)
    if kind == "hyperband":
        tuner = cls(
            hypermodel, max_epochs=max_epochs, factor=factor, hyperband_iterations=1, **common
        )
        # Hyperband takes no max_trials, but its oracle honours the attribute (not part of the
        # saved state, so it is set again on every run).
        tuner.oracle.max_trials = max_trials
    else:
        tuner = cls(hypermodel, max_trials=max_trials, **common)
    return tuner


# --------------------------------------------------------------------------------------------
# A whole search
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class SearchOptions:
    """Everything a search needs besides its space (the flags of scripts/tune.py)."""

    dataset: str = "fashion_mnist"
    source_dir: str | None = None
    loader: str = "auto"
    tuner: str = "hyperband"
    max_trials: int = 30
    max_epochs: int = 9
    train_fraction: float = 1.0
    validation_fraction: float = 0.1
    batch_size: int = 256
    precision: str = "float32"
    steps_per_execution: int = 1
    max_search_seconds: float = 0.0
    seed: int = 0
    directory: str = "runs/tuning"
    project_name: str = "search"
    final_epochs: int = 0
    output_dir: str = "saved_models"
    run_name: str | None = None
    process_per_trial: bool = True
    verbose: int = 1

    def validate(self) -> None:
        """Raises `SearchSpaceError` (its `field` names the option) for the first bad value."""
        from keras_resnet.training import PRECISIONS

        if self.tuner not in TUNERS:
            raise SearchSpaceError(
                "tuner", f"tuner must be one of {TUNERS}, received tuner={self.tuner!r}"
            )
        if self.precision not in PRECISIONS:
            raise SearchSpaceError(
                "precision",
                f"precision must be one of {PRECISIONS}, received precision={self.precision!r}",
            )
        for field, minimum in (
            ("max_trials", 1),
            ("max_epochs", 1),
            ("batch_size", 1),
            ("final_epochs", 0),
            ("steps_per_execution", 1),
        ):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise SearchSpaceError(
                    field, f"{field} must be an integer >= {minimum}, received {field}={value!r}"
                )
        if not self.max_search_seconds >= 0:
            raise SearchSpaceError(
                "max_search_seconds",
                "max_search_seconds must be >= 0, "
                f"received max_search_seconds={self.max_search_seconds!r}",
            )
        if not 0 < self.train_fraction <= 1:
            raise SearchSpaceError(
                "train_fraction",
                "train_fraction must be in (0, 1], "
                f"received train_fraction={self.train_fraction!r}",
            )
        if not 0 < self.validation_fraction < 1:
            raise SearchSpaceError(
                "validation_fraction",
                "validation_fraction must be in "
                "(0, 1), received validation_fraction="
                f"{self.validation_fraction!r}",
            )
        if not self.project_name or os.sep in self.project_name or self.project_name in (".", ".."):
            raise SearchSpaceError(
                "project_name",
                "project_name must be a plain folder name, "
                f"received project_name={self.project_name!r}",
            )

    def base_config(self):
        """The `TrainConfig` that every trial (and the final training) starts from."""
        from keras_resnet.training import TrainConfig

        return TrainConfig(
            dataset=self.dataset,
            source_dir=self.source_dir,
            loader=self.loader,
            batch_size=self.batch_size,
            precision=self.precision,
            seed=self.seed,
            steps_per_execution=self.steps_per_execution,
            tensorboard=False,
            track_test=False,
            verbose=self.verbose,
        )

    def definition(self, space: SearchSpace, image_shape) -> dict:
        """What must not change between a search and its resumption (max_trials may grow)."""
        base = dataclasses.asdict(self.base_config().resolve())
        # Paths, speed settings and verbosity may differ between runs; the searched fields come
        # from each trial.
        for key in (
            "verbose",
            "output_dir",
            "run_name",
            "source_dir",
            "data_dir",
            "loader",
            "epochs",
            "steps_per_execution",
            "model",
            "block",
            "expansion",
            "width",
            "stem",
            "learning_rate",
            "weight_decay",
        ):
            base.pop(key, None)
        return {
            "format": 1,
            "space": space.to_dict(),
            "tuner": self.tuner,
            "objective": OBJECTIVE,
            "max_epochs": self.max_epochs,
            "image_shape": list(image_shape),
            "train_fraction": self.train_fraction,
            "validation_fraction": self.validation_fraction,
            "train_config": base,
        }


def is_distributed_worker() -> bool:
    """True in a KerasTuner worker process (KERASTUNER_ORACLE_IP set, the tuner id not chief)."""
    return "KERASTUNER_ORACLE_IP" in os.environ and "chief" not in os.environ.get(
        "KERASTUNER_TUNER_ID", ""
    )


def run_search(space: SearchSpace, options: SearchOptions, *, dataset=None) -> dict:
    """Runs (or resumes) a search, writes its report, and trains the best configuration.

    Every check happens before anything is written: an invalid space or option, or a directory
    that holds another search, raises and leaves the directory as it was.

    In KerasTuner's distributed mode (KERASTUNER_TUNER_ID, _ORACLE_IP, _ORACLE_PORT) the chief
    serves the oracle, then reports and trains the best; workers run trials and return.

    Args:
        space: the search space.
        options: the search's options.
        dataset: a `keras_resnet.data.Dataset` (default: `load_dataset(options.dataset)`).

    Returns:
        A summary: project directory, trial counts, best trial, report folder, and the final
        run's metrics when `options.final_epochs` > 0.
    """
    from keras_resnet import data as data_lib
    from keras_resnet.training import one_hot

    space.validate()
    options.validate()
    project_dir = project_path(options.directory, options.project_name)
    if dataset is None:
        dataset = data_lib.load_dataset(
            options.dataset, source_dir=options.source_dir, loader=options.loader
        )
    space.check_input(dataset.image_shape)
    definition = options.definition(space, dataset.image_shape)
    check_definition(project_dir, definition)  # raises before anything is written

    (x_train, y_train), (x_val, y_val) = search_split(
        dataset.x_train,
        dataset.y_train,
        train_fraction=options.train_fraction,
        validation_fraction=options.validation_fraction,
        seed=options.seed,
    )
    if options.batch_size > len(x_train):
        raise SearchSpaceError(
            "batch_size",
            f"batch_size must be at most the {len(x_train)} "
            f"images trials train on, received batch_size={options.batch_size}",
        )
    write_definition(project_dir, definition)
    search_data = dataclasses.replace(dataset, x_train=x_train, y_train=y_train)
    hypermodel = ResNetHyperModel(
        space, options.base_config(), search_data, max_epochs=options.max_epochs
    )
    tuner = make_tuner(
        options.tuner,
        hypermodel,
        directory=options.directory,
        project_name=options.project_name,
        max_trials=options.max_trials,
        max_epochs=options.max_epochs,
        seed=options.seed,
        process_per_trial=options.process_per_trial,
        max_search_seconds=options.max_search_seconds,
    )
    tuner.search(
        x_train,
        one_hot(y_train, dataset.num_classes),
        validation_data=(x_val, one_hot(y_val, dataset.num_classes)),
        epochs=options.max_epochs,
        verbose=options.verbose,
    )
    summary: dict = {"project_dir": str(project_dir)}
    if is_distributed_worker():
        return summary
    summary.update(write_report(project_dir))
    if options.final_epochs > 0 and summary["best"] is not None:
        summary["final"] = train_best(project_dir, options, dataset=dataset)
    return summary


def train_best(project_dir: str | os.PathLike, options: SearchOptions, *, dataset=None) -> dict:
    """Trains the best trial's configuration on the full train set with
    `keras_resnet.training.train` (epochs: `options.final_epochs`), into
    `<output_dir>/<run_name>/` (default run name `tuned_<project_name>`), a run folder that
    scripts/export.py takes. A finished run with the same configuration is not trained again;
    an interrupted one resumes (the training pipeline's BackupAndRestore).

    Returns:
        The run's metrics (metrics.json), plus the trial id and search directory.
    """
    from keras_resnet import training

    best = best_trial(read_trials(project_dir))
    if best is None:
        raise ValueError(f"no completed trial in {project_dir}")
    run_name = options.run_name or f"tuned_{Path(project_dir).name}"
    config = dataclasses.replace(
        options.base_config().resolve(),
        **best.config,
        epochs=max(1, options.final_epochs),
        # The recipe's own warmup for the full run; the whole train set, no validation part.
        val_size=0,
        run_name=run_name,
        output_dir=os.path.join(options.output_dir, run_name),
        track_test=True,
    )
    out = Path(config.output_dir)
    metrics_file, config_file = out / "metrics.json", out / "config.json"
    if metrics_file.is_file() and config_file.is_file() and not (out / "backup").exists():
        if json.loads(config_file.read_text()) == json.loads(
            json.dumps(dataclasses.asdict(config.resolve()))
        ):
            return {
                **json.loads(metrics_file.read_text()),
                "trial_id": best.trial_id,
                "reused": True,
            }
    metrics = training.train(config, dataset=dataset)
    origin = {
        "trial_id": best.trial_id,
        "search_dir": os.fspath(project_dir),
        "val_accuracy": best.val_accuracy,
        "hyperparameters": best.values,
    }
    (out / "tuning.json").write_text(json.dumps(origin, indent=2, default=str) + "\n")
    return {**metrics, "trial_id": best.trial_id}
