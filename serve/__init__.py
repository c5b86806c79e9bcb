"""Serves the exported ONNX models over HTTP with onnxruntime."""

__version__ = "1.0.0"
