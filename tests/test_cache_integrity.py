"""The preprocessed cache (keras_resnet.data.cache) shared, interrupted, out of room and damaged:
two processes opening one `--cache` folder at once (the second waits for the build, then takes
it or refuses it), a build killed with SIGKILL (no temporary files left after the next open, no
decoding worker left running), a full disk (one line naming the folder and the bytes needed,
never a SIGBUS or a BrokenProcessPool traceback), and damaged files (one line naming the file).
The cache is numpy and Pillow whatever the Keras backend: one backend. Processes are forked in
subprocesses only (a fork inside the test process, after a TensorFlow fit, once hung)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from keras_resnet import data as data_lib
from keras_resnet.data import cache as data_cache

pytestmark = pytest.mark.one_backend("tensorflow")

SIZE = 16  # train images are stored at cache_side(16) = 18 px
# The cache needs no Keras backend: numpy's starts in half TensorFlow's time.
SUBPROCESS_ENV = {**os.environ, "KERAS_BACKEND": "numpy", "TF_CPP_MIN_LOG_LEVEL": "3"}


def image_folder(root: Path, n_train: int = 6, n_val: int = 2, side: int = 24) -> Path:
    """PATH/train and PATH/val, classes 'a' and 'b', RGB PNGs whose pixels tell the class."""
    rng = np.random.default_rng(len(os.fspath(root)))
    for split, count in (("train", n_train), ("val", n_val)):
        for k, name in enumerate(("a", "b")):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = rng.integers(0, 50, (side, side + 6, 3), dtype=np.uint8) + 150 * k
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i}.png")
    return root


def open_source(root: Path, tmp_path: Path):
    return data_lib.open_dataset(root, image_size=SIZE, log_dir=tmp_path / f"log-{root.name}")


def quiet(_message: str) -> None:
    pass


def hidden(folder: Path) -> list[str]:
    """Hidden entries of a cache folder other than its lock file."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") and p.name != ".lock")


def one_line(error: BaseException) -> str:
    message = str(error)
    assert "\n" not in message
    return message


# --- two runs, one folder ------------------------------------------------------------------------


class Opener(threading.Thread):
    """`open_cache` in a thread; its log lines and its outcome are kept."""

    def __init__(self, source, folder: Path):
        super().__init__(daemon=True)
        self.source, self.folder = source, folder
        self.lines: list[str] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            data_cache.open_cache(self.source, self.folder, processes=False, log=self.lines.append)
        except BaseException as error:  # noqa: BLE001 - the test reads it
            self.error = error

    def wait_for(self, text: str) -> None:
        deadline = time.monotonic() + 120
        while not any(text in line for line in self.lines):
            assert self.is_alive() and time.monotonic() < deadline, (self.lines, self.error)
            time.sleep(0.02)


@pytest.fixture
def held_build(tmp_path, monkeypatch):
    """The first opener's build, held inside its decoding until `release` is set."""
    started, release = threading.Event(), threading.Event()
    squash = data_cache.squash

    def held(path, *args, **kwargs):
        started.set()
        assert release.wait(120)
        return squash(path, *args, **kwargs)

    monkeypatch.setattr(data_cache, "squash", held)
    return started, release


def test_a_second_run_waits_for_the_build_then_refuses_other_data(tmp_path, held_build):
    started, release = held_build
    source = open_source(image_folder(tmp_path / "photos"), tmp_path)
    other = open_source(image_folder(tmp_path / "others"), tmp_path)  # same classes and size
    cache = tmp_path / "cache"
    first = Opener(source, cache)
    first.start()
    assert started.wait(120)
    second = Opener(other, cache)
    second.start()
    second.wait_for("cache: waiting for another process using")
    release.set()
    first.join(120)
    second.join(120)
    assert first.error is None and any("cache: built in" in line for line in first.lines)
    assert isinstance(second.error, data_cache.CacheError)
    assert one_line(second.error) == (
        f"cache {cache} was built for other data: root {os.fspath(tmp_path / 'photos')!r} "
        f"(this run: {os.fspath(tmp_path / 'others')!r}); give another --cache folder or "
        "delete this one"
    )
    assert not any("decoding" in line for line in second.lines)  # it built nothing
    info = data_cache.cache_info(cache)
    assert info["fingerprint"] == data_cache.fingerprint(source)
    data_cache.verify_cache(cache)
    meta = np.load(cache / "train.meta.npy")
    np.testing.assert_array_equal(meta[:, 0], source.files["train"][1])
    assert hidden(cache) == []


def test_a_second_run_of_the_same_data_waits_and_reuses_the_build(tmp_path, held_build):
    started, release = held_build
    root = image_folder(tmp_path / "photos")
    cache = tmp_path / "cache"
    first = Opener(open_source(root, tmp_path), cache)
    first.start()
    assert started.wait(120)
    second = Opener(open_source(root, tmp_path), cache)
    second.start()
    second.wait_for("cache: waiting for another process using")
    release.set()
    first.join(120)
    second.join(120)
    assert first.error is None and second.error is None
    assert sum("cache: decoding" in line for line in first.lines + second.lines) == 1
    data_cache.verify_cache(cache)


# --- a build killed -----------------------------------------------------------------------------

BUILD = """
import sys, time
from keras_resnet.data import cache, folders
source = folders.open_folder(sys.argv[1], image_size=16, log_dir=sys.argv[3])
squash = cache.squash

def slow(*args, **kwargs):  # a build long enough to be killed in the middle
    time.sleep(0.5)
    return squash(*args, **kwargs)

cache.squash = slow
cache.open_cache(source, sys.argv[2], processes=True)
"""


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def alive(pids: list[int]) -> list[int]:
    """Those of `pids` still running (a zombie counts as gone)."""
    running = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            running.append(pid)
    return running


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process table in /proc")
def test_a_killed_build_leaves_no_worker_and_the_next_open_cleans_up(tmp_path):
    root = image_folder(tmp_path / "photos", n_train=20, n_val=4)
    cache = tmp_path / "cache"
    env = SUBPROCESS_ENV
    process = subprocess.Popen(
        [sys.executable, "-c", BUILD, os.fspath(root), os.fspath(cache), os.fspath(tmp_path)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 240
    try:
        workers: list[int] = []
        while not (cache.is_dir() and hidden(cache) and workers):
            assert process.poll() is None, "the build ended before it could be killed"
            assert time.monotonic() < deadline, "the build did not start in time"
            workers = children_of(process.pid)
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert len(hidden(cache)) == 1 and not (cache / "cache.json").exists()
    deadline = time.monotonic() + 60
    while alive(workers):  # they are killed with their parent, not left decoding
        assert time.monotonic() < deadline, f"decoding workers outlived the build: {workers}"
        time.sleep(0.1)
    # The next open removes what the killed process left and builds a whole cache.
    source = open_source(root, tmp_path)
    data_cache.open_cache(source, cache, processes=False, log=quiet)
    assert hidden(cache) == []
    assert sorted(p.name for p in cache.iterdir()) == [
        ".lock",
        "cache.json",
        "train.meta.npy",
        "train.u8",
        "val.meta.npy",
        "val.u8",
    ]
    data_cache.verify_cache(cache)


def test_stale_temporaries_of_running_processes_are_kept(tmp_path):
    root = image_folder(tmp_path / "photos")
    cache = tmp_path / "cache"
    cache.mkdir()
    mine = cache / f".build-{os.getpid()}-0000abcd"  # this process: a build in progress
    mine.mkdir()
    gone = cache / ".build-999999999-0000abcd"  # no such process
    gone.mkdir()
    (gone / "train.u8").write_bytes(b"\0" * 1000)
    data_cache.open_cache(open_source(root, tmp_path), cache, processes=False, log=quiet)
    assert hidden(cache) == [mine.name]


# --- a full disk --------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of the size asked for (root only; skipped elsewhere), unmounted after."""
    mounted = []

    def mount(size: str) -> Path:
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root")
        folder = tmp_path / f"disk{len(mounted)}"
        folder.mkdir()
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", os.fspath(folder)],
            capture_output=True,
            text=True,
        )
        if result.returncode:
            pytest.skip(f"mount -t tmpfs not permitted here: {result.stderr.strip()}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", os.fspath(folder)], check=False)


def test_a_cache_that_does_not_fit_is_refused_before_decoding(tmp_path, small_disk):
    root = image_folder(tmp_path / "photos", n_train=40, n_val=4)
    disk = small_disk("64k")
    source = open_source(root, tmp_path)
    needed = data_cache.cache_bytes(source, data_cache.cache_side(SIZE))
    lines: list[str] = []
    with pytest.raises(data_cache.CacheError) as info:
        data_cache.open_cache(source, disk / "cache", processes=False, log=lines.append)
    message = one_line(info.value)
    assert message.startswith(f"cache {disk / 'cache'}: not enough free space: the cache needs ")
    assert f"needs {needed:,} bytes" in message and "--cache" in message
    assert sorted(os.listdir(disk / "cache")) == [".lock"]


FULL_DISK = """
import json, os, signal, sys
from keras_resnet.data import cache, folders
source = folders.open_folder(sys.argv[1], image_size=16, log_dir=sys.argv[4])
cache._check_room = lambda folder, needed: None  # the disk fills during the build
results = {"needed": cache.cache_bytes(source, cache.cache_side(16))}
free = os.statvfs(sys.argv[2]).f_bfree
try:
    cache.open_cache(source, sys.argv[2] + "/full", processes=True, log=lambda _: None)
except ValueError as error:
    results["full"] = str(error)
results["full_left"] = sorted(os.listdir(sys.argv[2] + "/full"))
results["blocks_kept"] = free - os.statvfs(sys.argv[2]).f_bfree  # the lock file's, at most

def killed(*args, **kwargs):  # a worker dies of a signal (SIGBUS: a full memory-mapped disk)
    os.kill(os.getpid(), signal.SIGBUS)

cache.squash = killed
try:
    cache.open_cache(source, sys.argv[3] + "/killed", processes=True, log=lambda _: None)
except ValueError as error:
    results["killed"] = str(error)
results["killed_left"] = sorted(os.listdir(sys.argv[3] + "/killed"))
print(json.dumps(results))
"""


def test_a_disk_that_fills_during_the_build_is_one_line(tmp_path, small_disk):
    """Forked workers (the default) meet ENOSPC; a worker that dies of a signal is named too.
    Before: the workers died of SIGBUS writing the memory map, and a BrokenProcessPool
    traceback ended the run."""
    root = image_folder(tmp_path / "photos", n_train=40, n_val=4, side=40)
    disk, roomy = small_disk("96k"), small_disk("4m")
    env = SUBPROCESS_ENV
    args = [os.fspath(root), os.fspath(disk), os.fspath(roomy), os.fspath(tmp_path)]
    result = subprocess.run(
        [sys.executable, "-c", FULL_DISK, *args], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    needed = f"{report['needed']:,} bytes"
    assert report["full"].startswith(f"cache {disk / 'full'}: no space left on device: ")
    assert needed in report["full"] and "\n" not in report["full"]
    assert report["full_left"] == [".lock"] and report["blocks_kept"] <= 1
    killed = report["killed"]
    assert killed.startswith(f"cache {roomy / 'killed'}: a decoding worker process died")
    assert needed in killed and "\n" not in killed
    assert report["killed_left"] == [".lock"]


# --- damaged files ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A cache built once; each test damages a copy of it."""
    tmp_path = tmp_path_factory.mktemp("built")
    source = open_source(image_folder(tmp_path / "photos"), tmp_path)
    data_cache.open_cache(source, tmp_path / "cache", processes=False, log=quiet)
    return source, tmp_path / "cache"


def _zero(path: Path) -> None:
    path.write_bytes(b"\0" * path.stat().st_size)


def _zero_pixels(path: Path) -> None:
    images = np.load(path, mmap_mode="r+")
    images[:] = 0
    images.flush()


def _relabel(path: Path) -> None:
    meta = np.load(path)
    meta[:, 0] = 1 - meta[:, 0]
    np.save(path, meta)


DAMAGES = {
    "deleted": ("train.u8", lambda p: p.unlink(), "is missing"),
    "truncated": ("val.u8", lambda p: os.truncate(p, p.stat().st_size - 100), "holds "),
    "zeroed pixels": ("train.u8", _zero_pixels, "does not hold what was built"),
    "labels changed": ("train.meta.npy", _relabel, "does not hold what was built"),
    "zeroed labels file": ("val.meta.npy", _zero, "does not hold what was built"),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_cache_file_is_named_in_one_line(damage, built, tmp_path):
    source, original = built
    cache = tmp_path / "cache"
    shutil.copytree(original, cache)
    data_cache.open_cache(source, cache, log=quiet)  # whole: opens
    name, hurt, says = DAMAGES[damage]
    hurt(cache / name)
    with pytest.raises(data_cache.CacheError) as info:
        data_cache.open_cache(source, cache, log=quiet)
    message = one_line(info.value)
    assert message.startswith(f"cache file {cache / name} {says}"), message
    assert message.endswith(
        f"delete the cache folder {cache} to rebuild it (or give another --cache folder)"
    )


@pytest.mark.parametrize("text", ["", "not json {", "[1, 2]"])
def test_a_garbage_record_is_named_in_one_line(text, built, tmp_path):
    source, original = built
    cache = tmp_path / "cache"
    shutil.copytree(original, cache)
    (cache / "cache.json").write_text(text)
    with pytest.raises(data_cache.CacheError) as info:
        data_cache.open_cache(source, cache, log=quiet)
    assert one_line(info.value).startswith(f"cache record {cache / 'cache.json'} is not ")
    assert "delete the cache folder" in str(info.value)


def test_a_record_of_an_earlier_version_is_rebuilt(built, tmp_path):
    source, original = built
    cache = tmp_path / "cache"
    shutil.copytree(original, cache)
    info = json.loads((cache / "cache.json").read_text())
    (cache / "cache.json").write_text(json.dumps({**info, "version": 1}))
    (cache / "test.u8").write_bytes(b"a split of the earlier build")
    lines: list[str] = []
    data_cache.open_cache(source, cache, processes=False, log=lines.append)
    assert any("cache: decoding" in line for line in lines)
    assert not (cache / "test.u8").exists()  # the earlier build's files are gone
    data_cache.verify_cache(cache)


def test_a_file_name_that_is_not_utf8_is_cached(tmp_path):
    root = image_folder(tmp_path / "photos")
    shutil.copy(root / "train" / "a" / "0.png", os.fsencode(root / "train" / "a") + b"/\xe9.png")
    source = open_source(root, tmp_path)
    data_cache.open_cache(source, tmp_path / "cache", processes=False, log=quiet)
    assert data_cache.cache_info(tmp_path / "cache")["splits"]["train"]["count"] == 13
    data_cache.verify_cache(tmp_path / "cache")


def test_cache_batches_name_a_file_cut_short(built, tmp_path):
    _, original = built
    cache = tmp_path / "cache"
    shutil.copytree(original, cache)
    os.truncate(cache / "train.u8", 1000)
    with pytest.raises(data_cache.CacheError) as info:
        data_lib.CachePyDataset(cache, "train", 2, train=True)
    assert one_line(info.value).startswith(f"cache file {cache / 'train.u8'} cannot be read")
