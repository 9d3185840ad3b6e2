"""Box-prompt encoder: turns normalised boxes into prompt tokens that sit beside the text tokens.

Each box token is the sum of four terms: a linear map of the raw (cx, cy, w, h); a 7x7 conv over the
``roi_align`` crop of the LayerNorm'd 1x FPN level; a linear map of [sine(cy), sine(cx), h, w]; a
positive/negative label embedding. A CLS token goes right after the valid boxes. Then a small
pre-norm transformer (self-attention over the prompt, cross-attention to the image, MLP).
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn

from .common import HEAD_LAYER_NORM_EPS, MLP, Attention, box_cxcywh_to_xyxy, exporting, key_padding_mask
from .config import GeometryEncoderConfig
from .position import encode_coords

PAD_LABEL = -10  # the processor's label for padding boxes


class GeometryEncoderLayer(nn.Module):
    """Pre-norm: prompt self-attention, cross-attention to image tokens (pos on keys), MLP."""

    def __init__(self, config: GeometryEncoderConfig) -> None:
        super().__init__()
        dim = config.hidden_size
        self.layer_norm1 = nn.LayerNorm(dim, eps=HEAD_LAYER_NORM_EPS)
        self.self_attn = Attention(dim, config.num_attention_heads)
        self.layer_norm2 = nn.LayerNorm(dim, eps=HEAD_LAYER_NORM_EPS)
        self.cross_attn = Attention(dim, config.num_attention_heads)
        self.layer_norm3 = nn.LayerNorm(dim, eps=HEAD_LAYER_NORM_EPS)
        self.mlp = MLP(dim, config.intermediate_size, config.hidden_act)
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self, x: torch.Tensor, image: torch.Tensor, image_key: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        """x [B, P, C]; image / image_key (image + pos) [B, HW, C]; mask [B, 1, 1, P] bool or None."""
        h = self.layer_norm1(x)
        x = x + self.dropout(self.self_attn(h, h, h, mask))
        h = self.layer_norm2(x)
        x = x + self.dropout(self.cross_attn(h, image_key, image))
        return x + self.dropout(self.mlp(self.layer_norm3(x)))


class GeometryEncoder(nn.Module):
    """Encodes box prompts into ``N + 1`` tokens (boxes, then CLS) of width ``hidden_size``.

    Module names equal the reference's ``geometry_encoder.*`` keys (prefix removed).
    """

    def __init__(self, config: GeometryEncoderConfig) -> None:
        super().__init__()
        dim = config.hidden_size
        self.hidden_size = dim
        self.roi_size = config.roi_size
        self.label_embed = nn.Embedding(2, dim)
        self.cls_embed = nn.Embedding(1, dim)
        self.boxes_direct_project = nn.Linear(4, dim)
        self.boxes_pool_project = nn.Conv2d(dim, dim, config.roi_size)
        self.boxes_pos_enc_project = nn.Linear(dim + 2, dim)
        self.vision_layer_norm = nn.LayerNorm(dim, eps=HEAD_LAYER_NORM_EPS)
        self.final_proj = nn.Linear(dim, dim)
        self.prompt_layer_norm = nn.LayerNorm(dim, eps=HEAD_LAYER_NORM_EPS)
        self.layers = nn.ModuleList(GeometryEncoderLayer(config) for _ in range(config.num_layers))
        self.output_layer_norm = nn.LayerNorm(dim, eps=HEAD_LAYER_NORM_EPS)

    def forward(
        self,
        boxes: torch.Tensor,
        box_labels: torch.Tensor,
        box_valid: torch.Tensor | None,
        features: torch.Tensor,
        position: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode B sets of N boxes against the 1x FPN level.

        Args:
            boxes: [B, N, 4] normalised (cx, cy, w, h) in [0, 1].
            box_labels: [B, N] ints, 1 positive, 0 negative; entries of invalid boxes are ignored.
            box_valid: [B, N] bool, True for real boxes, or None to take ``box_labels != -10`` (the
                processor's padding label). Padding may sit anywhere; valid boxes are moved to the
                front in their order, which is what the reference computes for right-padded input.
            features: [B or 1, C, h, w] the 1x FPN level (72 x 72 at full size); batch 1 is shared.
            position: its sine position encoding, [B or 1, C, h, w] or [C, h, w].

        Returns:
            tokens [B, N + 1, C] and valid [B, N + 1] bool: the valid boxes, the CLS token, then padding.
        """
        batch, num_boxes = self._check(boxes, box_labels, box_valid, features, position)
        dtype = features.dtype
        if box_valid is None:
            box_valid = box_labels != PAD_LABEL
        box_valid = box_valid.bool()
        if num_boxes and not exporting() and not bool(((box_labels == 0) | (box_labels == 1) | ~box_valid).all()):
            raise ValueError("box_labels must be 1 (positive) or 0 (negative) for every valid box")

        # Valid boxes first, order kept: the CLS token then lands right after them. The keys are
        # unique (padding flag, then position), so a plain sort is stable; it exports as ONNX TopK.
        index = torch.arange(num_boxes, device=boxes.device)
        order = torch.argsort((~box_valid).long() * num_boxes + index, dim=1)
        boxes = boxes.gather(1, order[..., None].expand(-1, -1, 4)).float()
        labels = torch.where(box_valid, box_labels, 0).gather(1, order).long()
        count = box_valid.sum(dim=1)  # [B]

        image = features.flatten(2).transpose(1, 2)  # (B|1, hw, C)
        image_key = image + position.flatten(-2).transpose(-1, -2)
        if image.shape[0] != batch:
            image, image_key = image.expand(batch, -1, -1), image_key.expand(batch, -1, -1)

        tokens = self._embed_boxes(boxes, labels, features, dtype)  # (B, N, C)
        # CLS at index `count` (the reference's concat_padded_sequences); the slot after N is zeros.
        tokens = torch.cat((tokens, tokens.new_zeros(batch, 1, self.hidden_size)), dim=1)
        slots = torch.arange(num_boxes + 1, device=tokens.device)
        cls = self.cls_embed.weight.to(dtype)
        tokens = torch.where((slots == count[:, None])[..., None], cls, tokens)
        valid = slots < (count + 1)[:, None]  # (B, N + 1)

        x = self.prompt_layer_norm(self.final_proj(tokens))
        mask = key_padding_mask(valid)
        for layer in self.layers:
            x = layer(x, image, image_key, mask)
        return self.output_layer_norm(x), valid

    def _embed_boxes(
        self, boxes: torch.Tensor, labels: torch.Tensor, features: torch.Tensor, dtype: torch.dtype
    ) -> torch.Tensor:
        """boxes [B, N, 4] float32 cxcywh, labels [B, N] -> [B, N, C] box tokens before the CLS."""
        batch, num_boxes = labels.shape
        n_img, channels, height, width = features.shape
        out = self.boxes_direct_project(boxes.to(dtype)) + self.label_embed(labels)

        # ROI-align 7x7 crops of the LayerNorm'd features at the boxes in feature-pixel units.
        normed = self.vision_layer_norm(features.flatten(2).transpose(1, 2))  # (B|1, hw, C)
        # roi_align has no bfloat16 kernel; sample in float32 (the reference goes through float16).
        normed = normed.transpose(1, 2).reshape(n_img, channels, height, width).float()
        scale = boxes.new_tensor([width, height, width, height])
        xyxy = box_cxcywh_to_xyxy(boxes) * scale
        image_index = torch.arange(batch, device=boxes.device) if n_img == batch else boxes.new_zeros(batch)
        rois = torch.cat((image_index.to(xyxy.dtype)[:, None, None].expand(-1, num_boxes, 1), xyxy), dim=-1)
        crops = torchvision.ops.roi_align(
            normed, rois.view(-1, 5), self.roi_size, spatial_scale=1.0, sampling_ratio=-1, aligned=False
        )  # (B*N, C, 7, 7)
        out = out + self.boxes_pool_project(crops.to(dtype)).view(batch, num_boxes, channels)

        # Sine encodings of the centre (y first) plus the raw height and width, in float32.
        cx, cy, w, h = boxes.unbind(-1)
        half = self.hidden_size // 2
        pos = torch.cat((encode_coords(cy, half), encode_coords(cx, half), h[..., None], w[..., None]), dim=-1)
        return out + self.boxes_pos_enc_project(pos.to(dtype))

    def _check(
        self,
        boxes: torch.Tensor,
        box_labels: torch.Tensor,
        box_valid: torch.Tensor | None,
        features: torch.Tensor,
        position: torch.Tensor,
    ) -> tuple[int, int]:
        if boxes.ndim != 3 or boxes.shape[-1] != 4:
            raise ValueError(f"boxes must be [batch, num_boxes, 4] (cx, cy, w, h), got shape {tuple(boxes.shape)}")
        if not boxes.is_floating_point():
            raise ValueError(f"boxes must be a floating-point tensor, got {boxes.dtype}")
        batch, num_boxes = boxes.shape[:2]
        if tuple(box_labels.shape) != (batch, num_boxes):
            raise ValueError(
                f"box_labels must have shape {(batch, num_boxes)} to match boxes, got {tuple(box_labels.shape)}"
            )
        if box_labels.is_floating_point():
            raise ValueError(f"box_labels must be an integer tensor, got {box_labels.dtype}")
        if box_valid is not None and tuple(box_valid.shape) != (batch, num_boxes):
            raise ValueError(
                f"box_valid must have shape {(batch, num_boxes)} to match boxes, got {tuple(box_valid.shape)}"
            )
        if features.ndim != 4 or features.shape[1] != self.hidden_size or features.shape[0] not in (1, batch):
            raise ValueError(
                f"features must be [{batch} or 1, {self.hidden_size}, h, w], got shape {tuple(features.shape)}"
            )
        if position.shape[-3:] != features.shape[-3:] or position.ndim not in (3, 4):
            raise ValueError(
                f"position must be [C, h, w] or [B, C, h, w] matching features {tuple(features.shape)}, "
                f"got {tuple(position.shape)}"
            )
        if position.ndim == 4 and position.shape[0] not in (1, features.shape[0]):
            raise ValueError(f"position batch {position.shape[0]} does not match features batch {features.shape[0]}")
        return batch, num_boxes
