"""Layers shared by the tracker's parts: channels-first LayerNorm, the ``proj_in``/``layers``/``proj_out``
MLP, and attention with a narrower inner width and optional 2-D RoPE.

Attribute names equal the checkpoint keys under ``tracker_model.``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..common import activation
from ..vision import apply_rope


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a [B, C, H, W] map (each pixel normalised on its own)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class FeedForward(nn.Module):
    """MLP: ``proj_in``, ``num_layers - 2`` hidden ``layers``, ``proj_out``; activation between (not after),
    optional sigmoid on the output (the IoU head)."""

    def __init__(
        self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int, act: str = "relu", sigmoid: bool = False
    ) -> None:
        super().__init__()
        if num_layers < 2:
            raise ValueError(f"FeedForward needs num_layers >= 2, got {num_layers}")
        self.proj_in = nn.Linear(in_dim, hidden_dim)
        self.layers = nn.ModuleList(nn.Linear(hidden_dim, hidden_dim) for _ in range(num_layers - 2))
        self.proj_out = nn.Linear(hidden_dim, out_dim)
        self.act = activation(act)
        self.sigmoid = sigmoid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.proj_in(x))
        for layer in self.layers:
            x = self.act(layer(x))
        x = self.proj_out(x)
        return torch.sigmoid(x) if self.sigmoid else x


class ProjectedAttention(nn.Module):
    """Multi-head attention whose q/k/v live in ``inner_dim`` (≤ ``dim``), keys/values read from ``kv_dim``.

    SAM's two-way transformer halves the width in its cross-attentions (``inner_dim = dim / 2``); the
    memory attention reads 64-wide memories (``kv_dim = 64``) and rotates queries and keys with 2-D RoPE.
    """

    def __init__(self, dim: int, inner_dim: int, num_heads: int, kv_dim: int | None = None) -> None:
        super().__init__()
        if inner_dim % num_heads:
            raise ValueError(f"attention width {inner_dim} is not divisible by {num_heads} heads")
        kv_dim = dim if kv_dim is None else kv_dim
        self.num_heads = num_heads
        self.head_dim = inner_dim // num_heads
        self.q_proj = nn.Linear(dim, inner_dim)
        self.k_proj = nn.Linear(kv_dim, inner_dim)
        self.v_proj = nn.Linear(kv_dim, inner_dim)
        self.o_proj = nn.Linear(inner_dim, dim)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)  # (B, heads, N, d)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        num_unrotated_keys: int = 0,
        key_valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """
        Args:
            query: [B, Nq, dim]; key/value: [B, Nk, kv_dim].
            rope: cos, sin [Nq, head_dim / 2] for the query grid, or None (no rotation). Keys are
                rotated with the same table tiled over their length: they are whole frames of the same
                grid (memories), except the last ``num_unrotated_keys`` (object pointers), left as they are.
            key_valid: [B, Nk] bool (True = attend) or None (all keys).

        Returns:
            [B, Nq, dim].
        """
        q = self._split(self.q_proj(query))
        k = self._split(self.k_proj(key))
        v = self._split(self.v_proj(value))
        if rope is not None:
            q, k = _rotate(q, k, rope, num_unrotated_keys)
        mask = None if key_valid is None else key_valid[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        b, _, nq, _ = out.shape
        return self.o_proj(out.transpose(1, 2).reshape(b, nq, -1))


def _rotate(
    q: torch.Tensor, k: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], num_unrotated_keys: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """RoPE on q [B, h, Nq, d] and on the first Nk - num_unrotated_keys keys of k [B, h, Nk, d]."""
    cos, sin = rope
    q = apply_rope(q, cos, sin)
    num_rotated = k.shape[-2] - num_unrotated_keys
    if num_rotated == 0:
        return q, k
    if num_rotated % cos.shape[0]:
        raise ValueError(f"memory keys ({num_rotated}) are not whole frames of the {cos.shape[0]}-token query grid")
    # The keys as [..., frames, N, d]: each frame takes the query grid's table by broadcasting (no tiled copy).
    frames = k[..., :num_rotated, :].unflatten(-2, (num_rotated // cos.shape[0], cos.shape[0]))
    rotated = apply_rope(frames, cos, sin).flatten(-3, -2)
    if num_unrotated_keys == 0:
        return q, rotated
    return q, torch.cat((rotated, k[..., num_rotated:, :]), dim=-2)
