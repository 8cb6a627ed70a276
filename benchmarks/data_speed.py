#!/usr/bin/env python
"""Input-pipeline speed on the GPU machine: see tools/gpu/gpu_data.sh.

    data_speed.py generate DIR [--count 50000]   photo-like 500x375 q90 JPEGs, DIR/train, DIR/val
    data_speed.py decode DIR                     decode + random-resized crop rates, per method
    data_speed.py cache DIR CACHE                build the uint8 cache (threads vs processes on a
                                                 slice first); read rates of its batches
    data_speed.py fit DIR CACHE [--devices N]    ResNet-50 224 bf16 fit img/s: synthetic uint8,
                                                 cache + on-device crop, folder stream (Keras on
                                                 JAX; N GPUs: DataParallel, global batch 256 N)

Each command prints JSON lines ({"what": ..., "img_per_s": ...}); `table` prints them as Markdown.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

WIDTH, HEIGHT, QUALITY, DETAIL = 500, 375, 90, 2.4  # DETAIL 2.4: about 110 KB a file


def photo(seed: int) -> Image.Image:
    """Gradients, multi-scale texture, hard-edged shapes and sensor noise: JPEG sizes and decode
    costs like a photograph's rather than a smooth fill's."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    base = np.zeros((HEIGHT, WIDTH, 3), np.float32)
    for c in range(3):
        a, b, d = rng.uniform(-0.4, 0.4, 3)
        base[..., c] = 128 + 100 * (a * xx / WIDTH + b * yy / HEIGHT + d)
    for scale, amp in ((8, 40), (32, 25), (2, 12 * DETAIL)):
        small = rng.normal(0, 1, (HEIGHT // scale + 1, WIDTH // scale + 1, 3))
        small = Image.fromarray(((small + 4) * 32).clip(0, 255).astype(np.uint8))
        base += (np.asarray(small.resize((WIDTH, HEIGHT), Image.BICUBIC), np.float32) - 128) * (
            amp / 32
        )
    image = Image.fromarray(base.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(rng.integers(3, 12)):
        x0, y0 = rng.integers(0, WIDTH), rng.integers(0, HEIGHT)
        box = (x0, y0, x0 + rng.integers(20, 200), y0 + rng.integers(20, 150))
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.integers(2) else draw.rectangle)(box, fill=fill)
    noisy = np.asarray(image, np.float32) + rng.normal(0, 6 * DETAIL, (HEIGHT, WIDTH, 3))
    return Image.fromarray(noisy.clip(0, 255).astype(np.uint8))


def _write_one(job) -> int:
    path, seed = job
    buffer = io.BytesIO()
    photo(seed).save(buffer, "JPEG", quality=QUALITY)
    Path(path).write_bytes(buffer.getvalue())
    return buffer.tell()


def generate(args) -> None:
    root = Path(args.dir)
    jobs = []
    for split, count, offset in (("train", args.count, 0), ("val", args.val, 10**7)):
        for i in range(count):
            folder = root / split / f"class_{i % args.classes:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            jobs.append((folder / f"{i:07d}.jpg", offset + i))
    start = time.perf_counter()
    with Pool(args.workers) as pool:
        sizes = pool.map(_write_one, jobs, chunksize=64)
    seconds = time.perf_counter() - start
    emit("generate", len(sizes) / seconds, files=len(sizes), mean_kb=np.mean(sizes) / 1024)


# --- decode + random-resized crop, one function per method, run in a process pool ---


def _box(rng, height, width):
    from keras_resnet.data.recipe import random_resized_crop_box

    return [int(round(v)) for v in random_resized_crop_box(rng, height, width)]


def _pillow(path, rng, reduce=1):
    with Image.open(path) as image:
        if reduce > 1:
            image.draft("RGB", (image.size[0] // reduce, image.size[1] // reduce))
        box = _box(rng, image.size[1], image.size[0])
        out = image.convert("RGB").resize((224, 224), Image.BILINEAR, box=box)
    return np.asarray(out)[:, ::-1] if rng.integers(2) else np.asarray(out)


def _opencv(path, rng, reduce=1):
    import cv2

    flag = cv2.IMREAD_REDUCED_COLOR_2 if reduce == 2 else cv2.IMREAD_COLOR
    image = cv2.imdecode(np.fromfile(path, np.uint8), flag)
    left, top, right, bottom = _box(rng, *image.shape[:2])
    out = cv2.resize(image[top:bottom, left:right], (224, 224), interpolation=cv2.INTER_LINEAR)
    return out[:, ::-1] if rng.integers(2) else out


def _recipe(path, rng, reduce=1):
    from keras_resnet.data.decode import recipe_crop

    return recipe_crop(path, 224, 3, train=True, seed=int(rng.integers(2**31)))


METHODS = {
    "pillow": (_pillow, 1),
    "pillow-reduced-1/2": (_pillow, 2),
    "opencv": (_opencv, 1),
    "opencv-reduced-1/2": (_opencv, 2),
    "keras_resnet recipe_crop (Pillow)": (_recipe, 1),
}


def _run_method(job):
    name, paths, seed = job
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:
        pass
    fn, reduce = METHODS[name]
    rng = np.random.default_rng(seed)
    for path in paths:
        fn(path, rng, reduce)
    return len(paths)


def sample_paths(root: Path, count: int) -> list[str]:
    paths = sorted(str(p) for p in (root / "train").rglob("*.jpg"))
    rng = np.random.default_rng(0)
    return [paths[i] for i in rng.choice(len(paths), min(count, len(paths)), replace=False)]


def decode(args) -> None:
    paths = sample_paths(Path(args.dir), args.sample)
    import importlib.util

    for name in METHODS:
        if name.startswith("opencv") and importlib.util.find_spec("cv2") is None:
            emit(f"decode+rrc {name}", 0.0, error="cv2 not installed")
            continue
        workers = args.workers  # one-core rates: 1/16 of these within 10% (log of 2026-11-29)
        jobs = [(name, paths[i::workers], i) for i in range(workers)]
        with Pool(workers) as pool:
            pool.map(_run_method, [(name, paths[:8], 0)] * workers)  # warm imports
            start = time.perf_counter()
            n = sum(pool.map(_run_method, jobs))
        emit(f"decode+rrc {name}", n / (time.perf_counter() - start), cores=workers)
    nvjpeg(paths)


def nvjpeg(paths: list[str]) -> None:
    """torchvision.io.decode_jpeg on CUDA in batches of 256, then a resized crop per image."""
    try:
        import torch
        import torchvision
        from torchvision.transforms.v2 import functional as F
    except ImportError as error:
        emit("decode+rrc nvjpeg", 0.0, error=str(error))
        return
    if not torch.cuda.is_available():
        emit("decode+rrc nvjpeg", 0.0, error="no CUDA device")
        return
    datas = [torchvision.io.read_file(p) for p in paths]
    rng = np.random.default_rng(0)
    for with_crop in (False, True):
        torch.cuda.synchronize()
        for _ in range(2):  # the first pass initializes nvJPEG
            start = time.perf_counter()
            for i in range(0, len(datas), 256):
                images = torchvision.io.decode_jpeg(datas[i : i + 256], device="cuda")
                if with_crop:
                    crops = []
                    for image in images:
                        left, top, right, bottom = _box(rng, *image.shape[1:])
                        crops.append(
                            F.resized_crop(image, top, left, bottom - top, right - left, [224, 224])
                        )
                    torch.stack(crops)
            torch.cuda.synchronize()
        name = "decode+rrc nvjpeg" if with_crop else "decode nvjpeg"
        emit(name, len(datas) / (time.perf_counter() - start), cores="GPU", batch=256)


def cache(args) -> None:
    from keras_resnet import data
    from keras_resnet.data import cache as cache_lib

    source = data.open_dataset(args.dir, image_size=224)
    if args.compare_build:  # threads vs processes on a slice, into a throwaway folder
        sliced = dataclasses.replace(source, files={"train": subset(source, args.compare_build)})
        for processes in (False, True):
            start = time.perf_counter()
            data.build_cache(
                sliced,
                f"{args.cache}_cmp",
                side=args.side,
                workers=args.workers,
                processes=processes,
            )
            rate = args.compare_build / (time.perf_counter() - start)
            pool = "processes" if processes else "threads"
            emit(f"cache build {pool}", rate, cores=args.workers, files=args.compare_build)
        shutil.rmtree(f"{args.cache}_cmp", ignore_errors=True)
    start = time.perf_counter()
    data.build_cache(source, args.cache, side=args.side, workers=args.workers)
    n = sum(source.counts.values())
    decoder = "opencv" if cache_lib.opencv_module() else "pillow"
    emit(
        "cache build (decode once)",
        n / (time.perf_counter() - start),
        cores=args.workers,
        decoder=decoder,
        processes=True,
    )
    for name, make, steps in (
        ("cache, CPU crop", lambda: cache_batches(args, False), args.steps),
        ("cache, gather for the device crop", lambda: cache_batches(args, True), args.steps),
        ("folder stream", lambda: source.dataset("train", args.batch, workers=args.workers), 30),
    ):
        batches = make()
        steps = min(len(batches), steps)
        with ThreadPoolExecutor(args.workers) as pool:
            list(pool.map(batches.__getitem__, range(2)))  # page in, start workers
            start = time.perf_counter()
            images = sum(len(y) for _, y in pool.map(batches.__getitem__, range(steps)))
        rate = images / (time.perf_counter() - start)
        emit(f"batches of {args.batch}, {name}", rate, cores=args.workers)


def subset(source, count: int):
    paths, labels = source.files["train"]
    keep = np.random.default_rng(0).permutation(len(paths))[:count]
    return paths[keep], labels[keep]


def cache_batches(args, crop_on_device: bool, batch: int | None = None):
    from keras_resnet import data

    return data.CachePyDataset(
        args.cache,
        "train",
        batch or args.batch,
        train=True,
        crop_on_device=crop_on_device,
        workers=args.workers,
    )


def endless(batches, workers: int):
    """`batches` repeated without end, so that `fit(steps_per_epoch=...)` never runs dry."""
    import keras

    class Endless(keras.utils.PyDataset):
        def __init__(self):
            super().__init__(workers=workers, max_queue_size=2 * workers)

        @property
        def num_batches(self):
            return None

        def __getitem__(self, index):
            return batches[index % len(batches)]

    return Endless()


def fit(args) -> None:
    """model.fit img/s on ResNet-50 224 bf16, per input (Keras on JAX), on `--devices` GPUs with
    `keras.distribution.DataParallel` (global batch = batch x devices)."""
    import keras

    from keras_resnet import data, utils
    from keras_resnet.data import gpu_crop
    from keras_resnet.models import get_model

    devices = keras.distribution.list_devices()[: args.devices]
    if len(devices) < args.devices:
        raise SystemExit(f"--devices {args.devices}: only {len(devices)} devices found")
    batch = args.batch * args.devices
    with utils.keras_globals(), utils.dtype_policy("mixed_bfloat16"):
        if args.devices > 1:
            keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
        backbone = get_model(
            args.model,
            num_classes=args.classes,
            input_shape=(224, 224, 3),
            normalization="imagenet",
        )
        rng = np.random.default_rng(0)
        n = batch * args.steps
        pool = rng.integers(0, 256, (min(n, 4 * batch), 224, 224, 3), dtype=np.uint8)
        # Repeated random batches: drawing n images (9 GB on 4 GPUs) costs more than the fit.
        synthetic = (np.resize(pool, (n, 224, 224, 3)), rng.integers(0, args.classes, n))
        source = data.open_dataset(args.dir, image_size=224)
        inputs = {
            "synthetic uint8 (numpy)": (backbone, lambda: synthetic, args.steps),
            "cache + device crop": (
                gpu_crop.training_model(backbone, side=args.side, seed=0),
                lambda: endless(cache_batches(args, True, batch), args.workers),
                args.steps,
            ),
            "folder stream": (
                backbone,
                lambda: endless(source.dataset("train", batch, workers=args.workers), args.workers),
                args.folder_steps,
            ),
        }
        for name, (model, make, steps) in inputs.items():
            if args.inputs and name.split()[0] not in args.inputs:
                continue
            emit(
                f"fit {name}",
                *fit_rate(args, model, make(), steps, batch),
                devices=args.devices,
                global_batch=batch,
            )


def fit_rate(args, model, x, steps: int, batch: int) -> tuple[float, dict]:
    """img/s of the second of two epochs of `steps` steps (the first compiles)."""
    import keras

    model.compile(
        optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
        loss="sparse_categorical_crossentropy",
        steps_per_execution=args.steps_per_execution,
    )
    timer = EpochTimer()
    # An endless PyDataset is shuffled already (a permutation per epoch): no batch reshuffle.
    arrays, kwargs = (
        (x, {"batch_size": batch}) if isinstance(x, tuple) else ((x,), {"shuffle": False})
    )
    model.fit(*arrays, epochs=2, steps_per_epoch=steps, callbacks=[timer], verbose=0, **kwargs)
    return batch * steps / timer.times[-1], {"epochs_s": [round(t, 2) for t in timer.times]}


class EpochTimer:
    """Epoch wall times; the first epoch (compilation) is reported but not used."""

    def __new__(cls):
        import keras

        class Timer(keras.callbacks.Callback):
            times: list

            def on_epoch_begin(self, epoch, logs=None):
                self.start = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                self.times = [*getattr(self, "times", []), time.perf_counter() - self.start]

        return Timer()


def emit(what: str, rate: float, details: dict | None = None, **extra) -> None:
    row = {"what": what, "img_per_s": round(rate, 1), **(details or {}), **extra}
    print(json.dumps(row), flush=True)


def table(args) -> None:
    rows = [json.loads(line) for line in open(args.jsonl) if line.startswith("{")]
    print("| measurement | img/s | details |\n|---|---:|---|")
    for row in rows:
        details = ", ".join(f"{k}={v}" for k, v in row.items() if k not in ("what", "img_per_s"))
        print(f"| {row['what']} | {row['img_per_s']:,.0f} | {details} |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("generate", "decode", "cache", "fit", "table"):
        p = sub.add_parser(name)
        p.add_argument("jsonl" if name == "table" else "dir")
        if name in ("cache", "fit"):
            p.add_argument("cache")
        p.add_argument("--workers", type=int, default=os.cpu_count())
        p.add_argument("--count", type=int, default=50000)
        p.add_argument("--val", type=int, default=2000)
        p.add_argument("--classes", type=int, default=100)
        p.add_argument("--sample", type=int, default=2000)
        p.add_argument(
            "--compare-build", type=int, default=4000, help="cache: threads vs processes"
        )
        p.add_argument("--devices", type=int, default=1, help="fit: GPUs, DataParallel")
        p.add_argument("--inputs", nargs="*", help="fit: synthetic, cache, folder (default all)")
        p.add_argument("--folder-steps", type=int, default=30)
        p.add_argument("--side", type=int, default=256)
        p.add_argument("--steps", type=int, default=100)
        p.add_argument("--steps-per-execution", type=int, default=1)
        p.add_argument("--model", default="resnet50")
        p.add_argument("--batch", type=int, default=256)
    args = parser.parse_args(argv)
    {"generate": generate, "decode": decode, "cache": cache, "fit": fit, "table": table}[
        args.command
    ](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
