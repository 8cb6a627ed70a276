"""The peers: `keras.applications.ResNet50` (measured through keras_paths) and torchvision's
ResNets, eager or under `torch.compile`. torch and torchvision are optional, imported here only
when a torch peer runs; import torchvision before TensorFlow (the other order segfaults)."""

from __future__ import annotations

from collections.abc import Sequence

import keras

from benchmarks.timing import Result, make_result, summarize, time_windows

KERAS_APPLICATIONS_NAME = "keras.applications.ResNet50"


def keras_applications_resnet50(input_shape: Sequence[int], num_classes: int) -> keras.Model:
    """`keras.applications.ResNet50` without pretrained weights (v1: stride on the first 1x1)."""
    return keras.applications.ResNet50(
        weights=None, input_shape=tuple(input_shape), classes=num_classes
    )


def bench_torchvision(
    arch: str = "resnet50",
    *,
    batch_size: int,
    image_size: Sequence[int],
    steps: int,
    warmup: int,
    compile: bool,
    precision: str,
    num_classes: int = 1000,
    task: str = "train",
    peak_flops: float | None = None,
    flops_per_image: int | None = None,
    in_channels: int = 3,
) -> Result:
    """torchvision model throughput: channels_last, bf16 autocast (when `precision` is
    'mixed_bfloat16'), SGD with momentum; eager or `torch.compile` (default mode)."""
    import torch
    import torch.nn.functional as F
    import torchvision

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = getattr(torchvision.models, arch)(num_classes=num_classes)
    if in_channels != 3:
        model.conv1 = torch.nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
    model = model.to(device).to(memory_format=torch.channels_last)
    bf16 = precision == "mixed_bfloat16"
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(batch_size, in_channels, *image_size, generator=g).to(device)
    x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, num_classes, (batch_size,), generator=g).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    forward = torch.compile(model) if compile else model

    def train_step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(forward(x), y)
        loss.backward()
        optimizer.step()
        return loss

    @torch.no_grad()
    def infer_step():
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
            return forward(x)

    model.train(task == "train")

    def sync(out):
        if device == "cuda":
            torch.cuda.synchronize()

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    run = train_step if task == "train" else infer_step
    times = time_windows(run, sync, windows=steps, warmup=warmup)
    return make_result(
        summarize(times, 1, batch_size),
        name=f"torchvision.{arch}",
        framework="torch",
        task=task,
        path="torch.compile" if compile else "eager",
        precision=precision,
        batch_size=batch_size,
        input_shape=(in_channels, *image_size),
        flops_per_image=flops_per_image,
        peak_flops=peak_flops,
        peak_memory_bytes=int(torch.cuda.max_memory_allocated()) if device == "cuda" else None,
        notes=[f"torch {torch.__version__}, channels_last" + (", bf16 autocast" if bf16 else "")],
    )
