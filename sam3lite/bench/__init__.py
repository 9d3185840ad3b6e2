"""``sam3lite bench``: sam3lite against transformers' reference, same weights and inputs, one process.

``image``: the detector (image encoder, prompts, load to first result, int8); ``onnx``: ONNX Runtime
float32 and int8 against the PyTorch path and transformers. A feature package: it builds on
``predictor``, ``checkpoints``, ``processing``, ``export`` and ``onnx``; only ``cli`` imports it.
"""

from .image import BenchSettings, PeakMemory, format_markdown, median_time, run, save

__all__ = ["BenchSettings", "PeakMemory", "format_markdown", "median_time", "run", "save"]
