"""Memory attention: a frame's image tokens attend to themselves and to the memory bank.

Per layer (pre-norm): RoPE self-attention over the frame's grid; RoPE cross-attention into the
memories (each memory frame is a copy of the same grid, so keys take the query grid's rotation tiled
frame by frame; the object-pointer tokens at the end are not rotated); a ReLU MLP. A final LayerNorm.

Module names equal the checkpoint keys under ``tracker_model.memory_attention.``.
"""

from __future__ import annotations

import torch
from torch import nn

from ..common import activation
from ..vision import rope_tables
from .config import TrackerConfig
from .layers import ProjectedAttention


class MemoryAttentionLayer(nn.Module):
    def __init__(self, config: TrackerConfig) -> None:
        super().__init__()
        dim = config.memory_attention_hidden_size
        inner = dim // config.memory_attention_downsample_rate
        heads = config.memory_attention_num_attention_heads
        self.self_attn = ProjectedAttention(dim, inner, heads)
        self.cross_attn_image = ProjectedAttention(dim, inner, heads, kv_dim=config.memory_dim)
        self.linear1 = nn.Linear(dim, config.memory_attention_feed_forward_hidden_size)
        self.linear2 = nn.Linear(config.memory_attention_feed_forward_hidden_size, dim)
        self.layer_norm1 = nn.LayerNorm(dim)
        self.layer_norm2 = nn.LayerNorm(dim)
        self.layer_norm3 = nn.LayerNorm(dim)
        self.act = activation(config.memory_attention_feed_forward_hidden_act)

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        memory_pe: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        num_pointer_tokens: int,
        memory_valid: torch.Tensor | None,
    ) -> torch.Tensor:
        """x [1 or B, HW, C] -> [B, HW, C]; memory/memory_pe [B, M, 64]; memory_valid [B, M] bool or None."""
        y = self.layer_norm1(x)
        x = x + self.self_attn(y, y, y, rope=rope)
        y = self.layer_norm2(x).expand(memory.shape[0], -1, -1)
        x = x + self.cross_attn_image(y, memory + memory_pe, memory, rope, num_pointer_tokens, memory_valid)
        return x + self.linear2(self.act(self.linear1(self.layer_norm3(x))))


class MemoryAttention(nn.Module):
    """Condition a frame's lowest-resolution features on the memory bank."""

    def __init__(self, config: TrackerConfig) -> None:
        super().__init__()
        self.config = config
        self.layers = nn.ModuleList(MemoryAttentionLayer(config) for _ in range(config.memory_attention_num_layers))
        self.layer_norm = nn.LayerNorm(config.memory_attention_hidden_size)

    def forward(
        self,
        features: torch.Tensor,
        position: torch.Tensor,
        memory: torch.Tensor,
        memory_pe: torch.Tensor,
        num_pointer_tokens: int,
        memory_valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """
        Args:
            features: [1 or B, HW, C] image tokens of the frame (row-major grid; 1 = shared by all objects).
            position: [1, HW, C] their sine position encoding (added at 0.1 scale, as trained).
            memory: [B, M, 64] memory tokens: F whole frames of HW tokens, then ``num_pointer_tokens``
                object-pointer tokens; memory_pe: [B, M, 64] their position encodings.
            memory_valid: [B, M] bool, False for padding (objects with fewer memories), or None.

        Returns:
            [B, HW, C] memory-conditioned tokens.
        """
        cfg = self.config
        side = cfg.memory_attention_rope_feat_sizes[0]
        if features.shape[1] != side * side:
            raise ValueError(f"features must hold {side}x{side} tokens, got {features.shape[1]}")
        head_dim = cfg.memory_attention_hidden_size // (
            cfg.memory_attention_downsample_rate * cfg.memory_attention_num_attention_heads
        )
        rope = rope_tables(side, 1.0, head_dim, cfg.rope_theta, features.device)
        x = features + 0.1 * position
        for layer in self.layers:
            x = layer(x, memory, memory_pe, rope, num_pointer_tokens, memory_valid)
        return self.layer_norm(x)
