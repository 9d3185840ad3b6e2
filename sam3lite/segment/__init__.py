"""The ``sam3lite segment`` run: inputs, sharding over torchrun ranks, outputs, merge, summary.

Modules: ``inputs`` (which images, output names, shards), ``dataset`` (COCO dataset input,
prompts, boxes), ``data`` (DataLoader decoding), ``writer`` (atomic outputs, resume), ``overlay``
(pictures), ``coco`` (results.json), ``outdir`` (run settings, which files are ours), ``distributed``
(ranks), ``summary``, ``runner`` (the loop).
"""

from .coco import load_results
from .runner import SegmentOptions, run

__all__ = ["SegmentOptions", "load_results", "run"]
