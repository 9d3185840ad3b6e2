"""``sam3lite bench``: sam3lite against transformers' reference, same weights and inputs, one process.

``image``: the detector (image encoder, prompts, load to first result, int8). A feature package:
it builds on ``predictor``, ``checkpoints`` and ``processing``; only ``cli`` imports it.
"""

from .image import BenchSettings, PeakMemory, format_markdown, median_time, run, save

__all__ = ["BenchSettings", "PeakMemory", "format_markdown", "median_time", "run", "save"]
