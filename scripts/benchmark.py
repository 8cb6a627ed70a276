"""Training and inference throughput of keras_resnet models, and of their peers, in one run.

    KERAS_BACKEND=jax python scripts/benchmark.py --models resnet50 --batch-size 256 \
        --precision mixed_bfloat16 --peers keras-fit,torch,torch-compile --json bench.json

Prints a table (img/s, step ms, MFU, peak device memory) and the ratios ours / peer, and writes
the same as JSON. See keras_resnet/benchmark.py for what each path measures.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PEERS = ("keras-fit", "keras-compiled", "torch", "torch-compile")
PATHS = ("compiled", "fit", "pipeline")
VARIANTS = ("keras-bn", "bn-f32-apply", "shifted-maxpool")  # keras_resnet.benchmark.VARIANTS


def _csv(choices):
    def parse(text: str) -> list[str]:
        items = [t for t in text.split(",") if t and t != "none"]
        for item in items:
            if item not in choices:
                raise argparse.ArgumentTypeError(f"{item!r} is not one of {', '.join(choices)}")
        return items

    return parse


def build_parser() -> argparse.ArgumentParser:
    from keras_resnet.cli import add_model_arguments

    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--models",
        nargs="+",
        default=["resnet50"],
        help="keras_resnet model names, each optionally with builder options: "
        "resnet50:stride_in=1x1,width=0.5",
    )
    p.add_argument("--batch-size", type=int, default=256, help="per device")
    p.add_argument("--image-size", type=int, default=224, help="height = width of the input")
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--precision", choices=("mixed_bfloat16", "float32"), default="mixed_bfloat16")
    p.add_argument("--steps", type=int, default=20, help="timed steps")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls before timing")
    p.add_argument(
        "--paths",
        type=_csv(PATHS),
        default=["compiled"],
        help=f"training paths for our models, comma-separated: {', '.join(PATHS)}",
    )
    p.add_argument("--steps-per-execution", type=int, default=1)
    p.add_argument(
        "--variants",
        type=_csv(VARIANTS),
        default=[],
        help=f"experimental layers in our models, comma-separated: {', '.join(VARIANTS)}",
    )
    p.add_argument("--no-inference", action="store_true", help="skip inference throughput")
    p.add_argument(
        "--peers",
        type=_csv(PEERS),
        default=["keras-fit", "torch", "torch-compile"],
        help=f"comma-separated, or 'none': {', '.join(PEERS)}",
    )
    p.add_argument("--data", choices=("synthetic", "real", "both"), default="synthetic")
    p.add_argument("--dataset", default="fashion_mnist", help="for --data real/both")
    p.add_argument(
        "--real-limit",
        type=int,
        help="use the first N training images (e.g. to resize fewer to 224 px)",
    )
    p.add_argument(
        "--pipeline-epochs",
        type=int,
        default=3,
        help="epochs of the 'pipeline' path (the first one compiles)",
    )
    p.add_argument(
        "--pipeline-no-augment",
        action="store_true",
        help="the 'pipeline' path without its augmentation layers (to cost them)",
    )
    p.add_argument("--devices", type=int, default=1, help="data parallel over this many devices")
    p.add_argument(
        "--sync-batch-norm",
        action="store_true",
        help="with --devices > 1: batch norm over the global batch (SPMD)",
    )
    p.add_argument(
        "--interleave-rounds",
        type=int,
        default=0,
        help="instead of the above: inference of each model and "
        "keras.applications.ResNet50 in alternation, this many rounds",
    )
    p.add_argument("--peak-tflops", type=float, help="device peak for MFU (default: datasheet)")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--profile", help="JAX: trace a few compiled training steps into this folder")
    add_model_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if any(p.startswith("torch") for p in args.peers) and importlib.util.find_spec("torchvision"):
        import torchvision  # noqa: F401  (before TensorFlow: the other order segfaults)
    try:
        results, info, ratio_rows = run(args)
    except ValueError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    from keras_resnet import benchmark

    print(benchmark.format_table(results, ratio_rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                benchmark.to_json(results, info, ratio_rows, {"argv": sys.argv[1:]}),
                f,
                indent=1,
                default=str,
            )
    return 0


def parse_model_spec(spec: str) -> tuple[str, dict, str]:
    """'resnet50:stride_in=1x1' -> ('resnet50', {'stride_in': '1x1'}, 'resnet50[stride_in=1x1]')."""
    name, _, options = spec.partition(":")
    overrides = {}
    for item in filter(None, options.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"model options must be key=value, received model={spec!r}")
        for cast in (int, float):
            try:
                value = cast(value)
                break
            except ValueError:
                continue
        overrides[key] = value
    label = f"{name}[{options}]" if options else name
    return name, overrides, label


def run(args):
    import keras

    from keras_resnet import benchmark, count_flops, get_model
    from keras_resnet.cli import model_overrides

    for name in (
        "batch_size",
        "image_size",
        "channels",
        "num_classes",
        "steps",
        "steps_per_execution",
        "devices",
    ):
        value = getattr(args, name)
        if value < 1:
            raise ValueError(f"{name} must be an integer >= 1, received {name}={value}")
    if "pipeline" in args.paths and args.data == "synthetic":
        raise ValueError("the 'pipeline' path needs real data, received --data synthetic")
    if args.peers and args.devices != 1:
        raise ValueError(f"peers run on one device; pass --peers none with devices={args.devices}")
    if args.warmup < 0:
        raise ValueError(f"warmup must be an integer >= 0, received warmup={args.warmup}")
    keras.mixed_precision.set_global_policy(args.precision)
    info = benchmark.device_info()
    peak = args.peak_tflops * 1e12 if args.peak_tflops else benchmark.peak_flops_for(info["device"])
    info["peak_flops"] = peak
    size = (args.image_size, args.image_size)
    shape = (*size, args.channels)
    common = dict(steps=args.steps, warmup=args.warmup, precision=args.precision, peak_flops=peak)
    results = []

    if args.interleave_rounds:
        models = {}
        for spec in args.models:
            name, options, label = parse_model_spec(spec)
            models[label] = get_model(
                name,
                input_shape=shape,
                num_classes=args.num_classes,
                **{**model_overrides(args), **options},
            )
        models["keras.applications.ResNet50"] = keras.applications.ResNet50(
            weights=None, input_shape=shape, classes=args.num_classes
        )
        results = benchmark.interleaved_inference(
            models,
            batch_size=args.batch_size,
            rounds=args.interleave_rounds,
            steps=args.steps,
            warmup=args.warmup,
            precision=args.precision,
        )
        ours = [r for r in results if not benchmark._is_peer(r)]
        peer = results[-1]
        ratio_rows = [
            {
                "ours": benchmark._label(r),
                "peer": benchmark._label(peer),
                "ratio": r.img_per_s / peer.img_per_s,
                "task": "infer",
            }
            for r in ours
        ]
        return results, info, ratio_rows

    dataset = None
    if args.data in ("real", "both"):
        dataset = benchmark.load_real_data(args.dataset, size, limit=args.real_limit)
        shape = dataset.image_shape
        info["dataset"] = {
            "name": dataset.name,
            "source": dataset.source,
            "train_images": len(dataset.x_train),
        }
    for spec in args.models:
        name, options, label = parse_model_spec(spec)
        overrides = {**model_overrides(args), **options}
        if dataset is not None:
            # Raw uint8 pixels in; the model normalizes them (its 'normalize' layer).
            from keras_resnet.data import channel_stats

            overrides["normalization"] = channel_stats(dataset.x_train)
        model = get_model(name, input_shape=shape, num_classes=args.num_classes, **overrides)
        if args.variants:
            model = benchmark.with_variants(model, args.variants)
            label += "+" + "+".join(args.variants)
        if "compiled" in args.paths:
            if args.data in ("synthetic", "both"):
                results.append(
                    benchmark.bench_keras_train(
                        model,
                        name=label,
                        batch_size=args.batch_size,
                        steps_per_execution=args.steps_per_execution,
                        devices=args.devices,
                        profile_dir=args.profile,
                        sync_batch_norm=args.sync_batch_norm,
                        **common,
                    )
                )
                print(benchmark.format_table(results[-1:]), flush=True)
            if dataset is not None:
                results.append(
                    benchmark.bench_keras_train(
                        model,
                        name=label,
                        batch_size=args.batch_size,
                        steps_per_execution=args.steps_per_execution,
                        devices=args.devices,
                        real=(dataset.x_train, dataset.y_train.astype("int32")),
                        dataset=dataset.name,
                        **common,
                    )
                )
                print(benchmark.format_table(results[-1:]), flush=True)
        if "pipeline" in args.paths:
            import tempfile

            pipeline_overrides = {**model_overrides(args), **options}
            pipeline_overrides.setdefault("stem", "imagenet")
            if args.pipeline_no_augment:
                pipeline_overrides["augment"] = False
            results.append(
                benchmark.bench_pipeline(
                    name,
                    dataset,
                    label=label,
                    batch_size=args.batch_size,
                    epochs=args.pipeline_epochs,
                    precision=args.precision,
                    steps_per_execution=args.steps_per_execution,
                    output_dir=tempfile.mkdtemp(prefix="bench_pipeline_"),
                    overrides=pipeline_overrides,
                    peak_flops=peak,
                    flops_per_image=count_flops(model),
                )
            )
            print(benchmark.format_table(results[-1:]), flush=True)
        if "fit" in args.paths:
            results.append(
                benchmark.bench_keras_fit(
                    model,
                    name=label,
                    batch_size=args.batch_size,
                    steps_per_execution=args.steps_per_execution,
                    steps=args.steps,
                    precision=args.precision,
                    peak_flops=peak,
                )
            )
            print(benchmark.format_table(results[-1:]), flush=True)
        if not args.no_inference:
            results.append(
                benchmark.bench_keras_infer(model, name=label, batch_size=args.batch_size, **common)
            )
            print(benchmark.format_table(results[-1:]), flush=True)

    if any(p.startswith("keras") for p in args.peers):
        app = keras.applications.ResNet50(weights=None, input_shape=shape, classes=args.num_classes)
        app_name = "keras.applications.ResNet50"
        if "keras-fit" in args.peers:
            results.append(
                benchmark.bench_keras_fit(
                    app,
                    name=app_name,
                    batch_size=args.batch_size,
                    steps=args.steps,
                    precision=args.precision,
                    peak_flops=peak,
                )
            )
            print(benchmark.format_table(results[-1:]), flush=True)
        if "keras-compiled" in args.peers:
            results.append(
                benchmark.bench_keras_train(
                    app, name=app_name, batch_size=args.batch_size, **common
                )
            )
            print(benchmark.format_table(results[-1:]), flush=True)
    if any(p.startswith("torch") for p in args.peers):
        if importlib.util.find_spec("torchvision") is None:
            print("torchvision is not installed: torch peers skipped", file=sys.stderr)
        else:
            # torchvision's resnet50 is v1.5, as ours (keras.applications' is v1, 6% fewer).
            flops_r50 = count_flops(
                get_model("resnet50", input_shape=shape, num_classes=args.num_classes)
            )
            for compiled in (False, True):
                if ("torch-compile" if compiled else "torch") not in args.peers:
                    continue
                results.append(
                    benchmark.bench_torchvision(
                        "resnet50",
                        batch_size=args.batch_size,
                        image_size=size,
                        compile=compiled,
                        num_classes=args.num_classes,
                        in_channels=args.channels,
                        flops_per_image=flops_r50,
                        **common,
                    )
                )
                print(benchmark.format_table(results[-1:]), flush=True)
    return results, info, benchmark.ratios(results)


if __name__ == "__main__":
    sys.exit(main())
