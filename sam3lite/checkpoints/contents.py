"""What a checkpoint holds, part by part, whatever its layout.

Three layouts reach the loader:

- ``detector``: transformers' ``Sam3LiteTextModel`` / ``Sam3Model`` files (the LiteText hub repos);
- ``sam3_video``: transformers' ``Sam3VideoModel`` files (facebook/sam3's hub repo): the detector under
  ``detector_model.``, the SAM3 tracker under ``tracker_model.`` (``tracker_model.tracker_model.`` as
  transformers 5.23's ``save_pretrained`` writes it) and the tracker's FPN neck under ``tracker_neck.``;
- ``original``: EfficientSAM3 / SAM3 ``.pt`` files (converted on read, see ``convert`` and
  ``convert_tracker``: the tracker and its neck land in the same parts as a ``sam3_video`` file's).

Every tensor lands in exactly one part; tensors of parts sam3lite does not run are kept and named in
``unused`` (``sam3lite info`` lists them), never dropped silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..modeling.config import Sam3LiteTextConfig

VIDEO_MODEL_TYPE = "sam3_video"
# (prefix in the file, part); the longer tracker prefix first: transformers 5.23 writes it doubled.
_VIDEO_PREFIXES = (
    ("detector_model.", "detector"),
    ("tracker_model.tracker_model.", "tracker"),
    ("tracker_model.", "tracker"),
    ("tracker_neck.", "tracker_neck"),
)


@dataclass
class CheckpointContents:
    """A checkpoint split into parts, each a state dict in sam3lite's (= the HF) module names.

    config: the detector's config. detector: its tensors (``vision_encoder.*``, ``text_encoder.*``, ...).
    tracker / tracker_neck: the SAM3 tracker (``tracker_model.*`` without the prefix) and its FPN neck,
        with ``tracker_config`` (the HF ``sam3_tracker_video`` dict); empty when the file has none.
    video_config: the ``sam3_video`` settings beside the two sub-configs (detect-and-track thresholds).
    unused: part name -> (number of tensors, why sam3lite does not load them).
    tracker_error: why an original ``.pt``'s tracker could not be converted (its tensors are then listed
        in ``unused`` under "tracker"; loading the file with its tracker raises this reason).
    """

    source: Path
    layout: str
    config: Sam3LiteTextConfig
    detector: dict[str, torch.Tensor]
    tracker: dict[str, torch.Tensor] = field(default_factory=dict)
    tracker_neck: dict[str, torch.Tensor] = field(default_factory=dict)
    tracker_config: dict[str, Any] | None = None
    video_config: dict[str, Any] | None = None
    unused: dict[str, tuple[int, str]] = field(default_factory=dict)
    tracker_error: str | None = None

    @property
    def has_tracker(self) -> bool:
        """The file holds a tracker (converted, or not convertible: see ``tracker_error``)."""
        return bool(self.tracker) or self.tracker_error is not None

    def parameter_count(self, part: str) -> int:
        return sum(t.numel() for t in getattr(self, part).values())


def is_video_config(data: dict[str, Any]) -> bool:
    return data.get("model_type") == VIDEO_MODEL_TYPE or isinstance(data.get("detector_config"), dict)


def split_video_state(state: dict[str, torch.Tensor]) -> tuple[dict[str, dict[str, torch.Tensor]], list[str]]:
    """``sam3_video`` tensors -> {"detector": ..., "tracker": ..., "tracker_neck": ...} with the prefixes
    removed, and the keys under none of the prefixes (the caller reports them)."""
    parts: dict[str, dict[str, torch.Tensor]] = {"detector": {}, "tracker": {}, "tracker_neck": {}}
    stray: list[str] = []
    for key, tensor in state.items():
        for prefix, part in _VIDEO_PREFIXES:
            if key.startswith(prefix):
                name = key[len(prefix) :]
                if name in parts[part]:
                    raise ValueError(f"two keys map to {part} tensor {name!r} (both {prefix}{name} and another)")
                parts[part][name] = tensor
                break
        else:
            stray.append(key)
    return parts, stray
