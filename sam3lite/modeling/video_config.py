"""``Sam3VideoConfig``: the ``sam3_video`` config of facebook/sam3's hub file (transformers' ``Sam3VideoModel``).

It nests the detector's config (``sam3`` or ``sam3_lite_text``) and the tracker's (``sam3_tracker_video``)
and holds the detect-and-track settings of text-prompted video (defaults = transformers' defaults).
A model with a tracker carries one (``model.video_config``) and is saved in this layout.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from .config import Sam3LiteTextConfig, _Config
from .tracker.config import TrackerConfig

VIDEO_MODEL_TYPE = "sam3_video"


@dataclass
class Sam3VideoConfig(_Config):
    """Detector + tracker + detect-and-track settings."""

    model_type: str = VIDEO_MODEL_TYPE
    detector_config: Sam3LiteTextConfig = field(default_factory=Sam3LiteTextConfig)
    tracker_config: TrackerConfig = field(default_factory=TrackerConfig)
    initializer_range: float = 0.02
    # Detect-and-track (text prompts on video): detection, association, track birth and removal.
    low_res_mask_size: int = 288
    score_threshold_detection: float = 0.5
    det_nms_thresh: float = 0.1
    assoc_iou_thresh: float = 0.1
    trk_assoc_iou_thresh: float = 0.5
    new_det_thresh: float = 0.7
    recondition_on_trk_masks: bool = True
    hotstart_delay: int = 15
    hotstart_unmatch_thresh: int = 8
    hotstart_dup_thresh: int = 8
    suppress_unmatched_only_within_hotstart: bool = True
    init_trk_keep_alive: int = 30
    max_trk_keep_alive: int = 30
    min_trk_keep_alive: int = -1
    suppress_overlapping_based_on_recent_occlusion_threshold: float = 0.7
    decrease_trk_keep_alive_for_empty_masklets: bool = False
    fill_hole_area: int = 16
    max_num_objects: int = 10000
    recondition_every_nth_frame: int = 16
    high_conf_thresh: float = 0.8
    high_iou_thresh: float = 0.8

    _nested: ClassVar[dict[str, Any]] = {"detector_config": Sam3LiteTextConfig, "tracker_config": TrackerConfig}

    @classmethod
    def combine(cls, detector: Sam3LiteTextConfig, tracker: TrackerConfig, **settings: Any) -> Sam3VideoConfig:
        """A video config around an existing detector config (kept as the same object) and a tracker."""
        return cls.from_dict({**settings, "detector_config": detector, "tracker_config": tracker})

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out.setdefault("architectures", ["Sam3VideoModel"])
        return out

    def to_json_file(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")

    def validate(self) -> None:
        if self.model_type != VIDEO_MODEL_TYPE:
            raise ValueError(f"Sam3VideoConfig.model_type must be {VIDEO_MODEL_TYPE!r}, got {self.model_type!r}")
        check_tracker_fits(self.detector_config, self.tracker_config)


def check_tracker_fits(detector: Sam3LiteTextConfig, tracker: TrackerConfig) -> None:
    """The tracker reads the detector's ViT through its own neck: widths and image size must agree."""
    vision = detector.vision_config
    problems = []
    if tracker.hidden_size != vision.fpn_hidden_size:
        problems.append(f"tracker width {tracker.hidden_size} != detector FPN width {vision.fpn_hidden_size}")
    if tracker.image_size != detector.image_size:
        problems.append(f"tracker image size {tracker.image_size} != detector image size {detector.image_size}")
    if tracker.grid_size != vision.backbone_config.image_size // vision.backbone_config.patch_size:
        problems.append(f"tracker grid {tracker.grid_size} != the ViT's patch grid")
    if problems:
        raise ValueError("the tracker does not fit this detector: " + "; ".join(problems))
