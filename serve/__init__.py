"""Serves the exported ONNX models over HTTP with onnxruntime."""
