"""Experiments run from a source checkout; not part of the installed `keras_resnet` package."""
