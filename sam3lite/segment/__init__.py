"""The ``sam3lite segment`` run: inputs, sharding over torchrun ranks, outputs, merge, summary.

Modules: ``inputs`` (which images, output names, shards), ``dataset`` (COCO dataset input,
prompts, boxes), ``data`` (DataLoader decoding), ``writer`` (atomic outputs, resume), ``overlay``
(pictures), ``coco`` (results.json), ``distributed`` (ranks), ``summary``, ``runner`` (the loop).
"""

from .runner import SegmentOptions, run

__all__ = ["SegmentOptions", "run"]
