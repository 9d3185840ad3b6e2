"""The three exported graphs as ``nn.Module`` wrappers around a loaded detector.

- ``ImageEncoderGraph``: pixel_values [B, 3, S, S] -> the FPN levels the heads read, finest first
  (``fpn_0`` [B, D, 4h, 4w], ``fpn_1`` [B, D, 2h, 2w], ``fpn_2`` [B, D, h, w]); for a model with SAM3's
  tracker also ``vit_output`` [B, h*w, C], the ViT tokens the tracker's own neck reads (row-major over
  the patch grid; ``Sam3Detector.get_tracker_features`` takes them as ``last_hidden_state``).
- ``TextEncoderGraph``: input_ids, attention_mask [P, T] -> ``text_tokens`` [P, T, D] (after
  ``text_projection``) and ``text_mask`` [P, T] (the attention mask, passed through).
- ``HeadsGraph``: one image's FPN levels (batch 1, broadcast over the prompts), P prompts' tokens and
  exemplar boxes -> pred_logits [P, Q], pred_boxes [P, Q, 4], presence_logits [P, 1], pred_masks
  [P, Q, 4h, 4w], semantic_seg [P, 1, 4h, 4w].

Exemplar boxes are always an input of the heads graph, so one graph serves prompts with and without
boxes: ``input_boxes`` [P, N, 4] normalized (cx, cy, w, h) and ``input_boxes_labels`` [P, N] (1
positive, 0 negative, -10 padding, N >= 1). A prompt whose boxes are all padding gets no geometry
tokens at all (its CLS token is masked), which is what the PyTorch model computes without boxes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..modeling.detector import Sam3Detector
from ..modeling.position import encode_grid

BOX_PAD = -10  # label of a padding box row

IMAGE_INPUTS = ("pixel_values",)
IMAGE_OUTPUTS = ("fpn_0", "fpn_1", "fpn_2")
TRACKER_OUTPUT = "vit_output"  # an image-encoder output only for models with a tracker
TEXT_INPUTS = ("input_ids", "attention_mask")
TEXT_OUTPUTS = ("text_tokens", "text_mask")
HEADS_INPUTS = ("fpn_0", "fpn_1", "fpn_2", "text_tokens", "text_mask", "input_boxes", "input_boxes_labels")
HEADS_OUTPUTS = ("pred_logits", "pred_boxes", "presence_logits", "pred_masks", "semantic_seg")


def image_outputs(model: Sam3Detector) -> tuple[str, ...]:
    """The image encoder's output names: the FPN levels, and ``vit_output`` when the model has a tracker."""
    return IMAGE_OUTPUTS + ((TRACKER_OUTPUT,) if model.has_tracker else ())


class ImageEncoderGraph(nn.Module):
    """pixel_values [B, 3, S, S] float32 (normalized) -> FPN levels, finest first (+ ViT tokens [B, h*w, C]
    when the model has a tracker)."""

    def __init__(self, model: Sam3Detector) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        vision = self.model.get_vision_features(pixel_values)
        levels = tuple(vision.fpn_hidden_states)
        return (*levels, vision.last_hidden_state) if self.model.has_tracker else levels


class TextEncoderGraph(nn.Module):
    """input_ids, attention_mask [P, T] int64 -> text_tokens [P, T, D], text_mask [P, T] int64.

    In ``original`` text mode the encoder itself runs without a padding mask (as EfficientSAM3's), and
    ``attention_mask`` (``input_ids != 0`` from the tokenizer) is only the detector's padding.
    """

    def __init__(self, model: Sam3Detector) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.model.get_text_features(input_ids, attention_mask).pooler_output
        # A copy rather than the input itself, so that the output is a node of its own in the graph.
        return tokens, attention_mask * 1


class HeadsGraph(nn.Module):
    """One image's features + P prompts (text tokens and exemplar boxes) -> the detector's outputs.

    The sine position maps depend only on the feature sizes: they are computed here once and become
    constants of the graph.
    """

    def __init__(self, model: Sam3Detector, level_sizes: list[tuple[int, int]]) -> None:
        super().__init__()
        self.model = model
        width = model.config.detr_encoder_config.hidden_size
        dtype = model.dtype
        for i, (height, width_i) in enumerate(level_sizes):
            grid = encode_grid(height, width_i, width // 2, model.device, torch.float32)
            self.register_buffer(f"position_{i}", grid.to(dtype)[None].clone(), persistent=False)

    def forward(
        self,
        fpn_0: torch.Tensor,
        fpn_1: torch.Tensor,
        fpn_2: torch.Tensor,
        text_tokens: torch.Tensor,
        text_mask: torch.Tensor,
        input_boxes: torch.Tensor,
        input_boxes_labels: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        from ..modeling.vision import VisionFeatures

        model = self.model
        levels = (fpn_0, fpn_1, fpn_2)
        positions = (self.position_0, self.position_1, self.position_2)
        vision = VisionFeatures(levels, positions, fpn_2.flatten(2).transpose(1, 2))
        valid = input_boxes_labels != BOX_PAD
        labels = torch.where(valid, input_boxes_labels, torch.zeros_like(input_boxes_labels))
        geometry, geometry_valid = model.geometry_encoder(input_boxes, labels, valid, fpn_2, self.position_2)
        # No real box: the CLS token is masked too, so the prompt is the text alone.
        geometry_valid = geometry_valid & valid.any(dim=1, keepdim=True)
        prompt = torch.cat((text_tokens.to(geometry.dtype), geometry), dim=1)
        prompt_valid = torch.cat((text_mask.bool(), geometry_valid), dim=1)
        out = model.run_heads(vision, prompt, prompt_valid)
        return out.pred_logits, out.pred_boxes, out.presence_logits, out.pred_masks, out.semantic_seg


@dataclass(frozen=True)
class ExampleInputs:
    """Inputs the graphs are traced with (shapes only matter; dynamic axes as declared)."""

    pixel_values: torch.Tensor
    input_ids: torch.Tensor
    attention_mask: torch.Tensor


def example_inputs(model: Sam3Detector, context_length: int, prompts: int = 2) -> ExampleInputs:
    size = model.config.image_size
    ids = torch.full((prompts, context_length), 49407, dtype=torch.long)
    ids[:, 0] = 49406
    ids[:, 1:3] = 320
    mask = torch.zeros_like(ids)
    mask[:, :4] = 1
    return ExampleInputs(torch.zeros(2, 3, size, size), ids, mask)
