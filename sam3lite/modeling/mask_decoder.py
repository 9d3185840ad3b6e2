"""Mask head: prompt cross-attention on the image memory, an FPN pixel decoder, and per-query mask logits.

Module names equal the checkpoint keys under ``mask_decoder.``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .common import HEAD_LAYER_NORM_EPS, Attention, key_padding_mask
from .config import MaskDecoderConfig

GROUPS = 8


class PixelDecoder(nn.Module):
    """Coarse-to-fine FPN: nearest upsample, add the skip level, conv 3x3, GroupNorm(8), ReLU.

    ``num_upsampling_stages`` conv/norm pairs exist in the checkpoint; one per skip level is used
    (two with the 4x/2x/1x levels of SAM3).
    """

    def __init__(self, dim: int, num_stages: int) -> None:
        super().__init__()
        self.conv_layers = nn.ModuleList([nn.Conv2d(dim, dim, kernel_size=3, padding=1) for _ in range(num_stages)])
        self.norms = nn.ModuleList([nn.GroupNorm(GROUPS, dim) for _ in range(num_stages)])

    def forward(self, coarse: torch.Tensor, skips: Sequence[torch.Tensor]) -> torch.Tensor:
        """coarse [B, C, h, w]; skips finest first, e.g. [4x, 2x] (batch B or 1) -> [B, C, H, W] at skips[0]'s size."""
        if len(skips) > len(self.conv_layers):
            raise ValueError(f"{len(skips)} skip levels but only {len(self.conv_layers)} upsampling stages")
        x = coarse
        for i, skip in enumerate(reversed(skips)):
            x = F.interpolate(x, size=skip.shape[-2:], mode="nearest") + skip
            x = F.relu(self.norms[i](self.conv_layers[i](x)))
        return x


class MaskEmbedder(nn.Module):
    """Three-layer ReLU MLP on the queries (keys ``layers.0..2``)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(dim, dim) for _ in range(3)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.layers[0](x))
        x = F.relu(self.layers[1](x))
        return self.layers[2](x)


class MaskDecoder(nn.Module):
    """Instance masks (query embedding · pixel embedding) and a one-channel semantic map at the finest FPN level."""

    def __init__(self, config: MaskDecoderConfig) -> None:
        super().__init__()
        dim = config.hidden_size
        self.hidden_size = dim
        self.pixel_decoder = PixelDecoder(dim, config.num_upsampling_stages)
        self.mask_embedder = MaskEmbedder(dim)
        self.instance_projection = nn.Conv2d(dim, dim, kernel_size=1)
        self.semantic_projection = nn.Conv2d(dim, 1, kernel_size=1)
        self.prompt_cross_attn = Attention(dim, config.num_attention_heads)
        self.prompt_cross_attn_norm = nn.LayerNorm(dim, eps=HEAD_LAYER_NORM_EPS)

    def forward(
        self,
        queries: torch.Tensor,
        fpn_features: Sequence[torch.Tensor],
        memory: torch.Tensor,
        prompt: torch.Tensor,
        prompt_valid: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            queries: [B, Q, C] decoder output queries.
            fpn_features: neck levels [4x, 2x, 1x], each [B or 1, C, H_i, W_i]. The 1x level only gives the
                grid shape (h, w): the DETR-encoder memory takes its place.
            memory: [B, h*w, C] DETR-encoder image tokens.
            prompt: [B, S, C] the full prompt given to the DETR encoder (text, then geometry tokens);
                prompt_valid [B, S] bool (True = real) or None.

        Returns:
            pred_masks [B, Q, 4h, 4w] logits and semantic_seg [B, 1, 4h, 4w] logits.
        """
        b, n, c = memory.shape
        if not fpn_features:
            raise ValueError("fpn_features is empty; expected the levels [4x, 2x, 1x]")
        height, width = fpn_features[-1].shape[-2:]
        if c != self.hidden_size or n != height * width:
            raise ValueError(
                f"memory must be [B, {height}*{width}, {self.hidden_size}] to match the last FPN level, "
                f"got {list(memory.shape)}"
            )
        if queries.ndim != 3 or queries.shape[0] != b or queries.shape[2] != c:
            raise ValueError(f"queries must be [{b}, Q, {c}], got {list(queries.shape)}")
        if prompt.ndim != 3 or prompt.shape[0] != b or prompt.shape[2] != c:
            raise ValueError(f"prompt must be [{b}, S, {c}], got {list(prompt.shape)}")
        if prompt_valid is not None and prompt_valid.shape != prompt.shape[:2]:
            raise ValueError(f"prompt_valid must be {list(prompt.shape[:2])}, got {list(prompt_valid.shape)}")

        # Pre-norm prompt cross-attention on the image tokens (no norm after the residual).
        normed = self.prompt_cross_attn_norm(memory)
        memory = memory + self.prompt_cross_attn(normed, prompt, prompt, key_padding_mask(prompt_valid))

        coarse = memory.transpose(1, 2).reshape(b, c, height, width)  # (B, C, h, w), a view
        pixels = self.pixel_decoder(coarse, fpn_features[:-1])  # (B, C, 4h, 4w)

        instance = self.instance_projection(pixels).flatten(2)  # (B, C, 4h*4w)
        masks = torch.bmm(self.mask_embedder(queries), instance)  # (B, Q, 4h*4w)
        masks = masks.view(b, queries.shape[1], *pixels.shape[-2:])
        return masks, self.semantic_projection(pixels)
