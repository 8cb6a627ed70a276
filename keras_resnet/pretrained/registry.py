"""The registry's entries: torchvision's and timm's published ImageNet-1k weights (files,
reported top-1, data configs), and the weights `"imagenet"` stands for in each architecture.
The package registers them when it is imported."""

_TV_V1 = {"input_size": (3, 224, 224), "crop_pct": 0.875, "interpolation": "bilinear"}
# torchvision's V2 recipes evaluate at resize 232, crop 224.
_TV_V2 = {"input_size": (3, 224, 224), "crop_pct": 224 / 232, "interpolation": "bilinear"}

# torchvision: (architecture, weights enum, tag, file, top-1, data config), from
# torchvision 0.29's `<Enum>.<TAG>.url`, `.meta["_metrics"]` and `.transforms()`.
_TORCHVISION = [
    ("resnet18", "ResNet18_Weights", "IMAGENET1K_V1", "resnet18-f37072fd.pth", 69.758, _TV_V1),
    ("resnet34", "ResNet34_Weights", "IMAGENET1K_V1", "resnet34-b627a593.pth", 73.314, _TV_V1),
    ("resnet50", "ResNet50_Weights", "IMAGENET1K_V1", "resnet50-0676ba61.pth", 76.13, _TV_V1),
    ("resnet50", "ResNet50_Weights", "IMAGENET1K_V2", "resnet50-11ad3fa6.pth", 80.858, _TV_V2),
    ("resnet101", "ResNet101_Weights", "IMAGENET1K_V1", "resnet101-63fe2227.pth", 77.374, _TV_V1),
    ("resnet101", "ResNet101_Weights", "IMAGENET1K_V2", "resnet101-cd907fc2.pth", 81.886, _TV_V2),
    ("resnet152", "ResNet152_Weights", "IMAGENET1K_V1", "resnet152-394f9c45.pth", 78.312, _TV_V1),
    ("resnet152", "ResNet152_Weights", "IMAGENET1K_V2", "resnet152-f82ba261.pth", 82.284, _TV_V2),
    (
        "wide_resnet50_2",
        "Wide_ResNet50_2_Weights",
        "IMAGENET1K_V1",
        "wide_resnet50_2-95faca4d.pth",
        78.468,
        _TV_V1,
    ),
    (
        "wide_resnet50_2",
        "Wide_ResNet50_2_Weights",
        "IMAGENET1K_V2",
        "wide_resnet50_2-9ba9bcbe.pth",
        81.602,
        _TV_V2,
    ),
    (
        "resnext50_32x4d",
        "ResNeXt50_32X4D_Weights",
        "IMAGENET1K_V1",
        "resnext50_32x4d-7cdf4587.pth",
        77.618,
        _TV_V1,
    ),
    (
        "resnext50_32x4d",
        "ResNeXt50_32X4D_Weights",
        "IMAGENET1K_V2",
        "resnext50_32x4d-1a0047aa.pth",
        81.198,
        _TV_V2,
    ),
    # Registered only where keras_resnet.ARCHITECTURES names these architectures.
    (
        "wide_resnet101_2",
        "Wide_ResNet101_2_Weights",
        "IMAGENET1K_V1",
        "wide_resnet101_2-32ee1156.pth",
        78.848,
        _TV_V1,
    ),
    (
        "wide_resnet101_2",
        "Wide_ResNet101_2_Weights",
        "IMAGENET1K_V2",
        "wide_resnet101_2-d733dc28.pth",
        82.51,
        _TV_V2,
    ),
    (
        "resnext101_32x8d",
        "ResNeXt101_32X8D_Weights",
        "IMAGENET1K_V1",
        "resnext101_32x8d-8ba56ff5.pth",
        79.312,
        _TV_V1,
    ),
    (
        "resnext101_32x8d",
        "ResNeXt101_32X8D_Weights",
        "IMAGENET1K_V2",
        "resnext101_32x8d-110c445d.pth",
        82.834,
        _TV_V2,
    ),
    (
        "resnext101_64x4d",
        "ResNeXt101_64X4D_Weights",
        "IMAGENET1K_V1",
        "resnext101_64x4d-173b62eb.pth",
        83.246,
        _TV_V2,
    ),
]

_RSB = {"interpolation": "bicubic", "crop_pct": 1.0, "input_size": (3, 288, 288)}
_RA2 = {"interpolation": "bicubic", "crop_pct": 0.95, "input_size": (3, 288, 288)}
_RA2_320 = {"interpolation": "bicubic", "crop_pct": 1.0, "input_size": (3, 320, 320)}
_RA4 = {**_RSB, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
_TIMM_TV2 = {"interpolation": "bilinear", "crop_pct": 0.965, "input_size": (3, 224, 224)}

# timm: (name, license, top-1, data config). The data config is timm 1.0's pretrained_cfg at its
# test size (`resolve_data_config(use_test_size=True)`), where timm's results-imagenet.csv
# reports top-1 (the CSV's img_size and crop_pct). tv/tv2 files are torchvision's V1/V2 weights.
_TIMM = [
    ("resnet18.a1_in1k", "apache-2.0", 73.158, _RSB),
    ("resnet18.tv_in1k", "bsd-3-clause", 69.760, _TV_V1),
    ("resnet34.a1_in1k", "apache-2.0", 77.918, _RSB),
    # Not in timm's CSV; torchvision reports 73.314 for this file (resnet34-b627a593.pth).
    ("resnet34.tv_in1k", "bsd-3-clause", 73.314, _TV_V1),
    ("resnet50.a1_in1k", "apache-2.0", 81.214, _RSB),
    ("resnet50.a1h_in1k", "apache-2.0", 80.676, {**_RSB, "input_size": (3, 224, 224)}),
    ("resnet50.tv_in1k", "bsd-3-clause", 76.130, _TV_V1),
    ("resnet50.tv2_in1k", "bsd-3-clause", 80.850, _TIMM_TV2),
    ("resnet101.a1h_in1k", "apache-2.0", 82.778, _RSB),
    ("resnet101.tv_in1k", "bsd-3-clause", 77.376, _TV_V1),
    ("resnet101.tv2_in1k", "bsd-3-clause", 81.890, _TIMM_TV2),
    ("resnet152.a1h_in1k", "apache-2.0", 83.450, _RSB),
    ("resnet152.tv_in1k", "bsd-3-clause", 78.322, _TV_V1),
    ("resnet152.tv2_in1k", "bsd-3-clause", 82.288, _TIMM_TV2),
    ("resnet18d.ra2_in1k", "apache-2.0", 73.794, _RA2),
    # No published top-1 found for resnet18d's ra4 weights.
    ("resnet18d.ra4_e3600_r224_in1k", "apache-2.0", None, _RA4),
    ("resnet34d.ra2_in1k", "apache-2.0", 78.436, _RA2),
    ("resnet50d.ra2_in1k", "apache-2.0", 81.356, _RA2),
    ("resnet50d.a1_in1k", "apache-2.0", 81.450, _RSB),
    # timm's model card (288 px; 80.952 at 224).
    ("resnet50d.ra4_e3600_r224_in1k", "apache-2.0", 81.838, _RA4),
    ("resnet101d.ra2_in1k", "apache-2.0", 83.016, _RA2_320),
    ("resnet152d.ra2_in1k", "apache-2.0", 83.684, _RA2_320),
    ("wide_resnet50_2.racm_in1k", "apache-2.0", 82.280, _RA2),
    ("wide_resnet50_2.tv_in1k", "bsd-3-clause", 78.480, _TV_V1),
    ("wide_resnet50_2.tv2_in1k", "bsd-3-clause", 81.606, _TIMM_TV2),
    ("resnext50_32x4d.a1h_in1k", "apache-2.0", 82.014, _RSB),
    ("resnext50_32x4d.tv_in1k", "bsd-3-clause", 77.618, _TV_V1),
    ("resnext50_32x4d.tv2_in1k", "bsd-3-clause", 81.182, _TIMM_TV2),
    # Registered only where keras_resnet.ARCHITECTURES names these architectures.
    ("wide_resnet101_2.tv_in1k", "bsd-3-clause", 78.838, _TV_V1),
    ("wide_resnet101_2.tv2_in1k", "bsd-3-clause", 82.498, _TIMM_TV2),
    ("resnext101_32x8d.tv_in1k", "bsd-3-clause", 79.310, _TV_V1),
    ("resnext101_32x8d.tv2_in1k", "bsd-3-clause", 82.832, _TIMM_TV2),
    ("resnext101_64x4d.tv_in1k", "bsd-3-clause", 82.992, _TV_V1),
    ("resnext101_64x4d.c1_in1k", "apache-2.0", 83.156, _RSB),
]

# "imagenet": the highest top-1 among each architecture's .safetensors (timm) entries.
_BEST = {
    "resnet18": "resnet18.a1_in1k",
    "resnet34": "resnet34.a1_in1k",
    "resnet50": "resnet50.a1_in1k",
    "resnet101": "resnet101.a1h_in1k",
    "resnet152": "resnet152.a1h_in1k",
    "resnet18d": "resnet18d.ra2_in1k",
    "resnet34d": "resnet34d.ra2_in1k",
    "resnet50d": "resnet50d.ra4_e3600_r224_in1k",
    "resnet101d": "resnet101d.ra2_in1k",
    "resnet152d": "resnet152d.ra2_in1k",
    "wide_resnet50_2": "wide_resnet50_2.racm_in1k",
    "resnext50_32x4d": "resnext50_32x4d.a1h_in1k",
    "wide_resnet101_2": "wide_resnet101_2.tv2_in1k",
    "resnext101_32x8d": "resnext101_32x8d.tv2_in1k",
    "resnext101_64x4d": "resnext101_64x4d.c1_in1k",
}
