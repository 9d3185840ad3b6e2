"""The tracker's prompt encoder: clicks, box corners and a mask become decoder tokens and a dense map.

Coordinates are pixels of the model's square input (``image_size`` x ``image_size``), x then y.
Point labels: 1 positive, 0 negative, 2 / 3 top-left / bottom-right box corner (how a box travels
as points in the video path), -1 "not a point" (a padding token that still takes part in attention),
-10 padding that embeds to zeros.

Module names equal the checkpoint keys under ``tracker_model.prompt_encoder.`` (and
``tracker_model.shared_image_embedding.`` for the positional embedding of the image grid).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..common import activation
from .config import TrackerPromptEncoderConfig
from .layers import LayerNorm2d

NOT_A_POINT = -1
PAD_POINT = -10
BOX_TOP_LEFT = 2
BOX_BOTTOM_RIGHT = 3


class RandomFourierEmbedding(nn.Module):
    """Positional encoding by random Fourier features: [..., 2] coordinates in [0, 1] -> [..., C].

    ``positional_embedding`` [2, C/2] is a fixed Gaussian matrix (a checkpoint buffer).
    """

    def __init__(self, config: TrackerPromptEncoderConfig) -> None:
        super().__init__()
        self.register_buffer("positional_embedding", config.scale * torch.randn(2, config.hidden_size // 2))

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        """coords [..., 2] (x, y) normalised to [0, 1] -> [..., C] = [sin(2π f), cos(2π f)], f = (2c - 1) @ G."""
        coords = (2 * coords - 1).to(self.positional_embedding.dtype)
        angles = 2 * math.pi * (coords @ self.positional_embedding)
        return torch.cat((angles.sin(), angles.cos()), dim=-1)

    def grid(self, size: int) -> torch.Tensor:
        """Encoding of the pixel centres of a size x size grid -> [C, size, size]."""
        weight = self.positional_embedding
        centres = (torch.arange(size, device=weight.device, dtype=weight.dtype) + 0.5) / size
        ys, xs = torch.meshgrid(centres, centres, indexing="ij")
        return self(torch.stack((xs, ys), dim=-1)).permute(2, 0, 1)


class MaskEmbedding(nn.Module):
    """Mask prompt [B, 1, 4h, 4w] -> dense embedding [B, C, h, w]: two stride-2 convs (LN, activation) and a 1x1."""

    def __init__(self, config: TrackerPromptEncoderConfig) -> None:
        super().__init__()
        mid = config.mask_input_channels // 4
        self.conv1 = nn.Conv2d(1, mid, kernel_size=2, stride=2)
        self.conv2 = nn.Conv2d(mid, config.mask_input_channels, kernel_size=2, stride=2)
        self.conv3 = nn.Conv2d(config.mask_input_channels, config.hidden_size, kernel_size=1)
        self.layer_norm1 = LayerNorm2d(mid, eps=config.layer_norm_eps)
        self.layer_norm2 = LayerNorm2d(config.mask_input_channels, eps=config.layer_norm_eps)
        self.act = activation(config.hidden_act)

    def forward(self, masks: torch.Tensor) -> torch.Tensor:
        x = self.act(self.layer_norm1(self.conv1(masks)))
        x = self.act(self.layer_norm2(self.conv2(x)))
        return self.conv3(x)


class PromptEncoder(nn.Module):
    """Sparse tokens for points/boxes and a dense embedding for a mask (or the learned "no mask")."""

    def __init__(self, config: TrackerPromptEncoderConfig) -> None:
        super().__init__()
        self.image_size = config.image_size
        self.grid_size = config.grid_size
        self.shared_embedding = RandomFourierEmbedding(config)
        self.mask_embed = MaskEmbedding(config)
        self.no_mask_embed = nn.Embedding(1, config.hidden_size)
        self.point_embed = nn.Embedding(config.num_point_embeddings, config.hidden_size)
        self.not_a_point_embed = nn.Embedding(1, config.hidden_size)

    def _encode_pixels(self, coords: torch.Tensor) -> torch.Tensor:
        # Shift to the pixel centre, then normalise by the input size.
        return self.shared_embedding((coords + 0.5) / self.image_size)

    def embed_points(self, points: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """points [B, N, 2] pixels, labels [B, N] -> tokens [B, N, C]."""
        labels = labels[..., None]
        tokens = self._encode_pixels(points)
        tokens = torch.where(labels == NOT_A_POINT, self.not_a_point_embed.weight, tokens)
        tokens = torch.where(labels == PAD_POINT, torch.zeros_like(tokens), tokens)
        # Labels 0..3 add their learned embedding; negative labels add nothing.
        return tokens + self.point_embed(labels.squeeze(-1).clamp(min=0)) * (labels >= 0)

    def embed_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        """boxes [B, 4] pixels (x0, y0, x1, y1) -> tokens [B, 3, C]: two corners and a "not a point" token."""
        corners = self._encode_pixels(boxes.view(-1, 2, 2))
        corners = corners + self.point_embed.weight[BOX_TOP_LEFT : BOX_BOTTOM_RIGHT + 1]
        pad = self.not_a_point_embed.weight.expand(corners.shape[0], 1, -1)
        return torch.cat((corners, pad.to(corners.dtype)), dim=1)

    def forward(
        self,
        batch_size: int,
        points: torch.Tensor | None,
        labels: torch.Tensor | None,
        boxes: torch.Tensor | None,
        masks: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            points [B, N, 2] / labels [B, N], boxes [B, 4] (each optional; with neither, one "not a point"
            token stands in), masks [B, 1, 4h, 4w] mask logits or None.

        Returns:
            sparse tokens [B, T, C] (points, then a padding token unless a box is given, then the box's
            three tokens) and dense embedding [B, C, h, w] (expanded "no mask" when ``masks`` is None).
        """
        if points is None and boxes is None:
            weight = self.not_a_point_embed.weight
            points = weight.new_zeros(batch_size, 1, 2)
            labels = torch.full((batch_size, 1), NOT_A_POINT, dtype=torch.long, device=weight.device)
        parts = []
        if points is not None:
            if boxes is None:
                # Without a box, a padding point closes the prompt (as SAM was trained).
                points = F.pad(points, (0, 0, 0, 1), value=0.0)
                labels = F.pad(labels, (0, 1), value=NOT_A_POINT)
            parts.append(self.embed_points(points, labels))
        if boxes is not None:
            parts.append(self.embed_boxes(boxes))
        sparse = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        if masks is not None:
            dense = self.mask_embed(masks)
        else:
            size = self.grid_size
            dense = self.no_mask_embed.weight.view(1, -1, 1, 1).expand(batch_size, -1, size, size)
        return sparse, dense
