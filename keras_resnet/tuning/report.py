"""The report of a search: a Markdown table, a CSV and a Pareto plot of accuracy against FLOPs.

    <directory>/<project_name>/report/
        trials.md     the trials (architecture, recipe, epochs, params, MFLOPs, val accuracy,
                      seconds, '*' on the Pareto front) and the best trial
        trials.csv    the same, one column per hyperparameter
        pareto.png    validation accuracy against FLOPs, the front drawn, the best starred

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

from keras_resnet.tuning.space import config_from_values, describe
from keras_resnet.tuning.store import DEFINITION_FILE, OBJECTIVE
from keras_resnet.utils import atomic_path, write_text_atomic

CSV_COLUMNS = ("trial_id", "status", "val_accuracy", "params", "flops", "seconds", "epochs")


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


def _fmt(value, spec: str) -> str:
    return "" if value is None else format(value, spec)


def format_trials(records: Sequence[TrialRecord]) -> str:
    """The trials as a Markdown table; '*' marks the Pareto front."""
    header = (
        "| trial | status | architecture | lr | weight decay | epochs | params | MFLOPs "
        "| val acc | seconds | Pareto |"
    )
    lines = [header, "|" + "|".join(["---"] * (header.count("|") - 1)) + "|"]
    for r in records:
        try:
            model, recipe = r.config
            arch = describe(model)
            lr, wd = recipe.get("learning_rate"), recipe.get("weight_decay")
        except (KeyError, ValueError):  # a trial that never got values
            arch, lr, wd = "", None, None
        lines.append(
            f"| {r.trial_id} | {r.status} | {arch} | {_fmt(lr, '.3g')} | {_fmt(wd, '.2g')} "
            f"| {_fmt(r.epochs, 'd')} | {_fmt(r.params, ',d')} "
            f"| {_fmt(None if r.flops is None else r.flops / 1e6, '.1f')} "
            f"| {_fmt(r.val_accuracy, '.4f')} | {_fmt(r.seconds, '.1f')} "
            f"| {'*' if r.pareto else ''} |"
        )
    return "\n".join(lines)


def write_csv(records: Sequence[TrialRecord], path: str | os.PathLike) -> None:
    """The trials as CSV (one column per hyperparameter), written whole."""
    names = sorted({k for r in records for k in r.values})
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*CSV_COLUMNS, "pareto", *names])
        for r in records:
            row = [getattr(r, column) for column in CSV_COLUMNS]
            writer.writerow([*row, int(r.pareto), *(r.values.get(k, "") for k in names)])


def plot_pareto(records: Sequence[TrialRecord], path: str | os.PathLike, title: str = "") -> None:
    """PNG of validation accuracy against FLOPs, the Pareto front drawn and the best starred."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in records if r.val_accuracy is not None and r.flops is not None]
    front = sorted((r for r in done if r.pareto), key=lambda r: r.flops)
    best = best_trial(records)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    mflops, accuracy = [r.flops / 1e6 for r in done], [r.val_accuracy for r in done]
    ax.scatter(mflops, accuracy, s=22, color="tab:blue", alpha=0.6, label="trial")
    if front:
        x, y = [r.flops / 1e6 for r in front], [r.val_accuracy for r in front]
        ax.step(x, y, where="post", color="tab:red", linewidth=1.2, label="Pareto front")
        ax.scatter(x, y, s=40, facecolors="none", edgecolors="tab:red")
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
    if done and max(mflops) > 10 * min(mflops):
        ax.set_xscale("log")
    ax.set_xlabel("forward MFLOPs per image (multiply-add = 2)")
    ax.set_ylabel("validation accuracy")
    ax.set_title(title or "keras_resnet search: accuracy against FLOPs")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def write_report(project_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> dict:
    """Writes trials.md, trials.csv and pareto.png for a search directory (default
    `<project_dir>/report/`), and returns a summary: the trial count and the best trial.

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
    write_text_atomic(out / "trials.md", "\n".join(lines) + "\n")
    write_csv(records, out / "trials.csv")
    plot_pareto(records, out / "pareto.png", title=f"{project_dir.name}: accuracy against FLOPs")
    return {
        "trials": len(records),
        "completed": sum(r.status == "COMPLETED" for r in records),
        "best": None if best is None else dataclasses.asdict(best),
        "report_dir": str(out),
    }


__all__ = [
    "TrialRecord",
    "best_trial",
    "format_trials",
    "mark_pareto",
    "plot_pareto",
    "read_trials",
    "trial_metric",
    "write_csv",
    "write_report",
]
