#!/usr/bin/env python
"""Soak test of crash-safe training: run a small `keras-resnet train` to completion
while SIGKILLing it, then check the run folder.

Kill moments are drawn from `--seed` before each session and land on events the training
process itself observes, so that a seed replays the same kills: the n-th change the process
makes to its run folder (a file opened for writing, temporary files of a save included, a
rename, a removal, a hard link), or the start of batch b of epoch e. The process SIGKILLs
itself there (after one `SOAK-KILL` line on stderr). After each round (a run driven to
completion) it checks: every epoch is in history.csv exactly once and none was trained again
after it was committed, the epoch count, that model.keras, checkpoints/best.keras,
metrics.json, config.json and history.csv load, that best.keras scores the best validation
accuracy of history.csv, and that the same command on the finished run prints one line and
changes no file. Prints one JSON line of figures last (see docs/RELIABILITY.md).

Modes:
    --full-disk: the run folder on a small tmpfs (root only) with a filler file leaving a
        seeded amount of room; the run must stop with one error line (exit 2, no traceback, no
        crash); then room is made and the same command must finish, every epoch once.
    --corrupt: between kills, a seeded backup file is truncated or zeroed; the run must resume
        from the `.bkp` or stop with the one-line message (then `--restart` starts it over), and
        never train a committed epoch again or leave an invalid file.
    --cache: `train --dataset FOLDER --cache DIR` (a folder of generated images) killed during
        the cache's build: at the n-th change the process makes to the cache folder, or when a
        forked decoding worker opens its n-th image (the worker SIGKILLs the training process).
        After each kill no decoding worker may be left running; the session that finishes must
        open (or build) a whole cache: verified against its record, built from this folder,
        no temporary file left, every image trained or validated.
    --share: two `train` commands started at once on one fresh `--cache` folder, of the same
        data (both must finish, one build between them) or of other data (another folder of
        the same layout, or another `--val-size`: one finishes, the other stops with one
        `argument --cache` error line); the finished runs trained on their own data only.

    python tests/soak_kills.py --kills 30 --epochs 3 --seed 1   # the long form
    python tests/soak_kills.py --kills 2 --epochs 2             # CI's short form
    python tests/soak_kills.py --cache --kills 6 --seed 4       # kills during cache builds
    python tests/soak_kills.py --share --kills 4 --seed 5       # rounds of two runs, one cache
"""

from __future__ import annotations

import argparse
import collections
import csv
import itertools
import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from idx_files import write_idx  # tests/ is this file's folder (and pytest's import path)

EPOCH_LINE = re.compile(r"^Epoch (\d+)/(\d+)")
KILL_LINE = re.compile(r"^SOAK-KILL (.*)$")
# Changes a session makes to its run folder: about this many per epoch and at start and end
# (counted on the default run: 16 per epoch with a new best, 12 without; 9 at start, 13 at
# the end).
EVENTS_PER_EPOCH, EVENTS_AROUND, EVENTS_AT_START = 16, 22, 9

# The training process: SOAK_KILL (JSON) arms a kill at a run-folder (or cache-folder) event,
# a batch, or a decoding worker's n-th image. Events count in the training process only (its
# forked decoding workers inherit the hook: the "decode" rule counts in them).
CHILD = r"""
import atexit, json, os, signal, sys
plan = json.loads(os.environ.get("SOAK_KILL") or "null")
MAIN = os.getpid()

def die(moment):
    sys.stderr.write("SOAK-KILL " + moment + "\n")
    sys.stderr.flush()
    os.kill(MAIN, signal.SIGKILL)

def inside(path, root):
    return isinstance(path, (str, bytes, os.PathLike)) and os.fsdecode(path).startswith(root)

if plan and plan["rule"] == "event":
    root, left = plan["root"], [plan["n"]]
    WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT

    def hook(event, args):
        if os.getpid() != MAIN:
            return
        if event == "open":
            path, mode, flags = args
            if isinstance(mode, str):
                writes = bool(set(mode) & set("wax+"))
            else:
                writes = isinstance(flags, int) and bool(flags & WRITE)
            if not (writes and inside(path, root)):
                return
        elif event in ("os.rename", "os.link"):
            path = args[1] if inside(args[1], root) else args[0]
            if not inside(path, root):
                return
        elif event in ("os.remove", "shutil.rmtree"):
            path = args[0]
            if not inside(path, root):
                return
        else:
            return
        left[0] -= 1
        if left[0] == 0:
            die(event + " " + os.path.relpath(os.fsdecode(path), root))

    sys.addaudithook(hook)
    atexit.register(lambda: sys.stderr.write(f"SOAK-EVENTS {plan['n'] - left[0]}\n"))

if plan and plan["rule"] == "decode":
    root, left = plan["root"], [plan["n"]]

    def hook(event, args):
        if event == "open" and os.getpid() != MAIN and inside(args[0], root):
            left[0] -= 1
            if left[0] == 0:
                die(f"image {plan['n']} of a decoding worker")

    sys.addaudithook(hook)

if plan and plan["rule"] == "batch":
    import keras

    class Kill(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_begin(self, batch, logs=None):
            if [self.epoch, batch] == [plan["epoch"], plan["batch"]]:
                die(f"batch {batch} of epoch {self.epoch}")

    fit = keras.Model.fit

    def fit_with_kill(self, *args, callbacks=None, **kwargs):
        return fit(self, *args, callbacks=[*(callbacks or []), Kill()], **kwargs)

    keras.Model.fit = fit_with_kill

from keras_resnet.cli import run
sys.exit(run("train"))
"""


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


VAL_SIZE, BATCH = 100, 32


def train_command(args, data: Path, out: Path, *extra: str) -> list[str]:
    return [
        *(sys.executable, "-c", CHILD),
        *("--source-dir", str(data), "--loader", "idx", "--width", str(args.width)),
        *("--epochs", str(args.epochs), "--batch-size", str(BATCH), "--val-size", str(VAL_SIZE)),
        *("--no-augment", "--learning-rate", "0.05", "--warmup-epochs", "0"),
        *("--no-tensorboard", "--verbose", "2", "--output-dir", str(out), *extra),
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


def committed_epoch(out: Path, damaged: dict | None = None) -> int | None:
    """The epochs the run's backup has committed, as the resume reads them: its metadata, else
    its `.bkp`, each only with its weights and best model undamaged. 0: no backup; None: a
    backup with no usable candidate (the run must stop with the one-line error)."""
    damaged = {name for name, stat in (damaged or {}).items() if file_stat(out / name) == stat}
    candidates = 0
    for name in ("training_metadata.json", "training_metadata.json.bkp"):
        path = out / "backup" / name
        if not path.exists():
            continue
        candidates += 1
        try:
            values = json.loads(path.read_text())
            files = {f"backup/{values['weights']}", f"backup/{values.get('best')}"}
            if f"backup/{name}" not in damaged and not files & damaged:
                return int(values["epoch"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return None if candidates else 0


def file_stat(path: Path) -> tuple | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns)


def run_finished(out: Path, epochs: int) -> bool:
    """Whether the run wrote its last file (metrics.json) and retired its backup: the same
    command then reports the finished run and changes nothing."""
    try:
        metrics = json.loads((out / "metrics.json").read_text())
    except (OSError, ValueError):
        return False
    return metrics.get("epochs") == epochs and not (out / "backup").exists()


def redone(committed: int, recorded: list[int], begun: list[int]) -> list[int]:
    """Epochs a session trained although they were committed (backup metadata) or recorded
    (history.csv) when it started: the promise "an epoch that history.csv records is never
    trained again". An epoch begun and killed before its commit is trained again legitimately."""
    return [e for e in begun if e < committed or e in recorded]


class Session:
    """One process of the training command, run to its end (`wait=False`: started only, see
    `finish`); `lines` holds what it printed."""

    def __init__(self, command: list[str], env: dict, plan: dict | None = None, wait=True):
        env = {**env, "SOAK_KILL": json.dumps(plan)}
        self.command = command
        self.process = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.code = None
        if wait:
            self.finish()

    def finish(self) -> Session:
        self.code = self.process.wait()
        self.reader.join(timeout=10)
        return self

    def _read(self):
        for line in self.process.stdout:
            self.lines.append(line)

    def epochs_begun(self) -> list[int]:
        return [int(m.group(1)) - 1 for line in self.lines if (m := EPOCH_LINE.match(line))]

    def kill_moment(self) -> str | None:
        moments = [m.group(1) for line in self.lines if (m := KILL_LINE.match(line))]
        return moments[-1] if moments else None

    def errors(self) -> list[str]:
        """The command's error lines ('keras-resnet train: error: ...'), not library logs."""
        return [line.strip() for line in self.lines if ": error: " in line]


def moment_name(moment: str) -> str:
    """A kill moment without epoch numbers and the random part of temporary names:
    'os.rename backup/.epoch-2.weights.h5.k2j3_x9a.weights.h5' -> 'os.rename
    backup/temporary epoch-N.weights.h5'."""
    if moment.startswith("batch"):
        return "batch start in an epoch"
    event, _, path = moment.partition(" ")
    folder, base = os.path.split(path)
    temporary = re.match(r"^\.(.+?)\.[A-Za-z0-9_]{8}(\.[a-z0-9.]+)?$", base)
    base = f"temporary {temporary.group(1)}" if temporary else base
    name = re.sub(r"epoch(-?)[0-9]+", r"epoch\1N", os.path.join(folder, base))
    return f"{event} {name}"


def draw_plan(rng: random.Random, args, out: Path, committed: int) -> dict:
    """The next session's kill, from the seeded generator only: a batch start (1 in 4), an
    event among the epochs' saves (2 in 5), or any event of the session, start-up and final
    files included, or none (the session then finishes)."""
    left = max(args.epochs - committed, 0)
    draw = rng.random()
    if left and draw < 0.25:
        steps = math.ceil((args.train_size - VAL_SIZE) / BATCH)
        epoch, batch = rng.randrange(committed, args.epochs), rng.randrange(steps)
        return {"rule": "batch", "epoch": epoch, "batch": batch}
    if left and draw < 0.65:
        n = EVENTS_AT_START + rng.randint(1, EVENTS_PER_EPOCH * left)
    else:
        n = rng.randint(1, (EVENTS_AROUND + EVENTS_PER_EPOCH * left) * 3 // 2)
    return {"rule": "event", "n": n, "root": os.fspath(out)}


def damage(rng: random.Random, out: Path) -> tuple[str, tuple] | None:
    """Truncates or zeroes one backup file drawn from the seeded generator; returns its name
    (relative to the run folder) and its state after the damage."""
    files = sorted(
        p for p in (out / "backup").glob("*") if p.is_file() and not p.name.startswith(".")
    )
    if not files:
        return None
    path = rng.choice(files)
    size = path.stat().st_size
    if rng.random() < 0.5:
        kind = "truncated"
        with open(path, "r+b") as f:
            f.truncate(rng.randrange(size) if size else 0)
    else:
        kind = "zeroed"
        path.write_bytes(b"\0" * size)
    name = os.fspath(path.relative_to(out))
    return f"{kind} {name}", file_stat(path)


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
    _, (x_val, y_val) = training.split_validation(
        dataset.x_train, dataset.y_train, config.val_size, seed=config.seed
    )
    try:
        model = keras.saving.load_model(out / "checkpoints" / "best.keras")
    except Exception:  # reported above
        return problems
    predicted = model.predict(x_val.astype("float32"), verbose=0).argmax(-1)
    accuracy = float(np.mean(predicted == y_val))
    rows = list(csv.DictReader(open(out / "history.csv")))
    best_in_history = max(float(r["val_accuracy"]) for r in rows)
    if abs(accuracy - best_in_history) > 1e-6 or abs(best.get("value", -1) - accuracy) > 1e-6:
        problems.append(
            f"best.keras scores {accuracy}, history's best {best_in_history}, "
            f"metrics.json {best.get('value')}"
        )
    return problems


def check_finished_rerun(args, env: dict, data: Path, out: Path) -> list[str]:
    """The same command on the finished run: exit 0, one 'already finished' line, no file
    changed."""
    before = snapshot(out)
    session = Session(train_command(args, data, out), env)
    said = [line for line in session.lines if "already finished" in line]
    problems = []
    if session.code != 0 or len(said) != 1 or session.epochs_begun():
        problems.append(f"rerun of the finished run: exit {session.code}, {said}")
    if snapshot(out) != before:
        problems.append("rerun of the finished run changed files")
    return problems


def one_line_stop(session: Session) -> list[str]:
    """What is wrong with a session that had to stop with one error line (exit 2)."""
    text = "".join(session.lines)
    if session.code == 2 and len(session.errors()) == 1 and "Traceback" not in text:
        return []
    return [f"exit {session.code} with {len(session.errors())} error lines: {text[-1500:]}"]


def soak(args, env: dict, work: Path, data: Path) -> dict:
    """Kills (and with --corrupt, damages) until `args.kills`, finishing a run folder each
    time one completes. Each session is logged (stderr, one JSON line)."""
    rng = random.Random(args.seed)
    figures = collections.Counter()
    moments: collections.Counter = collections.Counter()
    damages: collections.Counter = collections.Counter()
    invalid: list[str] = []
    sequence: list[str] = []
    rounds = 0
    while figures["kills"] < args.kills:
        rounds += 1
        out = work / f"run{rounds}"
        seen: dict[int, str] = {}
        damaged: dict[str, tuple] = {}
        restart = False
        for number in itertools.count(1):
            committed = committed_epoch(out, damaged)
            if committed is None and not restart:
                # No readable candidate: the one-line error, nothing changed; then --restart.
                before = snapshot(out)
                stopped = Session(train_command(args, data, out), env)
                problems = one_line_stop(stopped)
                problems += [] if snapshot(out) == before else ["the refused resume changed files"]
                invalid += [f"run{rounds}: {p}" for p in problems]
                figures["one_line_stops"] += 1
                restart, seen, damaged = True, {}, {}
                continue
            committed = 0 if restart else committed
            recorded = {e: r for e, r in recorded_epochs(out).items() if e < committed}
            changed = [e for e in seen if e in recorded and recorded[e] != seen[e]]
            figures["history_rows_changed"] += len(changed)
            seen = {**{e: r for e, r in seen.items() if e < committed}, **recorded}
            plan = None
            if figures["kills"] < args.kills:
                plan = draw_plan(rng, args, out, committed)
            extra = ("--restart",) if restart else ()
            session = Session(train_command(args, data, out, *extra), env, plan)
            restart = False
            moment = session.kill_moment()
            again = redone(committed, sorted(recorded), session.epochs_begun())
            record = {
                "round": rounds,
                "session": number,
                "plan": plan,
                "committed_at_start": committed,
                "history_at_start": sorted(recorded),
                "rows_changed_before": changed,
                "begun": session.epochs_begun(),
                "ended": moment or f"exit {session.code}",
                "redone": again,
            }
            figures["epochs_redone"] += len(again)
            if moment is None:
                print(json.dumps(record), file=sys.stderr, flush=True)
                if session.code == 0:
                    break
                # Not expected: a finding; the round goes on from scratch.
                invalid.append(
                    f"run{rounds}: exit {session.code}: {''.join(session.lines)[-1500:]}"
                )
                restart, seen, damaged = True, {}, {}
                continue
            figures["kills"] += 1
            moments[moment_name(moment)] += 1
            sequence.append(moment_name(moment))
            if args.corrupt and (hurt := damage(rng, out)) is not None:
                name, stat = hurt
                damaged[name.split(" ", 1)[1]] = stat
                record["damaged"] = name
                damages[moment_name(name)] += 1
            print(json.dumps(record), file=sys.stderr, flush=True)
        problems = check_folder(out, args.epochs, data) + check_finished_rerun(args, env, data, out)
        invalid += [f"run{rounds}: {p}" for p in problems]
        print(f"round {rounds} complete: {problems or 'all files valid'}", file=sys.stderr)
    return {
        "mode": "corrupt" if args.corrupt else "kills",
        "kills": figures["kills"],
        "rounds": rounds,
        "moments": dict(moments),
        "sequence": sequence,
        "epochs_redone": figures["epochs_redone"],
        "history_rows_changed": figures["history_rows_changed"],
        "damages": dict(damages),
        "one_line_stops": figures["one_line_stops"],
        "files_invalid": len(invalid),
        "problems": invalid,
    }


def full_disk(args, env: dict, work: Path, data: Path) -> dict:
    """`args.kills` rounds on a tmpfs whose room a filler file limits to a seeded amount: the
    run stops with one error line (or finishes, given room enough); the filler is removed and
    the same command must finish, no committed epoch trained again, every file valid."""
    rng = random.Random(args.seed)
    mount = work / "small"
    mount.mkdir()
    size = f"{args.disk_mib}m"
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if result.returncode:
        return {"mode": "full-disk", "skipped": f"mount -t tmpfs: {result.stderr.strip()}"}
    figures = collections.Counter()
    invalid, stops = [], []
    try:
        for round_ in range(1, args.kills + 1):
            out = mount / f"run{round_}"
            room = rng.uniform(0.0, args.room_mib) * 2**20
            filler = mount / "filler"
            free = shutil.disk_usage(mount).free
            with open(filler, "wb") as f:
                f.truncate(0)
                f.write(b"\0" * max(int(free - room), 0))
            full = Session(train_command(args, data, out), env)
            filler.unlink()  # room is made
            if full.code == 0:
                figures["finished_without_stop"] += 1
            else:
                figures["stops"] += 1
                problems = one_line_stop(full)
                invalid += [f"run{round_}: {p}" for p in problems]
                committed = committed_epoch(out) or 0
                stops.append(
                    {
                        "room_mib": round(room / 2**20, 2),
                        "epochs_committed": committed,
                        "exit": full.code,
                        "error": full.errors(),
                    }
                )
                recorded = sorted(e for e in recorded_epochs(out) if e < committed)
                resumed = Session(train_command(args, data, out), env)
                again = redone(committed, recorded, resumed.epochs_begun())
                figures["epochs_redone"] += len(again)
                if resumed.code != 0:
                    invalid.append(f"run{round_}: resume exit {resumed.code}")
                    continue
            problems = check_folder(out, args.epochs, data)
            invalid += [f"run{round_}: {p}" for p in problems]
            print(f"round {round_}: {stops[-1] if full.code else 'finished'}", file=sys.stderr)
            shutil.rmtree(out)
    finally:
        subprocess.run(["umount", "-l", str(mount)])
    return {
        "mode": "full-disk",
        "tmpfs": size,
        "rounds": args.kills,
        "stops": figures["stops"],
        "finished_without_stop": figures["finished_without_stop"],
        "stop_details": stops,
        "epochs_redone": figures["epochs_redone"],
        "files_invalid": len(invalid),
        "problems": invalid,
    }


# --- the cache: kills during its build, and two runs sharing one --------------------------------

# Image folders of the --cache and --share modes: 4 classes of 80x60 PNGs (a stripe whose column
# tells the class), trained at 72 px (the cache serves images over 64 px).
CACHE_CLASSES, CACHE_PER_CLASS, CACHE_IMAGE_SIZE, CACHE_VAL = 4, 40, 72, 40
# Changes the training process makes to the cache folder during a build (about 20: the lock,
# two splits' files in the hidden build folder, the record, the renames, the removals).
CACHE_EVENTS = 22


def make_images(folder: Path, seed: int) -> Path:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for k in range(CACHE_CLASSES):
        (folder / f"class{k}").mkdir(parents=True, exist_ok=True)
        for i in range(CACHE_PER_CLASS):
            image = rng.integers(0, 60, (60, 80, 3), dtype=np.uint8)
            image[:, 10 + 15 * k : 20 + 15 * k] = 250
            Image.fromarray(image).save(folder / f"class{k}" / f"{i}.png")
    return folder


def cache_command(args, data: Path, out: Path, cache: Path, val_size: int = CACHE_VAL) -> list:
    return [
        *(sys.executable, "-c", CHILD, "--dataset", str(data), "--cache", str(cache)),
        *("--image-size", str(CACHE_IMAGE_SIZE), "--val-size", str(val_size)),
        *("--width", str(args.width), "--epochs", str(args.epochs), "--batch-size", "20"),
        *("--learning-rate", "0.05", "--warmup-epochs", "0", "--no-tensorboard"),
        *("--verbose", "2", "--output-dir", str(out)),
    ]


def processes_mentioning(marker: str) -> list[int]:
    """Running processes (zombies left out) whose command line holds `marker`."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            command = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if marker.encode() in command and state != "Z":
            found.append(int(entry.name))
    return found


def orphans_of(out: Path) -> list[int]:
    """The processes of a killed session still running after 30 s (its decoding workers
    carry its command line): they are killed, and returned."""
    deadline = time.monotonic() + 30
    while (left := processes_mentioning(os.fspath(out))) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return left


def hidden_entries(cache: Path) -> list[str]:
    if not cache.is_dir():
        return []
    return sorted(p.name for p in cache.iterdir() if p.name.startswith(".") and p.name != ".lock")


def check_cache(cache: Path, data: Path, out: Path | None) -> list[str]:
    """What is wrong with a cache that a finished run used (empty: nothing): its files
    against its record, the folder it was built from, temporary files, and the run's counts."""
    from keras_resnet.data import cache as cache_lib

    problems = []
    if hidden_entries(cache):
        problems.append(f"temporary files left: {hidden_entries(cache)}")
    try:
        cache_lib.verify_cache(cache)
        info = cache_lib.cache_info(cache)
    except ValueError as error:
        return problems + [f"cache: {error}"]
    if info["root"] != os.path.realpath(data):
        problems.append(f"cache built from {info['root']}, the run's data is {data}")
    if out is not None:
        try:
            metrics = json.loads((out / "metrics.json").read_text())
        except (OSError, ValueError) as error:
            return problems + [f"metrics.json: {error}"]
        counts = {split: info["splits"][split]["count"] for split in ("train", "val")}
        trained = {"train": metrics.get("train_images"), "val": metrics.get("val_images")}
        if counts != trained or metrics.get("cache") != os.fspath(cache):
            problems.append(
                f"the run trained {trained} from {metrics.get('cache')}, the cache holds {counts}"
            )
    return problems


def draw_cache_plan(rng: random.Random, data: Path, cache: Path) -> dict | None:
    """A kill inside a decoding worker (its n-th image; a worker decodes about half the
    images with two), at the n-th change to the cache folder, or none (1 in 5)."""
    draw = rng.random()
    if draw < 0.4:
        per_worker = CACHE_CLASSES * CACHE_PER_CLASS // 2
        return {"rule": "decode", "n": rng.randint(1, per_worker), "root": os.fspath(data)}
    if draw < 0.8:
        return {"rule": "event", "n": rng.randint(1, CACHE_EVENTS), "root": os.fspath(cache)}
    return None


def cache_moment(moment: str) -> str:
    """A kill moment without the pid and random parts of the build folder's name."""
    moment = re.sub(r"\.build-\d+-[0-9a-f]+", ".build-PID", moment)
    if moment.startswith("image "):
        return "image k of a decoding worker"
    return moment_name(moment)


def cache_soak(args, env: dict, work: Path, data: Path) -> dict:
    """Kills during cache builds until `args.kills`; each round (a fresh cache and run folder)
    goes on until a session finishes, which must have opened or built a whole cache."""
    rng = random.Random(args.seed)
    figures = collections.Counter()
    moments: collections.Counter = collections.Counter()
    invalid: list[str] = []
    rounds = 0
    while figures["kills"] < args.kills:
        rounds += 1
        cache, out = work / f"cache{rounds}", work / f"run{rounds}"
        for number in itertools.count(1):
            plan = draw_cache_plan(rng, data, cache) if figures["kills"] < args.kills else None
            had_record = (cache / "cache.json").exists()
            session = Session(cache_command(args, data, out, cache), env, plan)
            moment = session.kill_moment()
            decoded = any("cache: decoding" in line for line in session.lines)
            record = {
                "round": rounds,
                "session": number,
                "plan": plan,
                "record_at_start": had_record,
                "decoded": decoded,
                "ended": moment or f"exit {session.code}",
            }
            if moment is not None:
                figures["kills"] += 1
                moments[cache_moment(moment)] += 1
                orphans = orphans_of(out)
                record["orphans"] = orphans
                figures["orphans"] += len(orphans)
                if orphans:
                    invalid.append(f"round {rounds}: workers outlived the kill: {orphans}")
                if (cache / "cache.json").exists():  # killed after the record: a whole cache
                    record["record_after_kill"] = True
                    invalid += [f"round {rounds}: {p}" for p in check_cache(cache, data, None)]
                print(json.dumps(record), file=sys.stderr, flush=True)
                continue
            print(json.dumps(record), file=sys.stderr, flush=True)
            if session.code != 0:
                invalid.append(
                    f"round {rounds}: exit {session.code}: {''.join(session.lines)[-1500:]}"
                )
                break
            figures["rebuilt" if decoded else "reused"] += 1
            if decoded == had_record:
                invalid.append(f"round {rounds}: decoded={decoded} with a record={had_record}")
            problems = check_cache(cache, data, out)
            invalid += [f"round {rounds}: {p}" for p in problems]
            print(f"round {rounds} complete: {problems or 'cache whole'}", file=sys.stderr)
            break
    return {
        "mode": "cache",
        "kills": figures["kills"],
        "rounds": rounds,
        "moments": dict(moments),
        "finished_building": figures["rebuilt"],
        "finished_reusing": figures["reused"],
        "orphan_workers": figures["orphans"],
        "files_invalid": len(invalid),
        "problems": invalid,
    }


def share_soak(args, env: dict, work: Path, data: Path) -> dict:
    """`args.kills` rounds of two runs started at once on one fresh cache: of the same data,
    of another folder of the same layout, or of the same folder with another --val-size."""
    rng = random.Random(args.seed)
    other = make_images(work / "other", seed=1)
    figures = collections.Counter()
    invalid: list[str] = []
    rounds = []
    for number in range(1, args.kills + 1):
        kind = rng.choice(["same data", "another folder", "another --val-size"])
        cache = work / f"share{number}" / "cache"
        runs = [
            (data, CACHE_VAL, work / f"share{number}" / "a"),
            (
                other if kind == "another folder" else data,
                CACHE_VAL + 20 if kind == "another --val-size" else CACHE_VAL,
                work / f"share{number}" / "b",
            ),
        ]
        sessions = [
            Session(cache_command(args, folder, out, cache, val), env, wait=False)
            for folder, val, out in runs
        ]
        for session in sessions:
            session.finish()
        codes = [session.code for session in sessions]
        builds = sum(any("cache: decoding" in line for line in s.lines) for s in sessions)
        waited = sum(any("cache: waiting" in line for line in s.lines) for s in sessions)
        problems = []
        if builds != 1:
            problems.append(f"{builds} builds")
        if kind == "same data":
            if codes != [0, 0]:
                problems.append(f"exits {codes}")
        elif sorted(codes) != [0, 2]:
            problems.append(f"exits {codes}")
        else:
            refused = sessions[codes.index(2)]
            errors = refused.errors()
            if not (
                len(errors) == 1
                and "argument --cache: cache" in errors[0]
                and "was built for other data" in errors[0]
                and "Traceback" not in "".join(refused.lines)
            ):
                problems.append(f"the refusal: {''.join(refused.lines)[-1500:]}")
        for (folder, _, out), session in zip(runs, sessions, strict=True):
            if session.code == 0:
                problems += check_cache(cache, folder, out)
        figures["refusals"] += codes.count(2)
        figures["waits"] += waited
        result = {
            "round": number,
            "kind": kind,
            "exits": codes,
            "builds": builds,
            "waited": waited,
            "problems": problems,
        }
        rounds.append(result)
        invalid += [f"round {number}: {p}" for p in problems]
        print(json.dumps(result), file=sys.stderr, flush=True)
    return {
        "mode": "share",
        "rounds": len(rounds),
        "kinds": dict(collections.Counter(r["kind"] for r in rounds)),
        "refusals": figures["refusals"],
        "waits": figures["waits"],
        "files_invalid": len(invalid),
        "problems": invalid,
        "details": rounds,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=30, help="kills (--full-disk: rounds)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--width", type=float, default=0.125)
    parser.add_argument("--train-size", type=int, default=600)
    parser.add_argument("--image-size", type=int, default=28)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--full-disk", action="store_true", help="the run folder on a small tmpfs")
    mode.add_argument("--corrupt", action="store_true", help="damage a backup file after kills")
    mode.add_argument("--cache", action="store_true", help="kills during a --cache build")
    mode.add_argument("--share", action="store_true", help="two runs on one --cache at once")
    parser.add_argument("--disk-mib", type=int, default=32, help="--full-disk: the tmpfs size")
    parser.add_argument(
        "--room-mib", type=float, default=12.0, help="--full-disk: most room the filler leaves"
    )
    parser.add_argument("--seed", type=int, default=0, help="draws every kill and damage")
    parser.add_argument("--workdir", help="default: a temporary folder, removed at the end")
    args = parser.parse_args()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}
    work = Path(args.workdir or tempfile.mkdtemp(prefix="soak-")).resolve()
    started = time.monotonic()
    if args.cache or args.share:
        data = make_images(work / "images", seed=0)
        report = (cache_soak if args.cache else share_soak)(args, env, work, data)
    else:
        data = make_data(work / "data", args.train_size, 200, args.image_size)
        report = (full_disk if args.full_disk else soak)(args, env, work, data)
    report.update(
        seconds=round(time.monotonic() - started),
        backend=os.environ.get("KERAS_BACKEND", "tensorflow"),
        command=" ".join(sys.argv),
    )
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(report))
    bad = ("files_invalid", "epochs_redone", "history_rows_changed", "orphan_workers")
    return 1 if any(report.get(key, 0) for key in bad) else 0


if __name__ == "__main__":
    sys.exit(main())
