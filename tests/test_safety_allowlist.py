"""The SavedModel check is an allow-list (keras_resnet.serving.safety): a `serve` that calls a
checkpoint op (`Save`, or `SaveV2`/`MergeV2Checkpoints` with a path of its own), `WriteFile` or
an op no exported classifier uses is refused with one line and never runs; the package's own
exports (the models tests/test_export.py builds, other architectures, mixed precision) pass.
The check parses saved_model.pb the same way whatever the Keras backend: TensorFlow only."""

from __future__ import annotations

import os
from pathlib import Path

import keras
import pytest
from test_export import HAS_TF, _cli_error, _png, _stand_in

import keras_resnet
from keras_resnet.serving import export as export_lib
from keras_resnet.serving import predict as inference
from keras_resnet.serving import safety

pytestmark = [
    pytest.mark.skipif(not HAS_TF, reason="a SavedModel needs TensorFlow"),
    pytest.mark.one_backend("tensorflow"),
]


def _module_saved_model(folder: Path, side_effect) -> Path:
    """A SavedModel of a tf.Module whose `serve` runs `images = side_effect(tf, images)` and
    returns probabilities of 10 classes."""
    import tensorflow as tf

    class Classifier(tf.Module):
        def __init__(self):
            super().__init__()
            self.scale = tf.Variable(1.0)

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 1], tf.float32)])
        def serve(self, images):
            images = side_effect(tf, images)
            return tf.nn.softmax(tf.zeros([tf.shape(images)[0], 10]) * self.scale)

    module = Classifier()
    tf.saved_model.save(module, os.fspath(folder), signatures={"serving_default": module.serve})
    return folder


def _hostile(kind: str, target: Path):
    """`serve` side effects that reach `target` (a file of the user's)."""
    path = os.fspath(target)

    def effect(tf, images):
        if kind == "Save":  # the legacy checkpoint op: writes any file named in the graph
            tf.raw_ops.Save(filename=path, tensor_names=["x"], data=[images])
        elif kind == "SaveV2":
            tf.raw_ops.SaveV2(
                prefix=path, tensor_names=["x"], shape_and_slices=[""], tensors=[images]
            )
        elif kind == "MergeV2Checkpoints":  # moves another checkpoint's files onto `target`
            tf.raw_ops.MergeV2Checkpoints(
                checkpoint_prefixes=[path + "-other"], destination_prefix=path
            )
        elif kind == "WriteFile":
            tf.io.write_file(path, "written by the model")
        elif kind == "DebugIdentityV2":  # on no deny-list: dumps its input under a folder
            return tf.raw_ops.DebugIdentityV2(input=images, debug_urls=[f"file://{path}"])
        return images

    return effect


@pytest.mark.parametrize(
    "op", ["Save", "SaveV2", "MergeV2Checkpoints", "WriteFile", "DebugIdentityV2"]
)
def test_a_serve_that_reaches_files_is_refused_in_one_line(op, tmp_path, capsys):
    target = tmp_path / "users_file.txt"
    target.write_text("the user's data")
    model = _module_saved_model(tmp_path / "model", _hostile(op, target))
    image = _png(tmp_path / "a.png", "L", (32, 32), 5)
    err = _cli_error(capsys, "predict", [os.fspath(model), os.fspath(image)])
    assert f"{op} (" in err and "--trust-model" in err
    with pytest.raises(ValueError, match=op) as info:
        inference.load_predictor(model)
    assert "\n" not in str(info.value)
    assert target.read_text() == "the user's data"  # nothing ran
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "model", "users_file.txt"]


def _tamper(folder: Path, change) -> Path:
    """Rewrites saved_model.pb after `change(meta_graph)`."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((folder / "saved_model.pb").read_bytes())
    change(proto.meta_graphs[0])
    (folder / "saved_model.pb").write_bytes(proto.SerializeToString())
    return folder


def _function(meta_graph, part: str):
    (function,) = [f for f in meta_graph.graph_def.library.function if part in f.signature.name]
    return function


def test_an_unknown_op_is_refused(tmp_path):
    model = _module_saved_model(tmp_path / "model", lambda tf, images: images)
    assert safety.scan_saved_model(model) == []

    def rename_softmax(meta_graph):
        for function in meta_graph.graph_def.library.function:
            for node in function.node_def:
                if node.op == "Softmax":
                    node.op = "NotAnOpOfTensorFlow"

    _tamper(model, rename_softmax)
    (refused,) = safety.scan_saved_model(model)  # modelscan calls an unknown op 'medium'
    assert refused.startswith("NotAnOpOfTensorFlow (")
    with pytest.raises(ValueError, match="NotAnOpOfTensorFlow") as info:
        safety.check_saved_model(model)
    assert "\n" not in str(info.value)
    safety.check_saved_model(model, trust=True)  # --trust-model: not checked


def test_the_savers_checkpoint_ops_need_the_variables_prefix(tmp_path):
    """SaveV2 inside the saver's own function passes with the prefix the loader gives; the
    same function saving to a constant path of its own is refused."""
    model = _module_saved_model(tmp_path / "model", lambda tf, images: images)
    assert safety.scan_saved_model(model) == []

    def save_elsewhere(meta_graph):
        function = _function(meta_graph, "_traced_save")
        (save,) = [node for node in function.node_def if node.op == "SaveV2"]
        path = function.node_def.add(name="elsewhere", op="Const")
        path.attr["dtype"].type = 7  # DT_STRING
        path.attr["value"].tensor.dtype = 7
        path.attr["value"].tensor.string_val.append(os.fsencode(tmp_path / "users_file"))
        save.input[0] = "elsewhere:output:0"

    _tamper(model, save_elsewhere)
    assert safety.scan_saved_model(model) == [
        "SaveV2 (a file name other than the variables' prefix)"
    ]


def test_a_saver_joining_its_prefix_to_another_path_is_refused(tmp_path):
    model = _module_saved_model(tmp_path / "model", lambda tf, images: images)

    def join_elsewhere(meta_graph):
        function = _function(meta_graph, "_traced_save")
        (join,) = [node for node in function.node_def if node.op == "StringJoin"]
        join.attr["separator"].s = b"/../../users_file"

    _tamper(model, join_elsewhere)
    assert safety.scan_saved_model(model) == [
        "MergeV2Checkpoints (a file name other than the variables' prefix)",
        "SaveV2 (a file name other than the variables' prefix)",
    ]


def test_checkpoint_ops_called_from_serve_through_a_nested_function_are_refused(tmp_path):
    import tensorflow as tf

    target = tmp_path / "users_file"

    @tf.function
    def nested(images):
        tf.raw_ops.SaveV2(
            prefix=os.fspath(target), tensor_names=["x"], shape_and_slices=[""], tensors=[images]
        )
        return images

    model = _module_saved_model(tmp_path / "model", lambda tf_, images: nested(images))
    assert safety.scan_saved_model(model) == ["SaveV2 (outside the saver)"]


def _export(model: keras.Model, folder: Path, name: str, **options) -> Path:
    return export_lib.export_model(model, output_dir=folder, name=name, **options)


def test_a_mixed_precision_export_passes(tmp_path):
    """tests/test_export.py's model in mixed_bfloat16, exported as trained (its casts); the
    float32 one is test_export's `test_the_exports_own_saved_model_passes_the_scan`."""
    path = _export(_stand_in("mixed_bfloat16"), tmp_path, "mixed")
    assert safety.scan_saved_model(path) == []
    predictor = inference.load_predictor(path)  # loads without --trust-model
    assert predictor.kind == "saved_model" and predictor.image_shape == (32, 32, 1)


@pytest.mark.slow
def test_the_package_exports_pass_other_architectures(tmp_path):
    """Deep stem with average-pool downsampling, max pooling and dilated stages (output
    stride 8: SpaceToBatchND), a bottleneck ResNeXt with an ImageNet stem in float16."""
    models = {
        "resnet18d_os8": keras_resnet.get_model(
            18,
            stem="deep",
            downsample="avg",
            input_shape=(32, 32, 3),
            num_classes=4,
            width=0.125,
            pooling="max",
            output_stride=8,
            normalization="imagenet",
        ),
    }
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        models["resnext_f16"] = keras_resnet.get_model(
            50,
            input_shape=(64, 64, 3),
            num_classes=3,
            width=0.25,
            groups=4,
            width_per_group=8,
            dropout_rate=0.2,
            drop_path_rate=0.1,
        )
    finally:
        keras.config.set_dtype_policy(previous)
    for name, model in models.items():
        path = _export(model, tmp_path, name)
        assert safety.scan_saved_model(path) == [], name


@pytest.mark.slow
def test_the_package_exports_pass_every_stem_and_precision(tmp_path):
    for stem in ("imagenet", "cifar", "deep"):
        for policy in ("float32", "mixed_bfloat16"):
            previous = keras.config.dtype_policy()
            keras.config.set_dtype_policy(policy)
            try:
                model = keras_resnet.get_model(
                    34, input_shape=(48, 48, 3), num_classes=5, width=0.125, stem=stem
                )
            finally:
                keras.config.set_dtype_policy(previous)
            for float32 in (False, True):
                name = f"{stem}_{policy}_{int(float32)}"
                path = _export(model, tmp_path, name, float32=float32)
                assert safety.scan_saved_model(path) == [], name


def test_allow_list_holds_the_ops_the_serving_preprocessing_needs():
    """The crop-and-resize of a serving signature and its shape arithmetic (the ops that
    tf.image.resize, with antialias ScaleAndTranslate, and a computed crop box use)."""
    needed = {
        "StridedSlice", "Shape", "Cast", "Minimum", "Maximum", "ResizeBilinear",
        "ResizeBicubic", "ScaleAndTranslate", "Round", "Floor", "RealDiv", "Mul", "Sub",
        "Pack", "ConcatV2",
    }  # fmt: skip
    assert needed <= safety.ALLOWED_OPS
    assert not safety.CHECKPOINT_OPS & safety.ALLOWED_OPS
    assert not set(safety.EXTRA_UNSAFE_OPS) & safety.ALLOWED_OPS
