"""The export formats by name, in a module that imports nothing: `keras-resnet export --help`
lists them before Keras is imported, and `keras_resnet.serving.export` resolves them."""

FORMATS = ("saved_model", "onnx", "keras", "litert")
# Other names accepted: Keras' name of the SavedModel format (`model.export(format=...)`) and
# LiteRT's former name.
FORMAT_ALIASES = {"tf_saved_model": "saved_model", "savedmodel": "saved_model", "tflite": "litert"}
