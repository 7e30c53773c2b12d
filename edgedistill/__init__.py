"""edgedistill: distil a sentence-embedding model into a small INT8 ONNX model for edge apps."""

__version__ = "0.1.0"
