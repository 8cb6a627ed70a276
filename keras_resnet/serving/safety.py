"""Is a SavedModel safe to load? It is a program: its functions run TensorFlow ops, and some ops
read, write or list files. A SavedModel from elsewhere is scanned with modelscan
(ProtectAI's maintained scanner, which parses `saved_model.pb` and flags the ops of its list)
before TensorFlow loads it; `--trust-model` skips the scan.

modelscan's own list holds ReadFile and WriteFile. The ops added below are TensorFlow ops
(tensorflow/core/ops) that also reach the file system or run Python, none of which an exported
image classifier needs. The ops every SavedModel holds to restore and save its variables
(RestoreV2, SaveV2, MergeV2Checkpoints) read and write only the SavedModel's own `variables/`
folder, on load, and are not flagged (modelscan does not flag them either).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

from keras_resnet.utils import installed

EXTRA_UNSAFE_OPS = {
    # file system
    "MatchingFiles": "HIGH",
    "ImmutableConst": "MEDIUM",  # memory-maps a file named in the graph
    "WholeFileReader": "HIGH",
    "WholeFileReaderV2": "HIGH",
    "TextLineDataset": "HIGH",
    "TFRecordDataset": "HIGH",
    "TFRecordDatasetV2": "HIGH",
    "FixedLengthRecordDataset": "HIGH",
    "FixedLengthRecordDatasetV2": "HIGH",
    "DatasetToTFRecord": "HIGH",
    "SaveDataset": "HIGH",
    "SaveDatasetV2": "HIGH",
    "LoadDataset": "HIGH",
    "CreateSummaryFileWriter": "HIGH",
    "CreateSummaryDbWriter": "HIGH",
    "WriteSummary": "HIGH",
    "WriteRawProtoSummary": "HIGH",
    "PrintV2": "MEDIUM",  # output_stream may name a file ("file://...")
    # Python
    "PyFunc": "HIGH",
    "PyFuncStateless": "HIGH",
    "EagerPyFunc": "HIGH",
}
TRUST_HINT = "pass --trust-model if you trust its source"


def scan_saved_model(folder: str | os.PathLike) -> list[str]:
    """The unsafe ops modelscan finds in a SavedModel directory, sorted ('op (severity)').

    Raises:
        ValueError: modelscan is not installed, or could not read the SavedModel.
    """
    if not installed("modelscan"):
        raise ValueError(
            "checking a SavedModel needs modelscan, which is not installed (pip install "
            f"modelscan); {TRUST_HINT}"
        )
    from modelscan.modelscan import ModelScan
    from modelscan.settings import DEFAULT_SETTINGS

    settings = copy.deepcopy(DEFAULT_SETTINGS)
    ops = settings["scanners"]["modelscan.scanners.SavedModelTensorflowOpScan"]
    ops["unsafe_tf_operators"] = {**EXTRA_UNSAFE_OPS, **ops["unsafe_tf_operators"]}
    report = ModelScan(settings=settings).scan(Path(folder) / "saved_model.pb")
    errors = report.get("errors") or []
    if errors:
        raise ValueError(
            f"cannot check SavedModel {os.fspath(folder)!r}: "
            f"{errors[0].get('description', errors[0])}"
        )
    found = {
        f"{issue.get('operator')} ({str(issue.get('severity', '')).lower()})"
        for issue in report.get("issues") or []
    }
    return sorted(found)


def check_saved_model(folder: str | os.PathLike, *, trust: bool = False) -> None:
    """Raises a one-line `ValueError` when a SavedModel holds ops that reach the file system
    or run Python (see the module docstring), unless `trust`."""
    if trust:
        return
    unsafe = scan_saved_model(folder)
    if unsafe:
        raise ValueError(
            f"SavedModel {os.fspath(folder)!r} holds ops that reach the file system or run "
            f"code: {', '.join(unsafe)}; refusing to load it ({TRUST_HINT})"
        )
