"""Is a SavedModel safe to load? It is a program: its functions run TensorFlow ops, and some ops
read, write or list files. A SavedModel from elsewhere is checked before TensorFlow loads it;
`--trust-model` skips the check.

**An allow-list, not a deny-list.** Every op of `saved_model.pb` (the graph and every function
of its library) must be one that an exported image classifier uses (`ALLOWED_OPS`: what the
package's own exports of every architecture, stem, precision and `serve` signature hold --
convolutions, batch norm, pooling, the resize and crop-resize of the preprocessing layers and
their shape arithmetic, softmax -- plus what loading a SavedModel needs: placeholders,
constants, variables, function calls). A deny-list misses what it does not name: the legacy
checkpoint op `Save` writes any file named by a constant, and `SaveV2`/`MergeV2Checkpoints`
do the same given another prefix.

**The checkpoint ops** (`CHECKPOINT_OPS`: `SaveV2`, `RestoreV2`, `MergeV2Checkpoints` and their
file-name ops) are allowed only inside the functions that the graph's `saver_def` calls (the
saver's save and restore, which TensorFlow's loaders run with the SavedModel's own
`variables/variables` prefix, never `serve`), and only where every file name they take is built
from that function's prefix argument (a constant suffix `.part` or `_temp/part` and a shard
number added, as TensorFlow writes it), never from a constant path written into the model.

**modelscan** (ProtectAI's maintained scanner, which flags the ops of its own list, ReadFile
and WriteFile among them, extended with `EXTRA_UNSAFE_OPS`) runs as well; its severity is
shown beside an op that both refuse ('WriteFile (high)').
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Iterable
from pathlib import Path

from keras_resnet.utils import installed, one_line

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
    # checkpoints: write or read any file named in the graph
    "Save": "HIGH",
    "SaveSlices": "HIGH",
    "Restore": "HIGH",
    "RestoreSlice": "HIGH",
    # Python
    "PyFunc": "HIGH",
    "PyFuncStateless": "HIGH",
    "EagerPyFunc": "HIGH",
}
TRUST_HINT = "pass --trust-model if you trust its source"

# What loading and calling a SavedModel needs: inputs, constants, variables, function calls.
SAVED_MODEL_OPS = frozenset(
    {
        "Placeholder",
        "PlaceholderWithDefault",
        "Const",
        "Identity",
        "IdentityN",
        "NoOp",
        "StopGradient",
        "StatefulPartitionedCall",
        "PartitionedCall",
        "VarHandleOp",
        "ReadVariableOp",
        "AssignVariableOp",
        "VarIsInitializedOp",
        "DisableCopyOnRead",
    }
)
# The network: convolutions (grouped and dilated), batch norm, pooling, activations, the head.
NETWORK_OPS = frozenset(
    {
        "Conv2D",
        "DepthwiseConv2dNative",
        "SpaceToBatchND",  # a dilated convolution
        "BatchToSpaceND",
        "BiasAdd",
        "MatMul",
        "BatchMatMulV2",
        "BatchMatMulV3",
        "Einsum",
        "FusedBatchNormV3",
        "AvgPool",
        "MaxPool",
        "Mean",
        "Max",
        "Min",
        "Sum",
        "Prod",
        "Relu",
        "Relu6",
        "Elu",
        "Selu",
        "Softplus",
        "Sigmoid",
        "Tanh",
        "Erf",
        "Softmax",
        "LogSoftmax",
        "Pad",
        "PadV2",
        "MirrorPad",
    }
)
# Element-wise arithmetic and comparisons (normalization, mixed-precision casts, the
# preprocessing layers' box and weight arithmetic).
ARITHMETIC_OPS = frozenset(
    {
        "Add",
        "AddV2",
        "AddN",
        "Sub",
        "Mul",
        "Div",
        "RealDiv",
        "DivNoNan",
        "FloorDiv",
        "FloorMod",
        "TruncateDiv",
        "Maximum",
        "Minimum",
        "Neg",
        "Abs",
        "Sign",
        "Square",
        "SquaredDifference",
        "Sqrt",
        "Rsqrt",
        "Reciprocal",
        "Pow",
        "Exp",
        "Log",
        "Floor",
        "Ceil",
        "Round",
        "Rint",
        "ClipByValue",
        "Cast",
        "Cumsum",
        "Less",
        "LessEqual",
        "Greater",
        "GreaterEqual",
        "Equal",
        "NotEqual",
        "LogicalAnd",
        "LogicalOr",
        "LogicalNot",
        "IsFinite",
        "IsNan",
        "Select",
        "SelectV2",
    }
)
# Shapes and layout: the input's size read at run time, crops, stacking.
SHAPE_OPS = frozenset(
    {
        "Shape",
        "ShapeN",
        "Size",
        "Rank",
        "StridedSlice",
        "Slice",
        "Reshape",
        "Transpose",
        "Squeeze",
        "ExpandDims",
        "Pack",
        "Unpack",
        "ConcatV2",
        "Split",
        "SplitV",
        "Tile",
        "BroadcastTo",
        "BroadcastArgs",
        "Range",
        "Fill",
        "ZerosLike",
        "OnesLike",
        "GatherV2",
        "Where",
    }
)
# Resizing and crop-resize (the serving signature's `Resizing` and preprocessing layers;
# tf.image.resize with antialias runs ScaleAndTranslate).
IMAGE_OPS = frozenset(
    {
        "ResizeBilinear",
        "ResizeBicubic",
        "ResizeNearestNeighbor",
        "ResizeArea",
        "ScaleAndTranslate",
        "CropAndResize",
    }
)
# Functional control flow: the branches and bodies are functions of the library, checked too.
CONTROL_FLOW_OPS = frozenset({"If", "StatelessIf", "While", "StatelessWhile", "Case"})
ALLOWED_OPS = (
    SAVED_MODEL_OPS | NETWORK_OPS | ARITHMETIC_OPS | SHAPE_OPS | IMAGE_OPS | CONTROL_FLOW_OPS
)
# Allowed inside the saver's functions only, with file names built from their prefix argument.
CHECKPOINT_OPS = frozenset(
    {
        "SaveV2",
        "RestoreV2",
        "MergeV2Checkpoints",
        "ShardedFilename",
        "StringJoin",
        "StaticRegexFullMatch",
    }
)
# The inputs of the checkpoint ops that are file names.
_PATH_INPUTS = {"SaveV2": (0,), "RestoreV2": (0,), "MergeV2Checkpoints": (0, 1)}
# The suffixes TensorFlow's saver adds to the prefix of the shards it writes.
_SHARD_SUFFIX = re.compile(r"^(\.part|_temp(_[0-9a-f]+)?/part)$")
# At most this many ops are named in the error line.
_NAMED_OPS = 12


def _function_refs(node) -> set[str]:
    """The functions a node calls: attributes holding a function (StatefulPartitionedCall's
    `f`, the branches and bodies of control flow) or a list of them."""
    names = set()
    for value in node.attr.values():
        if value.HasField("func"):
            names.add(value.func.name)
        if value.HasField("list"):
            names.update(f.name for f in value.list.func)
    return names


def _closure(roots: Iterable[str], calls: dict[str, set[str]]) -> set[str]:
    seen, stack = set(), list(roots)
    while stack:
        name = stack.pop()
        if name in seen or name not in calls:
            continue
        seen.add(name)
        stack.extend(calls[name])
    return seen


class _Function:
    """A function of the library, its nodes by name and its arguments."""

    def __init__(self, fdef):
        self.name = fdef.signature.name
        self.nodes = {node.name: node for node in fdef.node_def}
        self.args = [arg.name for arg in fdef.signature.input_arg]

    def source(self, ref: str):
        """The node an input reference comes from, or the argument's name (a str)."""
        name = ref.split(":")[0]
        return name if name in self.args else self.nodes.get(name)

    def data_inputs(self, node) -> list[str]:
        return [ref for ref in node.input if not ref.startswith("^")]

    def is_prefix_path(self, ref: str, depth: int = 0) -> bool:
        """Whether `ref` is a file name built from the prefix argument (the first) only."""
        source = self.source(ref)
        if depth > 32 or source is None:
            return False
        if isinstance(source, str):
            return bool(self.args) and source == self.args[0]
        inputs = self.data_inputs(source)
        if not inputs:
            return False
        if source.op == "Identity":
            return self.is_prefix_path(inputs[0], depth + 1)
        if source.op == "StringJoin":
            return (
                not source.attr["separator"].s  # joined as written: prefix + suffix
                and self.is_prefix_path(inputs[0], depth + 1)
                and all(self.is_shard_suffix(ref, depth + 1) for ref in inputs[1:])
            )
        if source.op == "ShardedFilename":
            return self.is_prefix_path(inputs[0], depth + 1) and all(
                self._is_const(ref) for ref in inputs[1:]
            )
        if source.op == "Pack":
            return all(self.is_prefix_path(ref, depth + 1) for ref in inputs)
        return False

    def is_shard_suffix(self, ref: str, depth: int) -> bool:
        """A constant shard suffix, or a Select between two of them."""
        source = self.source(ref)
        if depth > 32 or source is None or isinstance(source, str):
            return False
        if source.op == "Const":
            values = source.attr["value"].tensor.string_val
            return bool(values) and all(
                _SHARD_SUFFIX.match(v.decode("utf-8", "replace")) for v in values
            )
        if source.op in ("Select", "SelectV2"):
            inputs = self.data_inputs(source)
            return len(inputs) == 3 and all(
                self.is_shard_suffix(ref, depth + 1) for ref in inputs[1:]
            )
        return False

    def _is_const(self, ref: str) -> bool:
        source = self.source(ref)
        return not isinstance(source, str) and source is not None and source.op == "Const"


def _saver_roots(meta_graph) -> tuple[set[str], set[str]]:
    """The functions that the nodes named by the graph's `saver_def` call, and those nodes'
    names."""
    saver = meta_graph.saver_def
    names = {
        saver.save_tensor_name.split(":")[0],
        saver.restore_op_name.split(":")[0],
    } - {""}
    roots = set()
    for node in meta_graph.graph_def.node:
        if node.name in names:
            roots |= _function_refs(node)
    return roots, names


def allow_list_findings(meta_graph) -> dict[str, str]:
    """The ops of one MetaGraphDef that the allow-list refuses: op -> why."""
    library = {
        fdef.signature.name: _Function(fdef) for fdef in meta_graph.graph_def.library.function
    }
    calls = {
        name: {ref for n in f.nodes.values() for ref in _function_refs(n)}
        | {n.op for n in f.nodes.values() if n.op in library}
        for name, f in library.items()
    }
    saver_roots, saver_nodes = _saver_roots(meta_graph)
    # Functions reached from anything but the saver (a signature, the object graph, another
    # node, or no caller at all) are checked against the allow-list alone.
    main_refs = set()
    for node in meta_graph.graph_def.node:
        if node.name not in saver_nodes:
            main_refs |= _function_refs(node) | ({node.op} & set(library))
    saver_only = _closure(saver_roots, calls)
    strict = _closure((set(library) - saver_only) | main_refs, calls)
    checkpoint_functions = set(library) - strict

    found: dict[str, str] = {}
    for node in meta_graph.graph_def.node:
        if node.op not in ALLOWED_OPS and node.op not in library:
            found.setdefault(node.op, "not an op of an exported classifier")
    for name, function in library.items():
        saver = name in checkpoint_functions
        for node in function.nodes.values():
            if node.op in ALLOWED_OPS or node.op in library:
                continue
            if not (saver and node.op in CHECKPOINT_OPS):
                why = "outside the saver" if node.op in CHECKPOINT_OPS else None
                found.setdefault(node.op, why or "not an op of an exported classifier")
                continue
            inputs = function.data_inputs(node)
            for index in _PATH_INPUTS.get(node.op, ()):
                if index >= len(inputs) or not function.is_prefix_path(inputs[index]):
                    found.setdefault(node.op, "a file name other than the variables' prefix")
    return found


def _modelscan_severities() -> dict[str, str]:
    if not installed("modelscan"):
        return dict(EXTRA_UNSAFE_OPS)
    from modelscan.settings import DEFAULT_SETTINGS

    scanner = DEFAULT_SETTINGS["scanners"]["modelscan.scanners.SavedModelTensorflowOpScan"]
    return {**EXTRA_UNSAFE_OPS, **scanner["unsafe_tf_operators"]}


def _modelscan_findings(folder: Path) -> dict[str, str]:
    """The unsafe ops modelscan finds: op -> severity ('high')."""
    from modelscan.modelscan import ModelScan
    from modelscan.settings import DEFAULT_SETTINGS

    settings = copy.deepcopy(DEFAULT_SETTINGS)
    ops = settings["scanners"]["modelscan.scanners.SavedModelTensorflowOpScan"]
    ops["unsafe_tf_operators"] = {**EXTRA_UNSAFE_OPS, **ops["unsafe_tf_operators"]}
    report = ModelScan(settings=settings).scan(folder / "saved_model.pb")
    errors = report.get("errors") or []
    if errors:
        raise ValueError(
            f"cannot check SavedModel {os.fspath(folder)!r}: "
            f"{errors[0].get('description', errors[0])}"
        )
    return {
        str(issue.get("operator")): str(issue.get("severity", "")).lower()
        for issue in report.get("issues") or []
    }


def scan_saved_model(folder: str | os.PathLike) -> list[str]:
    """The ops of a SavedModel directory that the check refuses, sorted: 'op (why)', the
    why being modelscan's severity for an op of its list ('WriteFile (high)').

    Raises:
        ValueError: modelscan or TensorFlow is not installed, or the SavedModel cannot be
            read.
    """
    if not installed("modelscan"):
        raise ValueError(
            "checking a SavedModel needs modelscan, which is not installed (pip install "
            f"modelscan); {TRUST_HINT}"
        )
    if not installed("tensorflow"):
        raise ValueError(
            f"checking a SavedModel needs TensorFlow, which is not installed; {TRUST_HINT}"
        )
    from tensorflow.core.protobuf import saved_model_pb2

    folder = Path(folder)
    proto = saved_model_pb2.SavedModel()
    try:
        proto.ParseFromString((folder / "saved_model.pb").read_bytes())
    except Exception as error:  # noqa: BLE001 - an unreadable or malformed file: one line
        raise ValueError(
            f"cannot check SavedModel {os.fspath(folder)!r}: {one_line(error)}"
        ) from None
    severities = {op: level.lower() for op, level in _modelscan_severities().items()}
    found: dict[str, str] = {}
    for meta_graph in proto.meta_graphs:
        for op, why in allow_list_findings(meta_graph).items():
            found.setdefault(op, severities.get(op, why))
    found.update(_modelscan_findings(folder))  # its severity where it names the op too
    return sorted(f"{op} ({why})" for op, why in found.items())


def check_saved_model(folder: str | os.PathLike, *, trust: bool = False) -> None:
    """Raises a one-line `ValueError` when a SavedModel holds an op that the allow-list or
    modelscan refuses (see the module docstring), unless `trust`."""
    if trust:
        return
    refused = scan_saved_model(folder)
    if refused:
        named = ", ".join(refused[:_NAMED_OPS])
        more = f" and {len(refused) - _NAMED_OPS} more" if len(refused) > _NAMED_OPS else ""
        raise ValueError(
            f"SavedModel {os.fspath(folder)!r} holds ops that an exported classifier does not "
            f"use (they may reach the file system or run code): {named}{more}; refusing to "
            f"load it ({TRUST_HINT})"
        )
