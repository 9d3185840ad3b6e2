"""DETR decoder: object queries with a presence token, iterative box refinement and box relative-position bias.

Module names equal the checkpoint keys under ``detr_decoder.`` so the reference state dict loads as is.

Box arithmetic (reference boxes, inverse sigmoid, refinement, relative-position deltas) runs in float32
whatever the module dtype, so a bfloat16 model keeps its boxes accurate; only the MLP inputs are cast.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .common import HEAD_LAYER_NORM_EPS, MLP, Attention, HeadMLP, box_cxcywh_to_xyxy, inverse_sigmoid, key_padding_mask
from .config import DETRDecoderConfig
from .position import encode_boxes

PRESENCE_CLAMP = 10.0


@dataclass
class DecoderOutput:
    """Last-layer decoder outputs.

    queries: [B, Q, C] output-normed query features (what the scoring and mask heads consume), module dtype.
    boxes: [B, Q, 4] refined boxes, normalized xyxy, float32 (the model's ``pred_boxes``).
    presence_logits: [B, 1] presence-token logit clamped to ±10, float32.
    """

    queries: torch.Tensor
    boxes: torch.Tensor
    presence_logits: torch.Tensor


class DecoderLayer(nn.Module):
    """Post-norm layer: self-attn, prompt cross-attn, image cross-attn (+ box bias), MLP; each then LayerNorm."""

    def __init__(self, config: DETRDecoderConfig) -> None:
        super().__init__()
        dim, heads = config.hidden_size, config.num_attention_heads
        self.self_attn = Attention(dim, heads)
        self.self_attn_layer_norm = nn.LayerNorm(dim, eps=HEAD_LAYER_NORM_EPS)
        self.text_cross_attn = Attention(dim, heads)
        self.text_cross_attn_layer_norm = nn.LayerNorm(dim, eps=HEAD_LAYER_NORM_EPS)
        self.vision_cross_attn = Attention(dim, heads)
        self.vision_cross_attn_layer_norm = nn.LayerNorm(dim, eps=HEAD_LAYER_NORM_EPS)
        self.mlp = MLP(dim, config.intermediate_size, config.hidden_act)
        self.mlp_layer_norm = nn.LayerNorm(dim, eps=HEAD_LAYER_NORM_EPS)

    def forward(
        self,
        x: torch.Tensor,
        query_pos: torch.Tensor,
        prompt: torch.Tensor,
        prompt_mask: torch.Tensor | None,
        memory: torch.Tensor,
        memory_with_pos: torch.Tensor,
        box_bias: torch.Tensor,
    ) -> torch.Tensor:
        """x, query_pos [B, 1+Q, C] (presence token first, its pos zero); prompt [B, S, C]; memory and
        memory_with_pos [B, HW, C]; box_bias [B, heads, 1+Q, HW] additive. Returns [B, 1+Q, C]."""
        q = x + query_pos
        x = self.self_attn_layer_norm(x + self.self_attn(q, q, x))
        x = self.text_cross_attn_layer_norm(x + self.text_cross_attn(x + query_pos, prompt, prompt, prompt_mask))
        x = self.vision_cross_attn_layer_norm(
            x + self.vision_cross_attn(x + query_pos, memory_with_pos, memory, box_bias)
        )
        return self.mlp_layer_norm(x + self.mlp(x))


def _log_scale(deltas: torch.Tensor) -> torch.Tensor:
    """sign(8d) * log2(|8d| + 1) / log2(8): the reference's log-spaced distance encoding."""
    deltas = deltas * 8
    return torch.sign(deltas) * torch.log2(deltas.abs() + 1.0) / 3.0


def _per_head(bias: torch.Tensor) -> torch.Tensor:
    """(B, Q, N, heads) -> contiguous (B, heads, 1+Q, N) with a zero first row for the presence token.

    Padding the small factors rather than the big product makes the presence row 0 + 0; ``contiguous``
    makes the broadcast sum come out row-major, so flattening (H, W) needs no copy.
    """
    return F.pad(bias.permute(0, 3, 1, 2), (0, 0, 1, 0)).contiguous()


class DetrDecoder(nn.Module):
    """Presence token + ``num_queries`` queries refined over ``num_layers`` layers against the image memory.

    Per layer: query pos = ref_point_head(sine(box)); image cross-attention gets a per-head bias from the
    distances of the grid rows/columns to the current box edges; afterwards the box is refined by
    ``sigmoid(inverse_sigmoid(box) + box_head(norm(query)))``. Only the last layer's heads are output.
    """

    def __init__(self, config: DETRDecoderConfig) -> None:
        super().__init__()
        if config.num_layers < 1:
            raise ValueError(f"DETRDecoderConfig.num_layers must be >= 1, got {config.num_layers}")
        dim, heads = config.hidden_size, config.num_attention_heads
        self.hidden_size = dim
        self.num_heads = heads
        self.layers = nn.ModuleList([DecoderLayer(config) for _ in range(config.num_layers)])
        self.output_layer_norm = nn.LayerNorm(dim, eps=HEAD_LAYER_NORM_EPS)
        self.box_head = HeadMLP(dim, dim, 4, num_layers=3)
        self.query_embed = nn.Embedding(config.num_queries, dim)
        self.reference_points = nn.Embedding(config.num_queries, 4)
        self.presence_token = nn.Embedding(1, dim)
        self.presence_head = HeadMLP(dim, dim, 1, num_layers=3)
        self.presence_layer_norm = nn.LayerNorm(dim, eps=HEAD_LAYER_NORM_EPS)
        self.ref_point_head = HeadMLP(2 * dim, dim, dim, num_layers=2)
        self.box_rpb_embed_x = HeadMLP(2, dim, heads, num_layers=2)
        self.box_rpb_embed_y = HeadMLP(2, dim, heads, num_layers=2)

    def _box_bias(
        self, boxes: torch.Tensor, coords_y: torch.Tensor, coords_x: torch.Tensor, dtype: torch.dtype
    ) -> torch.Tensor:
        """boxes [B, Q, 4] cxcywh float32 -> additive bias [B, heads, 1+Q, H*W], zero row for the presence token."""
        xyxy = box_cxcywh_to_xyxy(boxes)
        # Distances of every row (column) coordinate to the box's top/bottom (left/right) edges.
        dy = coords_y[:, None] - xyxy[:, :, None, 1::2]  # (B, Q, H, 2)
        dx = coords_x[:, None] - xyxy[:, :, None, 0::2]  # (B, Q, W, 2)
        by = _per_head(self.box_rpb_embed_y(_log_scale(dy).to(dtype)))  # (B, heads, 1+Q, H)
        bx = _per_head(self.box_rpb_embed_x(_log_scale(dx).to(dtype)))  # (B, heads, 1+Q, W)
        # The only full-size tensor: written once, already in SDPA's layout.
        bias = by[..., :, None] + bx[..., None, :]  # (B, heads, 1+Q, H, W)
        return bias.flatten(-2)

    def forward(
        self,
        memory: torch.Tensor,
        memory_pos: torch.Tensor,
        prompt: torch.Tensor,
        prompt_valid: torch.Tensor | None,
        spatial_shape: tuple[int, int],
    ) -> DecoderOutput:
        """
        Args:
            memory: [B, h*w, C] DETR-encoder image tokens (row-major over the h x w grid).
            memory_pos: [B or 1, h*w, C] their sine position encoding.
            prompt: [B, S, C] prompt tokens (text + geometry, as given to the DETR encoder).
            prompt_valid: [B, S] bool, True = real token; None = all real.
            spatial_shape: (h, w) of the image grid.
        """
        b, n, c = memory.shape
        height, width = int(spatial_shape[0]), int(spatial_shape[1])
        if c != self.hidden_size or n != height * width:
            raise ValueError(
                f"memory must be [B, {height}*{width}, {self.hidden_size}] for spatial_shape {spatial_shape}, "
                f"got {list(memory.shape)}"
            )
        if memory_pos.shape[1:] != memory.shape[1:] or memory_pos.shape[0] not in (1, b):
            raise ValueError(f"memory_pos {list(memory_pos.shape)} does not match memory {list(memory.shape)}")
        if prompt.ndim != 3 or prompt.shape[0] != b or prompt.shape[2] != c:
            raise ValueError(f"prompt must be [{b}, S, {c}], got {list(prompt.shape)}")
        if prompt_valid is not None and prompt_valid.shape != prompt.shape[:2]:
            raise ValueError(f"prompt_valid must be {list(prompt.shape[:2])}, got {list(prompt_valid.shape)}")

        dtype, device = memory.dtype, memory.device
        # Shape-only tables and layer-invariant sums, once per call.
        coords_y = torch.arange(height, device=device, dtype=torch.float32) / height
        coords_x = torch.arange(width, device=device, dtype=torch.float32) / width
        memory_with_pos = memory + memory_pos
        prompt_mask = key_padding_mask(prompt_valid)

        # boxes: what each layer sees (detached after the first layer); prev: the same values with their graph.
        boxes = prev = self.reference_points.weight.float().sigmoid().expand(b, -1, -1)  # (B, Q, 4) cxcywh
        x = torch.cat((self.presence_token.weight, self.query_embed.weight)).to(dtype).expand(b, -1, -1)

        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            query_pos = self.ref_point_head(encode_boxes(boxes, c // 2).to(dtype))
            query_pos = F.pad(query_pos, (0, 0, 1, 0))  # presence token has no position
            box_bias = self._box_bias(boxes, coords_y, coords_x, dtype)
            x = layer(x, query_pos, prompt, prompt_mask, memory, memory_with_pos, box_bias)

            queries = self.output_layer_norm(x[:, 1:])
            # Same values either way; the reference refines the last layer's boxes outside its decoder loop,
            # from the undetached previous boxes, so gradients reach one layer further back there.
            refined = (inverse_sigmoid(prev if i == last else boxes) + self.box_head(queries).float()).sigmoid()
            prev, boxes = refined, refined.detach()

        presence = self.presence_head(self.presence_layer_norm(x[:, :1])).squeeze(-1).float()
        presence = presence.clamp(-PRESENCE_CLAMP, PRESENCE_CLAMP)
        return DecoderOutput(queries=queries, boxes=box_cxcywh_to_xyxy(refined), presence_logits=presence)
