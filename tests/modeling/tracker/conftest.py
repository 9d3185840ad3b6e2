"""Fixtures of the tracker tests: one tiny ``sam3_video`` checkpoint (facebook/sam3's hub layout) per
session, and our ViT + tracker neck + tracker loaded strictly from it.

Our ViT and neck are loaded here from the raw tensors (``detector_model.vision_encoder.backbone.*``,
``tracker_neck.*``): the tests exercise the tracker, not the checkpoint loader of the whole model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from reference import save_video_reference, tiny_video_config_dict
from safetensors.torch import load_file

from sam3lite.checkpoints import load_state_dict_strict
from sam3lite.modeling.config import Sam3LiteTextConfig
from sam3lite.modeling.tracker import Sam3Tracker, TrackerConfig, TrackerImageFeatures
from sam3lite.modeling.vision import VisionNeck, ViT


@dataclass
class TrackerCheckpoint:
    directory: Path
    config: dict  # the whole sam3_video config.json
    state: dict[str, torch.Tensor]

    def block(self, prefix: str) -> dict[str, torch.Tensor]:
        """The tensors under ``prefix``, prefix stripped."""
        return {k[len(prefix) :]: v for k, v in self.state.items() if k.startswith(prefix)}


@dataclass
class OurTracker:
    vit: ViT
    neck: VisionNeck
    tracker: Sam3Tracker

    @torch.no_grad()
    def features(self, pixels: torch.Tensor) -> TrackerImageFeatures:
        """pixels [N, 3, S, S] -> tracker features (one ViT pass, the tracker neck, prepare_image)."""
        levels, _ = self.neck(self.vit(pixels).permute(0, 3, 1, 2))
        return self.tracker.prepare_image(levels)


@pytest.fixture(scope="session")
def tracker_checkpoint(tmp_path_factory) -> TrackerCheckpoint:
    directory = tmp_path_factory.mktemp("sam3_video")
    save_video_reference(tiny_video_config_dict("s0"), directory, seed=0)
    config = json.loads((directory / "config.json").read_text())
    return TrackerCheckpoint(directory, config, load_file(str(directory / "model.safetensors")))


def load_ours(checkpoint: TrackerCheckpoint) -> OurTracker:
    vision = Sam3LiteTextConfig.from_dict(checkpoint.config).vision_config
    vit = ViT(vision.backbone_config).eval()
    load_state_dict_strict(vit, checkpoint.block("detector_model.vision_encoder.backbone."))
    neck = VisionNeck(vision).eval()
    load_state_dict_strict(neck, checkpoint.block("tracker_neck."))
    tracker = Sam3Tracker(TrackerConfig.from_dict(checkpoint.config["tracker_config"])).eval()
    load_state_dict_strict(tracker, checkpoint.block("tracker_model."))
    return OurTracker(vit, neck, tracker)


@pytest.fixture(scope="session")
def ours(tracker_checkpoint) -> OurTracker:
    return load_ours(tracker_checkpoint)
