"""The report of a search: a Markdown table, a CSV, a Pareto plot of accuracy against parameters
and FLOPs, and the best configuration as a training config file.

    <directory>/<project_name>/report/
        trials.md         the trials (architecture, recipe, epochs, params, MFLOPs, val accuracy,
                          seconds, '*' on the Pareto fronts) and the best trial
        trials.csv        the same, one column per hyperparameter
        pareto.png        two panels: validation accuracy against parameters and against FLOPs,
                          each front drawn, the best starred
        best_config.json  the best trial as a `TrainConfig.to_dict()`, full-length recipe:
                          `keras-resnet train --config best_config.json` trains it (written
                          when the search's definition file is there)

Each file is written whole (a temporary file, then an atomic replace), so that a report read
while a search runs, or after it was killed, is never half a file.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path

from keras_resnet.training import TrainConfig
from keras_resnet.tuning.hypermodel import trial_train_config
from keras_resnet.tuning.space import config_from_values, describe
from keras_resnet.tuning.store import DEFINITION_FILE, OBJECTIVE
from keras_resnet.utils import atomic_path, installed, write_text_atomic

CSV_COLUMNS = ("trial_id", "status", "val_accuracy", "params", "flops", "seconds", "epochs")
BEST_CONFIG_FILE = "best_config.json"
# Recipe values a trial may set besides learning rate and weight decay, as the table shows them.
OTHER_RECIPE = (
    ("label_smoothing", "ls"),
    ("erasing", "erasing"),
    ("ema", "ema"),
    ("mixup", "mixup"),
    ("cutmix", "cutmix"),
)


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
    pareto: bool = False  # on the front of accuracy against FLOPs
    pareto_params: bool = False  # on the front of accuracy against parameters

    @property
    def config(self):
        """`(ResNetConfig, recipe)` of the trial (see `config_from_values`)."""
        return config_from_values(self.values)


def trial_metric(trial_json: dict, name: str, best: str = "last"):
    """A metric of a KerasTuner trial.json: its 'last', 'max' or 'min' observation (or None)."""
    history = trial_json.get("metrics", {}).get("metrics", {}).get(name)
    if not history or not history.get("observations"):
        return None
    values = [v for obs in history["observations"] for v in obs["value"]]
    if not values:
        return None
    return {"max": max, "min": min, "last": lambda v: v[-1]}[best](values)


def _as_int(value):
    return None if value is None else int(value)


def read_trials(project_dir: str | os.PathLike) -> list[TrialRecord]:
    """Every trial of a search directory (from KerasTuner's trial_*/trial.json), by trial id."""
    records = []
    for path in sorted(Path(project_dir).glob("trial_*/trial.json")):
        data = json.loads(path.read_text())
        records.append(
            TrialRecord(
                trial_id=str(data["trial_id"]),
                status=str(data.get("status")),
                values=dict(data.get("hyperparameters", {}).get("values", {})),
                val_accuracy=trial_metric(data, OBJECTIVE, best="max"),
                params=_as_int(trial_metric(data, "params")),
                flops=_as_int(trial_metric(data, "flops")),
                seconds=trial_metric(data, "seconds"),
                epochs=_as_int(trial_metric(data, "epochs")),
            )
        )
    mark_pareto(records)
    return records


def pareto_front(records: Sequence[TrialRecord], cost: str = "flops") -> list[TrialRecord]:
    """The completed trials that no other trial beats: none is at least as accurate at most as
    costly (`cost`: 'flops' or 'params') and better in one of the two. Sorted by cost."""
    done = [r for r in records if r.val_accuracy is not None and getattr(r, cost) is not None]
    front = [
        r
        for r in done
        if not any(
            o is not r
            and getattr(o, cost) <= getattr(r, cost)
            and o.val_accuracy >= r.val_accuracy
            and (getattr(o, cost) < getattr(r, cost) or o.val_accuracy > r.val_accuracy)
            for o in done
        )
    ]
    return sorted(front, key=lambda r: getattr(r, cost))


def mark_pareto(records: Sequence[TrialRecord]) -> list[TrialRecord]:
    """Marks the Pareto fronts of completed trials (`pareto`: against FLOPs, `pareto_params`:
    against parameters) and returns the FLOPs front, sorted by FLOPs."""
    by_flops, by_params = pareto_front(records, "flops"), pareto_front(records, "params")
    for r in records:
        r.pareto = any(r is f for f in by_flops)
        r.pareto_params = any(r is p for p in by_params)
    return by_flops


def best_trial(records: Sequence[TrialRecord]) -> TrialRecord | None:
    """The most accurate completed trial (ties: fewer FLOPs, then the earlier trial)."""
    done = [r for r in records if r.status == "COMPLETED" and r.val_accuracy is not None]
    if not done:
        return None
    return min(done, key=lambda r: (-r.val_accuracy, r.flops or 0, r.trial_id))


def _fmt(value, spec: str) -> str:
    return "" if value is None else format(value, spec)


def _other_recipe(recipe: dict) -> str:
    return " ".join(f"{label} {recipe[key]:.3g}" for key, label in OTHER_RECIPE if key in recipe)


def format_trials(records: Sequence[TrialRecord]) -> str:
    """The trials as a Markdown table; '*' marks the Pareto fronts (parameters, FLOPs)."""
    header = (
        "| trial | status | architecture | lr | weight decay | other recipe | epochs | params "
        "| MFLOPs | val acc | seconds | Pareto params | Pareto FLOPs |"
    )
    lines = [header, "|" + "|".join(["---"] * (header.count("|") - 1)) + "|"]
    for r in records:
        try:
            model, recipe = r.config
            arch = describe(model)
            lr, wd = recipe.get("learning_rate"), recipe.get("weight_decay")
            other = _other_recipe(recipe)
        except (KeyError, ValueError):  # a trial that never got values
            arch, lr, wd, other = "", None, None, ""
        lines.append(
            f"| {r.trial_id} | {r.status} | {arch} | {_fmt(lr, '.3g')} | {_fmt(wd, '.2g')} "
            f"| {other} | {_fmt(r.epochs, 'd')} | {_fmt(r.params, ',d')} "
            f"| {_fmt(None if r.flops is None else r.flops / 1e6, '.1f')} "
            f"| {_fmt(r.val_accuracy, '.4f')} | {_fmt(r.seconds, '.1f')} "
            f"| {'*' if r.pareto_params else ''} | {'*' if r.pareto else ''} |"
        )
    return "\n".join(lines)


def write_csv(records: Sequence[TrialRecord], path: str | os.PathLike) -> None:
    """The trials as CSV (one column per hyperparameter), written whole."""
    names = sorted({k for r in records for k in r.values})
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*CSV_COLUMNS, "pareto", "pareto_params", *names])
        for r in records:
            row = [getattr(r, column) for column in CSV_COLUMNS]
            fronts = [int(r.pareto), int(r.pareto_params)]
            writer.writerow([*row, *fronts, *(r.values.get(k, "") for k in names)])


# (cost attribute, scale to the axis' unit, axis label) of the two panels.
PARETO_PANELS = (
    ("params", 1e6, "parameters (millions)"),
    ("flops", 1e6, "forward MFLOPs per image (multiply-add = 2)"),
)


def _plot_panel(ax, records: Sequence[TrialRecord], cost: str, scale: float, label: str) -> None:
    done = [r for r in records if r.val_accuracy is not None and getattr(r, cost) is not None]
    front = pareto_front(records, cost)
    best = best_trial(records)
    x = [getattr(r, cost) / scale for r in done]
    ax.scatter(x, [r.val_accuracy for r in done], s=22, color="tab:blue", alpha=0.6, label="trial")
    if front:
        fx, fy = [getattr(r, cost) / scale for r in front], [r.val_accuracy for r in front]
        ax.step(fx, fy, where="post", color="tab:red", linewidth=1.2, label="Pareto front")
        ax.scatter(fx, fy, s=40, facecolors="none", edgecolors="tab:red")
    if best is not None and getattr(best, cost) is not None:
        ax.scatter(
            [getattr(best, cost) / scale],
            [best.val_accuracy],
            marker="*",
            s=180,
            color="gold",
            edgecolors="black",
            zorder=5,
            label=f"best (trial {best.trial_id})",
        )
    if done and max(x) > 10 * min(x):
        ax.set_xscale("log")
    ax.set_xlabel(label, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(True, alpha=0.3)


def plot_pareto(records: Sequence[TrialRecord], path: str | os.PathLike, title: str = "") -> None:
    """PNG of validation accuracy against parameters (left) and FLOPs (right), each Pareto front
    drawn and the best trial starred; written whole. Nothing without matplotlib (the `plots`
    extra): the report's JSON and CSV hold the figures."""
    if not installed("matplotlib"):
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(7, 4.5), dpi=110, sharey=True)
    for ax, (cost, scale, label) in zip(axes, PARETO_PANELS, strict=True):
        _plot_panel(ax, records, cost, scale, label)
    axes[0].set_ylabel("validation accuracy")
    axes[0].legend(loc="best", fontsize=7)
    fig.suptitle(title or "keras_resnet search: accuracy against parameters and FLOPs", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def best_train_config(definition: dict, values: dict, run_name: str) -> TrainConfig:
    """The training configuration of a trial at full length, from a search's definition.

    From the search: the architecture and recipe values the space searched (`values`). From the
    search's base configuration (the definition's `train_config`): every other option (data,
    batch size, precision, augmentation, warmup, optimizer, model options such as dropout).
    The options a search does not fix take `TrainConfig`'s defaults: `epochs` (the full
    recipe's), `loader`, `source_dir`, `data_dir`, `steps_per_execution`, `verbose`; and
    TensorBoard and the per-epoch test curve, which trials turn off. The run goes to
    `saved_models/<run_name>` unless `--output-dir` is given.
    """
    defaults = TrainConfig()
    base = dataclasses.replace(
        TrainConfig.from_dict(definition["train_config"]),
        tensorboard=defaults.tensorboard,
        track_test=defaults.track_test,
        run_name=run_name,
        output_dir=None,
    )
    return trial_train_config(base, values)


def write_best_config(
    project_dir: str | os.PathLike, best: TrialRecord | None, out: str | os.PathLike
) -> Path | None:
    """Writes the best trial's `best_train_config` to `out/best_config.json` (whole). Returns
    its path, or None when the folder has no definition file or no completed trial."""
    project_dir = Path(project_dir)
    definition_file = project_dir / DEFINITION_FILE
    if best is None or not definition_file.is_file():
        return None
    definition = json.loads(definition_file.read_text())
    config = best_train_config(definition, best.values, f"tuned_{project_dir.name}")
    path = Path(out) / BEST_CONFIG_FILE
    write_text_atomic(path, json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n")
    return path


def write_report(project_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> dict:
    """Writes trials.md, trials.csv, pareto.png and best_config.json for a search directory
    (default `<project_dir>/report/`), and returns a summary: the trial count, the best trial
    and the path of its config file (None without a definition file or a completed trial).

    Works on any search directory at any time, also while a search runs or after it was killed.

    Raises:
        FileNotFoundError: there is no search directory at `project_dir`.
    """
    project_dir = Path(project_dir)
    if not project_dir.is_dir():
        raise FileNotFoundError(f"no search directory at {project_dir}")
    records = read_trials(project_dir)
    out = Path(out_dir) if out_dir is not None else project_dir / "report"
    best = best_trial(records)
    lines = [f"# Search {project_dir.name}", ""]
    definition_file = project_dir / DEFINITION_FILE
    if definition_file.is_file():
        definition = json.loads(definition_file.read_text())
        lines += ["Definition: `" + json.dumps(definition, sort_keys=True) + "`", ""]
    lines += [format_trials(records), ""]
    if best is not None:
        lines.append(
            f"Best: trial {best.trial_id}, {describe(best.config[0])}, "
            f"val accuracy {best.val_accuracy:.4f}."
        )
    best_config = write_best_config(project_dir, best, out)
    if best_config is not None:
        lines.append(
            f"\nIts configuration, full length: `{BEST_CONFIG_FILE}` "
            f"(`keras-resnet train --config {BEST_CONFIG_FILE}`)."
        )
    write_text_atomic(out / "trials.md", "\n".join(lines) + "\n")
    write_csv(records, out / "trials.csv")
    plot_pareto(records, out / "pareto.png", title=f"{project_dir.name}: accuracy against cost")
    return {
        "trials": len(records),
        "completed": sum(r.status == "COMPLETED" for r in records),
        "best": None if best is None else dataclasses.asdict(best),
        "best_config": None if best_config is None else str(best_config),
        "report_dir": str(out),
    }


__all__ = [
    "BEST_CONFIG_FILE",
    "TrialRecord",
    "best_train_config",
    "best_trial",
    "format_trials",
    "mark_pareto",
    "pareto_front",
    "plot_pareto",
    "read_trials",
    "trial_metric",
    "write_best_config",
    "write_csv",
    "write_report",
]
