"""Query classification logits: dot product of projected queries with the pooled, MLP-refined prompt.

Module names equal the checkpoint keys under ``dot_product_scoring.``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .common import HEAD_LAYER_NORM_EPS, HeadMLP
from .config import DETRDecoderConfig

LOGIT_CLAMP = 12.0


class DotProductScoring(nn.Module):
    """logit[q] = <query_proj(query_q), text_proj(pool(norm(prompt + MLP(prompt))))> / sqrt(C), clamped to ±12."""

    def __init__(self, config: DETRDecoderConfig) -> None:
        super().__init__()
        dim = config.hidden_size
        self.text_mlp = HeadMLP(dim, config.intermediate_size, dim, num_layers=2)
        self.text_mlp_out_norm = nn.LayerNorm(dim, eps=HEAD_LAYER_NORM_EPS)
        self.text_proj = nn.Linear(dim, dim)
        self.query_proj = nn.Linear(dim, dim)
        self.scale = 1.0 / math.sqrt(dim)

    def pool_prompt(self, prompt: torch.Tensor, prompt_valid: torch.Tensor | None) -> torch.Tensor:
        """[B, S, C] prompt, [B, S] bool -> [B, C] projected prompt vector (mean over the real tokens)."""
        prompt = self.text_mlp_out_norm(prompt + self.text_mlp(prompt))
        if prompt_valid is None:
            pooled = prompt.mean(dim=1)
        else:
            weight = prompt_valid.to(prompt.dtype).unsqueeze(-1)  # (B, S, 1)
            pooled = (prompt * weight).sum(dim=1) / weight.sum(dim=1).clamp(min=1.0)
        return self.text_proj(pooled)

    def forward(self, queries: torch.Tensor, prompt: torch.Tensor, prompt_valid: torch.Tensor | None) -> torch.Tensor:
        """queries [B, Q, C] (decoder output), prompt [B, S, C], prompt_valid [B, S] bool or None -> logits [B, Q].

        ``prompt`` is the full prompt given to the DETR encoder (text tokens, then geometry tokens), with its mask.
        """
        if queries.ndim != 3 or prompt.ndim != 3 or queries.shape[0] != prompt.shape[0]:
            raise ValueError(
                f"queries [B, Q, C] and prompt [B, S, C] must share B, got {list(queries.shape)}, {list(prompt.shape)}"
            )
        if prompt_valid is not None and prompt_valid.shape != prompt.shape[:2]:
            raise ValueError(f"prompt_valid must be {list(prompt.shape[:2])}, got {list(prompt_valid.shape)}")
        text = self.pool_prompt(prompt, prompt_valid)
        logits = torch.bmm(self.query_proj(queries), text.unsqueeze(-1)).squeeze(-1)  # (B, Q)
        return (logits * self.scale).clamp(-LOGIT_CLAMP, LOGIT_CLAMP)
