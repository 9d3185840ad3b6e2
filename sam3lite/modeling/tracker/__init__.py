"""SAM3's tracker (SAM 2 lineage): click/box/mask prompts on one image, and memory for video.

- ``config``: ``TrackerConfig`` (``sam3_tracker_video``) with prompt-encoder and mask-decoder configs;
- ``prompt_encoder``, ``mask_decoder``: the image part; ``memory_encoder``, ``memory_attention``: the
  video part; ``memory_selection``: which memories a frame reads (pure functions);
- ``model``: ``Sam3Tracker``, whose state dict is the ``tracker_model.*`` block of a ``sam3_video``
  checkpoint. The tracker's FPN neck is a ``sam3lite.modeling.vision.VisionNeck`` (``tracker_neck.*``).
"""

from .config import TrackerConfig, TrackerMaskDecoderConfig, TrackerPromptEncoderConfig
from .memory_selection import MemorySelection, ObjectMemory, gather_memory, select_memory
from .model import Sam3Tracker, TrackerImageFeatures, TrackerOutput, TrackStepOutput

__all__ = [
    "MemorySelection",
    "ObjectMemory",
    "Sam3Tracker",
    "TrackStepOutput",
    "TrackerConfig",
    "TrackerImageFeatures",
    "TrackerMaskDecoderConfig",
    "TrackerOutput",
    "TrackerPromptEncoderConfig",
    "gather_memory",
    "select_memory",
]
