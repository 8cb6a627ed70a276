"""A one-time preprocessed cache of a folder's images, for when JPEG decoding cannot keep up.

Decoding photo-like JPEGs costs milliseconds a file; a GPU training ResNet-50 at 224 px takes
thousands a second. As FFCV does, the cache decodes every image once and stores it as raw uint8
in one memory-mapped file per split:

- train: each image squashed to `side x side` (default 256) with its original height and width
  kept, so that a random-resized crop is drawn in original coordinates (the recipe's aspect
  ratios stay right) and mapped onto the stored pixels;
- val/test: the eval recipe's center crop itself, at `image_size`: evaluating from the cache
  gives the same pixels as streaming from the folder.

The build decodes JPEGs with OpenCV when it is installed (optional), else with Pillow, in forked
worker processes. This module builds the cache (`build_cache`) and opens it (`open_cache`: built
once, else checked); `cache_read` holds what reads a built one: its record (`cache_info`), the
checks (`check_same_data`, `verify_cache`) and `CachePyDataset`, which either crops on the CPU
(one Pillow resize per image) or, with `crop_on_device=True`, only gathers rows of the memory map
for `gpu_crop.RandomResizedCrop` to crop inside the model (the fast path: docs/DATA.md). Those
names are importable from here too.

The cost is disk: side 256 takes 192 KiB an image (9.4 GiB for 50,000, 235 GiB for ImageNet's
1.28 M), and the crops are taken from a 256-px copy rather than the full-size file.

**Safe to share and to interrupt** (`open_cache`):

- one build at a time: the build, and the check of an existing cache, hold an exclusive
  `fcntl.flock` on `DIR/.lock`; a second run waits, then checks the cache against its own data
  and refuses one built for other data;
- build-then-rename: every file is written into a hidden `DIR/.build-<pid>-<id>/` folder, then
  renamed into place, `cache.json` last; a kill leaves the hidden folder, which the next open
  removes once its process is gone; the decoding workers die with the process that started
  them (`subprocess_utils.die_with_parent`);
- the room is checked first (the decoded size is known: rows x side x side x channels), and the
  workers write with `pwrite`, so a disk that fills all the same is an error, not a SIGBUS;
- `cache.json` records each file's size and a digest of a seeded sample of rows (and of the
  labels file whole): a cache whose files are missing, cut short or changed is refused in one
  line naming the file.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np
from PIL import Image

from keras_resnet.data.cache_read import (
    CACHE_VERSION,
    RECORD_FILE,
    CacheError,
    _digests,
    cache_info,
    check_same_data,
    fingerprint,
    verify_cache,
)
from keras_resnet.data.cache_read import DIGEST_ROWS as DIGEST_ROWS  # re-exported
from keras_resnet.data.cache_read import CachePyDataset as CachePyDataset  # re-exported
from keras_resnet.data.decode import BadImage, open_scaled, recipe_crop, to_channels
from keras_resnet.subprocess_utils import die_with_parent
from keras_resnet.utils import one_line, remove_stale_temps, temp_name, write_text_atomic

try:
    import fcntl
except ImportError:  # not POSIX: no lock (one run at a time is then the user's care)
    fcntl = None

LOCK_FILE = ".lock"
BUILD_PREFIX = ".build-"
_SPLIT_NAMES = ("train", "val", "test")


def opencv_module():
    """cv2 when OpenCV is installed (optional: `pip install opencv-python-headless`), else None."""
    try:
        import cv2
    except ImportError:
        return None
    return cv2


def _squash_opencv(
    cv2, path, side: int, channels: int, image, original: tuple[int, int]
) -> np.ndarray | None:
    """OpenCV's JPEG decode at the smallest 1/2, 1/4, 1/8 scale covering `side`, or None when
    the file is not a whole JPEG (OpenCV decodes a truncated JPEG silently: Pillow reports it)."""
    if image.format != "JPEG" or image.mode not in ("L", "RGB"):
        return None
    with open(path, "rb") as f:
        encoded = np.frombuffer(f.read(), np.uint8)
    if encoded[-2:].tobytes() != b"\xff\xd9":
        return None
    reduce = 1
    while reduce < 8 and min(original) // (2 * reduce) >= side:
        reduce *= 2
    flags = {1: "", 2: "_REDUCED_{}_2", 4: "_REDUCED_{}_4", 8: "_REDUCED_{}_8"}[reduce]
    kind = "GRAYSCALE" if channels == 1 else "COLOR"
    flag = getattr(cv2, "IMREAD" + (flags.format(kind) if flags else "_" + kind))
    decoded = cv2.imdecode(encoded, flag)
    if decoded is None:
        return None
    out = cv2.resize(decoded, (side, side), interpolation=cv2.INTER_AREA)
    if channels == 3:
        out = cv2.cvtColor(out, cv2.COLOR_BGR2RGB)
    return out.reshape(side, side, channels)


def squash(
    path: str, side: int, channels: int, *, opencv: bool = True
) -> tuple[np.ndarray, tuple[int, int]]:
    """The whole image resized to side x side, and its original (height, width).

    JPEGs are decoded by OpenCV at reduced scale when it is installed and `opencv` is true
    (about twice Pillow's rate on the GPU machine), else by Pillow at its draft scale.
    """
    image, factor = open_scaled(path, side, channels)
    height, width = round(image.size[1] / factor), round(image.size[0] / factor)
    cv2 = opencv_module() if opencv else None
    if cv2 is not None:
        fast = _squash_opencv(cv2, path, side, channels, image, (height, width))
        if fast is not None:
            image.close()
            return fast, (height, width)
    try:
        with image:
            out = to_channels(image, channels).resize((side, side), Image.Resampling.BILINEAR)
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as error:
        raise BadImage(f"cannot be decoded ({error})") from None
    return np.asarray(out, np.uint8).reshape(side, side, channels), (height, width)


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        if written == 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view, offset = view[written:], offset + written


def _decode_rows(job) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decodes rows `rows` of a split into its `.npy` file (runs in a worker). Written with
    `pwrite`, not through a memory map: a full disk is then an OSError, not a SIGBUS.

    Returns:
        The rows, their original (height, width) (train) and whether each was readable.
    """
    source, split, file, offset, rows, side, opencv = job
    size = _split_size(source, split, side)
    row_bytes = size * size * source.channels
    paths = source.files[split][0]
    sizes = np.zeros((len(rows), 2), np.int32)
    ok = np.zeros(len(rows), bool)
    fd = os.open(file, os.O_WRONLY)
    try:
        for n, i in enumerate(rows):
            path = source.path(paths[i])
            try:
                if split == "train":
                    image, sizes[n] = squash(path, side, source.channels, opencv=opencv)
                else:
                    image = recipe_crop(
                        path,
                        source.image_size,
                        source.channels,
                        train=False,
                        record=getattr(source, "preprocessing", None),
                    )
                    sizes[n] = source.image_size
            except BadImage as error:
                source.skip_log.record(path, str(error))
                continue
            _pwrite_all(fd, np.ascontiguousarray(image, np.uint8).tobytes(), offset + i * row_bytes)
            ok[n] = True
    finally:
        os.close(fd)
    return rows, sizes, ok


def _pool(workers: int, processes: bool):
    # fork: the workers run only Pillow/OpenCV/numpy, and need not import Keras again (spawn
    # would re-import the package, seconds per worker). Threads where fork is unavailable.
    # Each worker dies with this process: a killed build leaves no orphan decoding.
    if processes and "fork" in multiprocessing.get_all_start_methods():
        return ProcessPoolExecutor(
            workers,
            mp_context=multiprocessing.get_context("fork"),
            initializer=die_with_parent,
            initargs=(os.getpid(),),
        )
    return ThreadPoolExecutor(workers)


def _create_npy(path: Path, shape: tuple[int, ...]) -> int:
    """A uint8 `.npy` file of `shape` (zeros, sparse); returns the offset of its data."""
    with open(path, "wb") as f:
        header = {"descr": "|u1", "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_1_0(f, header)
        offset = f.tell()
        f.truncate(offset + math.prod(shape))
    return offset


def _split_size(source, split: str, side: int) -> int:
    return side if split == "train" else source.image_size


def cache_bytes(source, side: int) -> int:
    """The bytes a cache of `source` takes on disk: every split's rows x size x size x
    channels, the labels files and the headers."""
    total = 0
    for split, (paths, _) in source.files.items():
        size = _split_size(source, split, side)
        total += len(paths) * (size * size * source.channels + 4 * 8) + 2 * 128
    return total + 64 * 1024  # cache.json and the lock file


def _write_split(source, split, folder: Path, side: int, workers: int, processes: bool) -> dict:
    paths, labels = source.files[split]
    size = _split_size(source, split, side)
    sizes = np.zeros((len(paths), 2), np.int32)
    ok = np.zeros(len(paths), bool)
    opencv = opencv_module() is not None
    file = folder / f"{split}.u8"
    offset = _create_npy(file, (len(paths), size, size, source.channels))
    chunks = np.array_split(np.arange(len(paths)), max(1, min(len(paths), 8 * workers)))
    jobs = [(source, split, file, offset, rows, side, opencv) for rows in chunks if len(rows)]
    with _pool(workers, processes) as pool:
        for rows, chunk_sizes, chunk_ok in pool.map(_decode_rows, jobs):
            sizes[rows], ok[rows] = chunk_sizes, chunk_ok
    np.save(folder / f"{split}.meta.npy", np.column_stack([labels, sizes, ok]).astype(np.int64))
    return {"count": int(ok.sum()), "size": size}


@contextlib.contextmanager
def cache_lock(
    folder: str | os.PathLike, log: Callable[[str], None] | None = None
) -> Iterator[None]:
    """Holds an exclusive `fcntl.flock` on `folder/.lock` for the block: one build or check of
    the cache at a time, across processes. `log` is told when another process holds it (this
    one then waits). A folder where the lock file cannot be made (read-only) is not locked: no
    build can happen there."""
    path = Path(folder) / LOCK_FILE
    fd = None
    if fcntl is not None:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError:
            with contextlib.suppress(OSError):
                fd = os.open(path, os.O_RDONLY)
    if fd is None:
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if log is not None:
                log(f"cache: waiting for another process using {folder}")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _remove_incomplete(folder: Path) -> None:
    """The data files of a cache without a valid record (an interrupted build of an earlier
    version): nothing reads them, and they would hold the room the new build needs."""
    for split in _SPLIT_NAMES:
        for name in (f"{split}.u8", f"{split}.meta.npy"):
            with contextlib.suppress(FileNotFoundError):
                (folder / name).unlink()


def _check_room(folder: Path, needed: int) -> None:
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise CacheError(
            f"cache {folder}: not enough free space: the cache needs {needed:,} bytes "
            f"({needed / 2**20:,.1f} MiB), the disk has {free:,} bytes ({free / 2**20:,.1f} "
            "MiB) free; make room or give another --cache folder"
        )


def _build(source, folder: Path, side: int, workers: int | None, processes: bool) -> dict:
    """Builds the cache of `source` into a hidden folder, then renames it into `folder`
    (`cache.json` last). The caller holds the lock."""
    needed = cache_bytes(source, side)
    _check_room(folder, needed)
    temp = folder / temp_name(BUILD_PREFIX)
    try:
        temp.mkdir()
        workers = workers or os.cpu_count() or 1
        splits = {
            split: _write_split(source, split, temp, side, workers, processes)
            for split in source.files
        }
        seed = int.from_bytes(os.urandom(4), "little")
        info = {
            "version": CACHE_VERSION,
            "fingerprint": fingerprint(source),
            "root": os.path.realpath(source.root),
            "class_names": source.class_names,
            "channels": source.channels,
            "image_size": source.image_size,
            "side": side,
            "splits": splits,
            "files": {},
            "digest_seed": seed,
            "digests": {split: _digests(temp, split, seed) for split in splits},
        }
        names = [f"{split}.{kind}" for split in splits for kind in ("u8", "meta.npy")]
        for name in names:
            with open(temp / name, "rb") as f:
                os.fsync(f.fileno())
            info["files"][name] = (temp / name).stat().st_size
        # Everything is written before anything is renamed: the renames take no room.
        write_text_atomic(temp / RECORD_FILE, json.dumps(info, indent=2))
        record = folder / RECORD_FILE
        with contextlib.suppress(FileNotFoundError):
            record.unlink()  # a kill among the renames leaves no record: the build is redone
        _remove_incomplete(folder)
        try:
            for name in names:
                os.replace(temp / name, folder / name)
            os.replace(temp / RECORD_FILE, record)
        except BaseException:
            _remove_incomplete(folder)  # data files without their record are no cache
            raise
        return info
    except BrokenProcessPool:
        raise CacheError(
            f"cache {folder}: a decoding worker process died (killed by a signal: out of "
            f"memory, SIGBUS, a kill); the cache needs {needed:,} bytes "
            f"({needed / 2**20:,.1f} MiB), {shutil.disk_usage(folder).free:,} bytes free now"
        ) from None
    except OSError as error:
        if error.errno == errno.ENOSPC:
            raise CacheError(
                f"cache {folder}: no space left on device: the cache needs {needed:,} bytes "
                f"({needed / 2**20:,.1f} MiB); make room or give another --cache folder"
            ) from None
        raise CacheError(f"cache {folder} cannot be written: {one_line(error)}") from None
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def build_cache(
    source,
    folder: str | os.PathLike,
    *,
    side: int = 256,
    workers: int | None = None,
    processes: bool = True,
) -> Path:
    """Decodes every image of `source` (a `FolderSource`) once into `folder`.

    Args:
        source: the folder dataset.
        folder: where the cache goes (one `<split>.u8` .npy file and `<split>.meta.npy` per split,
            `cache.json` last, so a cache without it is incomplete and is rebuilt). Built in a
            hidden folder inside it and renamed into place, under the folder's lock.
        side: side of the stored train images.
        workers: decoding workers (default: the CPU count).
        processes: decode in forked worker processes (Pillow's resize and the numpy glue hold
            the GIL: 16 threads built 1,238 img/s on the GPU machine where 16 processes decode
            3,350); threads when False or where fork is unavailable.

    Returns:
        The cache folder. Unreadable files are recorded in the source's skip log and left out.

    Raises:
        CacheError: not enough room (checked first), a disk that filled all the same, a
            decoding worker that died, or a folder that cannot be written; one line naming the
            folder (and the bytes needed). Nothing is left behind.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with cache_lock(folder):
        remove_stale_temps(folder, BUILD_PREFIX)
        _build(source, folder, side, workers, processes)
    return folder


def cache_side(image_size: int) -> int:
    """The stored side of train images for crops of `image_size`: 256 for 224, as the eval
    recipe's resize (a crop of the whole image then needs no upsampling)."""
    return max(image_size, round(image_size * 256 / 224))


def open_cache(source, folder: str | os.PathLike, *, processes: bool = True, log=print) -> Path:
    """The cache of `source` in `folder`: built when the folder holds none (an interrupted
    build has no cache.json and is built again), else checked against `source` and against
    its record (`verify_cache`). Under the folder's lock (`cache_lock`): a second process
    waits for the first one's build, then checks the cache against its own data.

    Raises:
        CacheError (a ValueError): the folder holds a cache of other files (another folder,
            validation split, image size or channel count), a damaged cache, or the build
            failed (see `build_cache`): one line naming the folder or the file.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise CacheError(f"cache {folder} is a file, not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    with cache_lock(folder, log):
        remove_stale_temps(folder, BUILD_PREFIX)
        info = cache_info(folder)
        if info is None:
            _remove_incomplete(folder)  # no record: nothing reads them, and they take room
            count = sum(source.counts.values())
            log(f"cache: decoding {count} images into {folder} (once)")
            start = time.perf_counter()
            _build(source, folder, cache_side(source.image_size), None, processes)
            seconds = time.perf_counter() - start
            decoder = "OpenCV" if opencv_module() is not None else "Pillow"
            log(f"cache: built in {seconds:.1f} s ({count / seconds:.0f} images/s, {decoder})")
            return folder
        check_same_data(source, folder, info)
        verify_cache(folder, info)
    return folder
