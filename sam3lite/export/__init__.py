"""Exporting a model for deployment without PyTorch: ONNX graphs, a manifest and the tokenizer.

``to_onnx(model, directory)`` writes what ``sam3lite.onnx.OnnxPredictor`` (or any ONNX runtime)
runs; see docs/export.md. A feature package: it builds on ``modeling`` and ``portable``; only
``cli`` and ``bench`` import it. Needs the ``onnx`` extra (``pip install sam3lite[onnx]``).
"""

from .graphs import HeadsGraph, ImageEncoderGraph, TextEncoderGraph
from .onnx import SUPPORTED_OPSETS, ExportError, to_onnx

__all__ = ["SUPPORTED_OPSETS", "ExportError", "HeadsGraph", "ImageEncoderGraph", "TextEncoderGraph", "to_onnx"]
