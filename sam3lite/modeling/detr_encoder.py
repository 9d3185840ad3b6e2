"""DETR encoder: image tokens of the 1x FPN level attend to themselves and to the prompt.

Six pre-norm layers at full size: self-attention over the h*w image tokens (position added to
queries and keys), cross-attention to the prompt tokens (padding masked), ReLU MLP. The prompt
passes through unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .common import HEAD_LAYER_NORM_EPS, MLP, Attention, key_padding_mask
from .config import DETREncoderConfig


@dataclass
class EncoderOutput:
    """What the DETR decoder, mask decoder and scoring head read.

    memory: [B, h*w, C] encoded image tokens, row-major over (h, w).
    memory_pos: [B, h*w, C] their position encoding (a broadcast view when one map served the batch).
    prompt: [B, S, C] the prompt tokens, unchanged (the reference's ``encoder_outputs.text_features``).
    spatial_shape: (h, w) of the image token grid.
    """

    memory: torch.Tensor
    memory_pos: torch.Tensor
    prompt: torch.Tensor
    spatial_shape: tuple[int, int]


class DetrEncoderLayer(nn.Module):
    """Pre-norm: image self-attention (pos on q/k), cross-attention to the prompt, MLP."""

    def __init__(self, config: DETREncoderConfig) -> None:
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
        self, x: torch.Tensor, pos: torch.Tensor, prompt: torch.Tensor, prompt_mask: torch.Tensor | None
    ) -> torch.Tensor:
        """x [B|1, HW, C]; pos broadcastable to x; prompt [B, S, C]; prompt_mask [B, 1, 1, S] bool or None.

        x of batch 1 (one image shared by B prompts) runs the self-attention once and leaves as [B, HW, C].
        """
        h = self.layer_norm1(x)
        q = h + pos
        x = x + self.dropout(self.self_attn(q, q, h))
        h = self.layer_norm2(x)
        if h.shape[0] != prompt.shape[0]:
            h = h.expand(prompt.shape[0], -1, -1)
        x = x + self.dropout(self.cross_attn(h, prompt, prompt, prompt_mask))
        return x + self.dropout(self.mlp(self.layer_norm3(x)))


class DetrEncoder(nn.Module):
    """Stack of ``num_layers`` encoder layers; module names equal the reference's ``detr_encoder.*`` keys."""

    def __init__(self, config: DETREncoderConfig) -> None:
        super().__init__()
        self.hidden_size = config.hidden_size
        self.layers = nn.ModuleList(DetrEncoderLayer(config) for _ in range(config.num_layers))

    def forward(
        self,
        features: torch.Tensor,
        position: torch.Tensor,
        prompt: torch.Tensor,
        prompt_valid: torch.Tensor | None = None,
    ) -> EncoderOutput:
        """Fuse the prompt into the image tokens.

        Args:
            features: [B or 1, C, h, w] the 1x FPN level; batch 1 is shared by all B prompts.
            position: its sine position encoding, [B or 1, C, h, w] or [C, h, w].
            prompt: [B, S, C] prompt tokens (text, or text then geometry: see ``concat_prompts``).
            prompt_valid: [B, S] bool, True for real tokens; None when all are real. Every row needs
                at least one True.
        """
        batch = prompt.shape[0]
        self._check(features, position, prompt, prompt_valid)
        height, width = features.shape[-2:]
        x = features.flatten(2).transpose(1, 2)  # (B|1, hw, C)
        pos = position.flatten(-2).transpose(-1, -2)  # (B|1, hw, C) or (hw, C)
        if x.shape[0] != batch and pos.ndim == 3 and pos.shape[0] == batch:
            x = x.expand(batch, -1, -1)
        # Otherwise an image shared by all prompts stays at batch 1 through the first self-attention.
        mask = key_padding_mask(prompt_valid)
        for layer in self.layers:
            x = layer(x, pos, prompt, mask)
        memory_pos = pos.expand(batch, -1, -1) if pos.ndim == 2 or pos.shape[0] != batch else pos
        return EncoderOutput(memory=x, memory_pos=memory_pos, prompt=prompt, spatial_shape=(height, width))

    def _check(
        self,
        features: torch.Tensor,
        position: torch.Tensor,
        prompt: torch.Tensor,
        prompt_valid: torch.Tensor | None,
    ) -> None:
        if prompt.ndim != 3 or prompt.shape[-1] != self.hidden_size:
            raise ValueError(f"prompt must be [batch, seq, {self.hidden_size}], got shape {tuple(prompt.shape)}")
        batch = prompt.shape[0]
        expected = tuple(prompt.shape[:2])
        if prompt_valid is not None and tuple(prompt_valid.shape) != expected:
            raise ValueError(
                f"prompt_valid must have shape {expected} to match prompt, got {tuple(prompt_valid.shape)}"
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
        if position.ndim == 4 and position.shape[0] not in (1, batch):
            raise ValueError(f"position batch {position.shape[0]} does not match prompt batch {batch}")


def concat_prompts(
    text: torch.Tensor,
    text_valid: torch.Tensor | None,
    geometry: torch.Tensor,
    geometry_valid: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Text tokens then geometry tokens, as the reference builds the prompt: a plain concatenation.

    text [Bt, T, C] (Bt is 1 or B: one text shared by B box sets), geometry [B, G, C], masks [., .] bool
    or None (all real). Returns prompt [B, T + G, C] and valid [B, T + G] (None when both are None).
    Text padding stays in the middle; every consumer masks it, so the order does not matter.
    """
    batch = geometry.shape[0]
    if text.shape[0] != batch:
        if text.shape[0] != 1:
            raise ValueError(f"text batch {text.shape[0]} does not match geometry batch {batch} (or 1)")
        text = text.expand(batch, -1, -1)
    prompt = torch.cat((text, geometry), dim=1)
    if text_valid is None and geometry_valid is None:
        return prompt, None
    if text_valid is None:
        text_valid = torch.ones(text.shape[:2], dtype=torch.bool, device=text.device)
    if geometry_valid is None:
        geometry_valid = torch.ones(geometry.shape[:2], dtype=torch.bool, device=geometry.device)
    text_valid = text_valid.bool().expand(batch, -1)
    return prompt, torch.cat((text_valid, geometry_valid.bool()), dim=1)
