"""Train both models and export them to ONNX.

Importing the package pins torch's CPU-dependent numerical paths before anything imports torch, so
that every machine trains the same model (see `export/reproducible.py`).
"""

from export.reproducible import pin

pin()
