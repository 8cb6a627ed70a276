"""The benchmark's report: a text table, the ratios ours / peer, and the JSON record."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict

from benchmarks.timing import Result

PEER_PREFIXES = ("keras.applications", "torchvision")


def is_peer(result: Result) -> bool:
    """Whether a result is a peer's (keras.applications or torchvision), not one of ours."""
    return result.name.startswith(PEER_PREFIXES)


def label(r: Result) -> str:
    """'resnet50 [keras-jax compiled synthetic x1]': what a ratio row names."""
    return f"{r.name} [{r.framework} {r.path} {r.data} x{r.devices}]"


def _hw(shape: Sequence[int]) -> tuple:
    """Height and width of an input shape, HWC or CHW."""
    shape = tuple(shape)
    return shape[:2] if shape[-1] <= 4 else shape[1:]


def _arch(name: str) -> str:
    """'torchvision.resnet50' and 'resnet50[stride_in=1x1]' -> 'resnet50'."""
    return name.split("[")[0].rsplit(".", 1)[-1].lower()


def _row(a: Result, b: Result, **extra) -> dict:
    return {"ours": label(a), "peer": label(b), "ratio": a.img_per_s / b.img_per_s, **extra}


def ratios(results: Sequence[Result]) -> list[dict]:
    """Ours over each peer, for training results of the same architecture, batch, devices and
    input size; and real data over synthetic data for the same model and path."""
    ours = [r for r in results if r.task == "train" and not is_peer(r)]
    peers = [r for r in results if r.task == "train" and is_peer(r)]
    out = [
        _row(a, b)
        for a in ours
        if a.data == "synthetic"
        for b in peers
        # Peers are one architecture (ResNet-50): compare only our model of that depth.
        if _arch(a.name) == _arch(b.name)
        and a.batch_size == b.batch_size
        and a.devices == b.devices
        and _hw(a.input_shape) == _hw(b.input_shape)
    ]
    out += [
        _row(a, b)
        for a in ours
        if a.data.startswith("real:")
        for b in ours
        if b.data == "synthetic"
        and (b.name, b.path, b.batch_size) == (a.name, a.path, a.batch_size)
        and _hw(b.input_shape) == _hw(a.input_shape)
    ]
    return out


def inference_ratios(results: Sequence[Result], peer: Result) -> list[dict]:
    """Each of our inference results over one peer's (the interleaved measurement)."""
    return [_row(r, peer, task="infer") for r in results if not is_peer(r)]


def format_table(results: Sequence[Result], ratio_rows: Sequence[dict] = ()) -> str:
    """The results as a text table, then the ratios."""
    header = (
        f"{'model':<30} {'framework':<16} {'task':<5} {'path':<14} {'data':<19} "
        f"{'batch':>5} {'img/s':>9} {'step ms':>8} {'MFU':>6} {'mem GiB':>7}"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        mfu_text = f"{100 * r.mfu:5.1f}%" if r.mfu is not None else "    -"
        mem = f"{r.peak_memory_bytes / 2**30:7.2f}" if r.peak_memory_bytes else "      -"
        lines.append(
            f"{r.name:<30} {r.framework:<16} {r.task:<5} {r.path:<14} {r.data:<19} "
            f"{r.batch_size:>5} {r.img_per_s:>9.1f} {r.step_ms:>8.2f} {mfu_text:>6} {mem}"
        )
    for row in ratio_rows:
        lines.append(f"ratio {row['ratio']:.3f}: {row['ours']} / {row['peer']}")
    return "\n".join(lines)


def to_json(
    results: Sequence[Result], info: dict, ratio_rows: Sequence[dict], extra: dict | None = None
) -> dict:
    """A JSON-ready record of one benchmark run."""
    return {
        "info": info,
        "results": [asdict(r) for r in results],
        "ratios": list(ratio_rows),
        **(extra or {}),
    }
