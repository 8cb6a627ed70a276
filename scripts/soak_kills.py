#!/usr/bin/env python
"""Soak test of crash-safe training (issue 14): run a small `keras-resnet train` to completion
while SIGKILLing it at random moments, then check the run folder.

Kill moments: a random time after the start, a random time after an "Epoch k/E" line, and the
moment a file of the run folder appears or changes (temporary files of a save included, so that
kills land inside the save windows). After each round (a run driven to completion) it checks:
every epoch is in history.csv exactly once and none was trained again after history.csv
recorded it, the epoch count, that model.keras, checkpoints/best.keras, metrics.json,
config.json and history.csv load, and that best.keras scores the best validation accuracy of
history.csv. Prints one JSON line of figures last (see docs/RELIABILITY.md).

Variants: `--variant full-disk` runs into a small tmpfs (root only) and checks the one-line
error, then resumes on a roomy disk; `--variant corrupt` empties or zeroes backup files after a
kill and checks the fallback to `.bkp` or the one-line error.

    python scripts/soak_kills.py --kills 30            # the long form
    python scripts/soak_kills.py --kills 3 --epochs 3  # CI's short form
"""

from __future__ import annotations

import argparse
import collections
import csv
import gzip
import itertools
import json
import os
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

TRAIN = "import sys; from keras_resnet.cli import run; sys.exit(run('train'))"
EPOCH_LINE = re.compile(r"^Epoch (\d+)/(\d+)")


def write_idx(path: Path, array) -> None:
    header = b"\x00\x00\x08" + bytes([array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(gzip.compress(header + array.astype("uint8").tobytes(), compresslevel=1))


def make_data(folder: Path, n_train: int, n_test: int, size: int) -> Path:
    """IDX files of `size`-px images; class k is a bright stripe at column k * size / 14 + 2."""
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        rng.shuffle(labels)
        images = rng.integers(0, 60, size=(n, size, size), dtype=np.uint8)
        for i, k in enumerate(labels):
            column = k * size // 14 + 2
            images[i, 2 : size - 2, column : column + 2] = 250
        write_idx(folder / f"{split}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{split}-labels-idx1-ubyte.gz", labels.astype(np.uint8))
    return folder


def train_command(args, data: Path, out: Path) -> list[str]:
    return [
        *(sys.executable, "-c", TRAIN),
        *("--source-dir", str(data), "--loader", "idx", "--width", str(args.width)),
        *("--epochs", str(args.epochs), "--batch-size", "32", "--val-size", "100"),
        *("--no-augment", "--learning-rate", "0.05", "--warmup-epochs", "0"),
        *("--no-tensorboard", "--verbose", "2", "--output-dir", str(out)),
    ]


def snapshot(out: Path) -> dict[str, tuple]:
    """Every file of the run folder with its size and mtime (temporary files included)."""
    files = {}
    for root, _, names in os.walk(out):
        for name in names:
            path = os.path.join(root, name)
            try:
                stat = os.stat(path)
            except OSError:
                continue
            files[os.path.relpath(path, out)] = (stat.st_size, stat.st_mtime_ns)
    return files


def recorded_epochs(out: Path) -> dict[int, str]:
    """history.csv's epochs, each with its row's text (a retrained epoch's row changes)."""
    try:
        with open(out / "history.csv") as f:
            rows = list(csv.DictReader(f))
    except (OSError, csv.Error):
        return {}
    return {int(r["epoch"]): json.dumps(r, sort_keys=True) for r in rows if r.get("epoch")}


def committed_epoch(out: Path) -> int:
    """The epochs the run's backup has committed (its metadata, else its `.bkp`; 0: none)."""
    for name in ("training_metadata.json", "training_metadata.json.bkp"):
        try:
            return int(json.loads((out / "backup" / name).read_text())["epoch"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return 0


def run_finished(out: Path, epochs: int) -> bool:
    """Whether the run wrote its last file (metrics.json) and retired its backup: a kill after
    that interrupts nothing, and the same command would start a new run."""
    try:
        metrics = json.loads((out / "metrics.json").read_text())
    except (OSError, ValueError):
        return False
    return metrics.get("epochs") == epochs and not (out / "backup").exists()


def redone(committed: int, recorded: list[int], begun: list[int]) -> list[int]:
    """Epochs a session trained although they were committed (backup metadata) or recorded
    (history.csv) when it started: issue 14's "an epoch that history.csv records is never
    trained again". An epoch begun and killed before its commit is trained again legitimately."""
    return [e for e in begun if e < committed or e in recorded]


class Session:
    """One process of the training command; `lines` fills as it prints."""

    def __init__(self, command: list[str], env: dict):
        self.process = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.process.stdout:
            self.lines.append(line)

    def epochs_begun(self) -> list[int]:
        return [int(m.group(1)) - 1 for line in self.lines if (m := EPOCH_LINE.match(line))]

    def finish(self) -> int:
        code = self.process.wait()
        self.reader.join(timeout=10)
        return code


def file_moment(name: str) -> str:
    """A changed file's name without the random part of a temporary name or epoch numbers:
    '.best.keras.k2j3_x9a.keras' -> 'temporary best.keras'."""
    folder, base = os.path.split(name)
    temporary = re.match(r"^\.(.+?)\.[A-Za-z0-9_]{8}(\.[a-z0-9.]+)?$", base)
    base = f"temporary {temporary.group(1)}" if temporary else base
    return re.sub(r"epoch(-?)[0-9]+", r"epoch\1N", os.path.join(folder, base))


def kill_once(session: Session, out: Path, rng: random.Random, budget: float) -> str | None:
    """Kills `session` at a moment drawn by one of three rules; returns the moment's name, or
    None when the process ended first."""
    rule = rng.choice(("time", "line", "file", "file"))
    start, before = time.monotonic(), snapshot(out)
    delay = rng.uniform(0, budget)
    target_line = rng.randint(1, 4)
    skip = rng.randint(0, 14)  # file changes to let pass: kills spread over every save
    moment = None
    while session.process.poll() is None:
        now = time.monotonic() - start
        if rule == "time" and now >= delay:
            moment = "time"
        elif rule == "line" and len(session.epochs_begun()) >= target_line:
            time.sleep(rng.uniform(0, 0.5))
            moment = "after an epoch line"
        elif rule == "file":
            after = snapshot(out)
            changed = sorted(k for k in after if before.get(k) != after[k])
            skip -= len(changed)
            if changed and skip < 0:
                moment = "file: " + file_moment(changed[0])
            before = after
        if moment:
            session.process.send_signal(signal.SIGKILL)
            session.finish()
            return moment
        time.sleep(0.002 if rule == "file" else 0.01)
    return None


def check_folder(out: Path, epochs: int, data: Path) -> list[str]:
    """What is wrong with a finished run folder (empty: nothing)."""
    import keras
    import numpy as np

    from keras_resnet import data as data_lib
    from keras_resnet import training

    problems = []
    history = recorded_epochs(out)
    if sorted(history) != list(range(epochs)):
        problems.append(f"history.csv epochs {sorted(history)}")
    try:
        metrics = json.loads((out / "metrics.json").read_text())
        config = training.TrainConfig.from_dict(json.loads((out / "config.json").read_text()))
        if metrics["epochs"] != epochs:
            problems.append(f"metrics.json epochs {metrics['epochs']}")
    except (OSError, ValueError, KeyError) as error:
        return problems + [f"metrics.json/config.json: {error}"]
    for name in ("model.keras", "checkpoints/best.keras"):
        try:
            keras.saving.load_model(out / name)
        except Exception as error:  # any failure to load is the finding
            problems.append(f"{name}: {error}")
    if (out / "backup").exists():
        problems.append("backup/ left behind")
    best = metrics.get("best_checkpoint") or {}
    dataset = data_lib.load_dataset(config.dataset, source_dir=data, loader="idx")
    dataset = training.load_data(config, dataset)
    x_val, y_val = training.fit_data(config, dataset).validation
    model = keras.saving.load_model(out / "checkpoints" / "best.keras")
    predicted = model.predict(x_val.astype("float32"), verbose=0).argmax(-1)
    accuracy = float(np.mean(predicted == y_val.argmax(-1)))
    rows = list(csv.DictReader(open(out / "history.csv")))
    best_in_history = max(float(r["val_accuracy"]) for r in rows)
    if abs(accuracy - best_in_history) > 1e-6 or abs(best.get("value", -1) - accuracy) > 1e-6:
        problems.append(
            f"best.keras scores {accuracy}, history's best {best_in_history}, "
            f"metrics.json {best.get('value')}"
        )
    return problems


def soak(args, env: dict, work: Path, data: Path) -> dict:
    """Kills until `args.kills`, finishing a run folder each time one completes. Each session
    is logged (stderr, one JSON line): the epoch committed and history.csv's epochs when it
    started, the epochs it began ("Epoch k/E" lines), how it ended, and what it redid."""
    rng = random.Random(args.seed)
    figures = collections.Counter()
    moments: collections.Counter = collections.Counter()
    invalid: list[str] = []
    redo_log: list[dict] = []
    rounds = 0
    while figures["kills"] < args.kills:
        rounds += 1
        out = work / f"run{rounds}"
        command = train_command(args, data, out)
        seen: dict[int, str] = {}
        for number in itertools.count(1):
            recorded = recorded_epochs(out)
            changed = [e for e in seen if e in recorded and recorded[e] != seen[e]]
            figures["history_rows_changed"] += len(changed)
            seen.update(recorded)
            committed = committed_epoch(out)
            session = Session(command, env)
            if figures["kills"] < args.kills:
                moment = kill_once(session, out, rng, args.budget)
            else:
                moment = None
            code = session.finish()
            begun = session.epochs_begun()
            again = redone(committed, sorted(recorded), begun)
            finished = moment is not None and run_finished(out, args.epochs)
            record = {
                "round": rounds,
                "session": number,
                "committed_at_start": committed,
                "history_at_start": sorted(recorded),
                "rows_changed_before": changed,
                "begun": begun,
                "ended": moment or f"exit {code}",
                "redone": again,
            }
            print(json.dumps(record), file=sys.stderr, flush=True)
            figures["epochs_redone"] += len(again)
            if again or changed:
                redo_log.append(record)
            if moment is not None:
                figures["kills"] += 1
                # Killed after its last file (process teardown): the run is complete; a
                # rerun would be a new run of a finished folder, not a resume.
                moment += " (after the run finished)" if finished else ""
                moments[moment] += 1
                print(f"kill {figures['kills']}: {moment}", file=sys.stderr, flush=True)
                if not finished:
                    continue
            elif code != 0:
                raise SystemExit(f"the run failed (exit {code}):\n{''.join(session.lines)}")
            break
        problems = check_folder(out, args.epochs, data)
        invalid += [f"run{rounds}: {p}" for p in problems]
        print(f"round {rounds} complete: {problems or 'all files valid'}", file=sys.stderr)
    return {
        "variant": "kills",
        "kills": figures["kills"],
        "rounds": rounds,
        "moments": dict(moments),
        "epochs_redone": figures["epochs_redone"],
        "history_rows_changed": figures["history_rows_changed"],
        "redone_sessions": redo_log,
        "files_invalid": len(invalid),
        "problems": invalid,
    }


def full_disk(args, env: dict, work: Path, data: Path) -> dict:
    """The run folder on a tmpfs too small for it: a one-line error and exit != 0; then the
    folder, copied to a roomy disk, resumes and finishes with every file valid."""
    mount = work / "small"
    mount.mkdir()
    size = f"{args.disk_kib}k"
    if subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)]
    ).returncode:
        return {"variant": "full-disk", "skipped": "mount -t tmpfs failed (root needed)"}
    try:
        out = mount / "run"
        result = subprocess.run(
            train_command(args, data, out), env=env, capture_output=True, text=True
        )
        errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
        moved = work / "run-moved"
        shutil.copytree(out, moved)
    finally:
        subprocess.run(["umount", str(mount)])
    epochs_before = sorted(recorded_epochs(moved))
    session = Session(train_command(args, data, moved), env)
    code = session.finish()
    begun = session.epochs_begun()
    problems = check_folder(moved, args.epochs, data) if code == 0 else [f"resume exit {code}"]
    return {
        "variant": "full-disk",
        "tmpfs": size,
        "exit_code": result.returncode,
        "error_lines": errors,
        "traceback": "Traceback" in result.stderr,
        "epochs_recorded_when_full": epochs_before,
        "epochs_redone": len([e for e in begun if e in epochs_before]),
        "files_invalid": len(problems),
        "problems": problems,
    }


def corrupt(args, env: dict, work: Path, data: Path) -> dict:
    """After a kill once two epochs are recorded, damage a backup file: with its `.bkp` the
    run resumes and finishes; without, a one-line error that deletes nothing."""
    results = {}
    for case in ("empty metadata", "zeroed weights", "no bkp, empty metadata"):
        out = work / re.sub(r"\W+", "-", case)
        session = Session(train_command(args, data, out), env)
        while session.process.poll() is None and len(recorded_epochs(out)) < 2:
            time.sleep(0.01)
        session.process.send_signal(signal.SIGKILL)
        session.finish()
        backup = out / "backup"
        metadata = backup / "training_metadata.json"
        if case.startswith("no bkp"):
            Path(f"{metadata}.bkp").unlink()
        if "metadata" in case:
            metadata.write_bytes(b"")
        else:
            weights = backup / json.loads(metadata.read_text())["weights"]
            weights.write_bytes(b"\0" * weights.stat().st_size)
        before = snapshot(out)
        result = subprocess.run(
            train_command(args, data, out), env=env, capture_output=True, text=True
        )
        if case.startswith("no bkp"):
            lines = result.stderr.strip().splitlines()
            results[case] = {
                "exit_code": result.returncode,
                "error": lines[-1] if lines else "",
                "one_line": len(lines) == 1 and "Traceback" not in result.stderr,
                "nothing_changed": snapshot(out) == before,
            }
        else:
            problems = check_folder(out, args.epochs, data) if result.returncode == 0 else []
            results[case] = {"exit_code": result.returncode, "problems": problems}
    return {"variant": "corrupt", **results}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--width", type=float, default=0.125)
    parser.add_argument("--train-size", type=int, default=600)
    parser.add_argument("--image-size", type=int, default=28)
    parser.add_argument("--budget", type=float, default=25.0, help="max seconds to a timed kill")
    parser.add_argument("--variant", choices=("kills", "full-disk", "corrupt"), default="kills")
    parser.add_argument("--disk-kib", type=int, default=2500, help="the full-disk tmpfs size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", help="default: a temporary folder, removed at the end")
    args = parser.parse_args()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}
    work = Path(args.workdir or tempfile.mkdtemp(prefix="soak-"))
    data = make_data(work / "data", args.train_size, 200, args.image_size)
    started = time.monotonic()
    variant = {"kills": soak, "full-disk": full_disk, "corrupt": corrupt}[args.variant]
    report = variant(args, env, work, data)
    report.update(
        seconds=round(time.monotonic() - started),
        backend=os.environ.get("KERAS_BACKEND", "tensorflow"),
        command=" ".join(sys.argv),
    )
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(report))
    bad = ("files_invalid", "epochs_redone", "history_rows_changed")
    return 1 if any(report.get(key, 0) for key in bad) else 0


if __name__ == "__main__":
    sys.exit(main())
