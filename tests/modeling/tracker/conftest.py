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
from safetensors.torch import load_file, save_file

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


# With ``reference.randomize_`` weights alone the tiny tracker tracks degenerately: every object's mask
# drifts to the same image-driven blob (masks of different objects reach IoU 0.99) and every object stays
# "present". These factors make the memory matter, so that objects keep different masks (their logits stay
# more than 3% apart on every frame of the video scenario), and shift the object score so that some
# object-frames are judged absent (exercising the no-object pointer, the occlusion embedding and the
# -1024 masks) while every score stays at least 2e-3 away from 0 (100x its float error).
TRACKING_SCALES = {
    "cross_attn_image.o_proj.": 2.0,  # the memory read-out weighs more in the conditioned features
    "mask_downsampler.final_conv.": 3.0,  # the mask weighs more in the memory
    "mask_decoder.conv_s0.": 0.1,  # the memory-independent high-res detail weighs less in the masks
    "mask_decoder.conv_s1.": 0.1,
}
OBJECT_SCORE_SHIFT = -0.4


def scale_for_tracking(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        if key.startswith("tracker_model."):
            for part, factor in TRACKING_SCALES.items():
                if part in key:
                    value = value * factor
            if key.endswith("pred_obj_score_head.proj_out.bias"):
                value = value + OBJECT_SCORE_SHIFT
        out[key] = value.contiguous()
    return out


@pytest.fixture(scope="session")
def tracker_checkpoint(tmp_path_factory) -> TrackerCheckpoint:
    directory = tmp_path_factory.mktemp("sam3_video")
    save_video_reference(tiny_video_config_dict("s0"), directory, seed=0)
    weights = directory / "model.safetensors"
    state = scale_for_tracking(load_file(str(weights)))
    save_file(state, str(weights), metadata={"format": "pt"})
    config = json.loads((directory / "config.json").read_text())
    return TrackerCheckpoint(directory, config, state)


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


def realign(model: torch.nn.Module) -> torch.nn.Module:
    """Give every tensor of a transformers model its own freshly allocated storage (same values).

    ``from_pretrained`` leaves weights at addresses that are not 64-byte aligned, where MKL's GEMM rounds
    differently (about 1e-7 relative) from the aligned copies our strict loader makes. In the video
    comparison such noise can flip a bfloat16 rounding of a stored memory and grow over frames; with equal
    alignment on both sides the comparison measures the code, not the allocator.
    """
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            tensor.data = tensor.data.clone()
    return model


@pytest.fixture(scope="session")
def hf_image(tracker_checkpoint):
    """transformers' Sam3TrackerModel on the same file (ViT from the detector, neck from tracker_neck)."""
    from transformers import Sam3TrackerModel

    return realign(Sam3TrackerModel.from_pretrained(tracker_checkpoint.directory).eval())


@pytest.fixture(scope="session")
def hf_video(tracker_checkpoint):
    """transformers' Sam3TrackerVideoModel on the same file."""
    from transformers import Sam3TrackerVideoModel

    return realign(Sam3TrackerVideoModel.from_pretrained(tracker_checkpoint.directory).eval())
