"""Image encoder: a plain ViT with windowed/global attention and 2-D axial RoPE, then an FPN neck.

Shapes use B = batch, S = image side, h = w = S / patch_size (the patch grid), C = ViT width and
D = FPN width (``fpn_hidden_size``). Inside the ViT, tokens stay in a [B, h, w, C] layout, as in
segment-anything's image encoder, so windowing is a view and a transpose.

Module attribute names equal the checkpoint keys of the reference ``vision_encoder`` (with that
prefix stripped): the state dict loads strictly without renaming.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .common import MLP, table_cache
from .config import VisionConfig, ViTConfig
from .position import encode_grid


@dataclass
class VisionFeatures:
    """What the image encoder hands the detector.

    fpn_hidden_states: the levels the detector uses, finest first: [B, D, 4h, 4w], [B, D, 2h, 2w],
        [B, D, h, w] for the default scale factors (4, 2, 1; the 0.5 level is not computed).
    fpn_position_encoding: sine position maps of the same shapes. They are cached tables expanded
        over the batch (views, not copies): treat them as read-only.
    last_hidden_state: ViT output tokens [B, h * w, C], row-major over the patch grid.
    """

    fpn_hidden_states: tuple[torch.Tensor, ...]
    fpn_position_encoding: tuple[torch.Tensor, ...]
    last_hidden_state: torch.Tensor


# ---------------------------------------------------------------------------------------------
# Rotary position embedding (2-D axial)
# ---------------------------------------------------------------------------------------------


@table_cache(maxsize=16)
def _rope_cached(
    side: int, scale: float, head_dim: int, theta: float, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    half = head_dim // 2
    # head_dim / 4 frequencies, shared by the x and y axes.
    inv_freq = 1.0 / theta ** (torch.arange(0, half, 2, dtype=torch.float32, device=device) / half)
    coords = torch.arange(side, device=device) * scale  # float32
    ys, xs = torch.meshgrid(coords, coords, indexing="ij")
    # Pair i of a head rotates by x-angles for the first head_dim/4 pairs, y-angles for the rest.
    angles = torch.cat((xs.reshape(-1, 1) * inv_freq, ys.reshape(-1, 1) * inv_freq), dim=-1)
    return angles.cos(), angles.sin()


def rope_tables(
    side: int, scale: float, head_dim: int, theta: float = 10000.0, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin tables [side * side, head_dim / 2] in float32 for a side x side token grid.

    Token (y, x) (row-major) sits at coordinates (y * scale, x * scale). Always float32, whatever the
    model dtype: the angles reach tens of radians and bfloat16 would garble them. Cached per
    shape/device; treat the result as read-only.
    """
    return _rope_cached(side, float(scale), head_dim, float(theta), torch.device(device))


def _tracing() -> bool:
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent channel pairs (2i, 2i+1) of x [..., N, head_dim] by the angles of cos/sin
    [N, head_dim / 2]. Computed in float32, returned in x's dtype.

    On CPU and CUDA the pairs are multiplied as complex numbers by cos + i sin: one kernel instead of
    six elementwise passes (about 8x faster on the CPU, where the tracker's memory attention rotates
    seven frames of keys per object and layer), and the same products and sums, so the same bits.
    Traced, exported or compiled graphs take the real-valued form (ONNX has no complex tensors).
    """
    if x.device.type in ("cpu", "cuda") and not _tracing():
        pairs = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)).contiguous())
        return torch.view_as_real(pairs * torch.complex(cos, sin)).flatten(-2).to(x.dtype)
    pairs = x.float().unflatten(-1, (-1, 2))
    x0, x1 = pairs.unbind(-1)
    out = torch.stack((x0 * cos - x1 * sin, x1 * cos + x0 * sin), dim=-1).flatten(-2)
    return out.to(x.dtype)


# ---------------------------------------------------------------------------------------------
# Windowing
# ---------------------------------------------------------------------------------------------


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """[B, h, w, C] -> [B * (h/window) * (w/window), window * window, C] non-overlapping windows.

    No padding: the config guarantees the patch grid is a multiple of the window size.
    """
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c).transpose(2, 3)  # (B, nh, nw, ws, ws, C)
    return x.reshape(-1, window * window, c)


def window_unpartition(windows: torch.Tensor, window: int, height: int, width: int) -> torch.Tensor:
    """Inverse of ``window_partition``: [B * nW, window * window, C] -> [B, height, width, C]."""
    c = windows.shape[-1]
    x = windows.view(-1, height // window, width // window, window, window, c).transpose(2, 3)
    return x.reshape(-1, height, width, c)


# ---------------------------------------------------------------------------------------------
# ViT backbone
# ---------------------------------------------------------------------------------------------


class PatchEmbeddings(nn.Module):
    """Non-overlapping patch x patch convolution, no bias: [B, 3, S, S] -> [B, C, h, w]."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        p = config.patch_size
        self.projection = nn.Conv2d(config.num_channels, config.hidden_size, kernel_size=p, stride=p, bias=False)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        # Cast here so float32 images feed a bfloat16 model.
        return self.projection(pixel_values.to(self.projection.weight.dtype))


class ViTEmbeddings(nn.Module):
    """Patch embeddings plus the absolute position embedding of the pretraining grid, tiled.

    The pretraining grid (``pretrain_image_size / patch_size``, 24 for SAM3) is repeated over the
    larger grid (72 = 3 x 24), not interpolated: that is how the checkpoint was trained.
    """

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        pretrain_side = config.pretrain_image_size // config.patch_size
        self.position_embeddings = nn.Parameter(torch.zeros(1, pretrain_side * pretrain_side, config.hidden_size))
        self.patch_embeddings = PatchEmbeddings(config)

    def _tiled_positions(self, height: int, width: int) -> torch.Tensor:
        """[height, width, C] position embedding (the pretraining grid repeated, then cropped)."""
        side = math.isqrt(self.position_embeddings.shape[1])
        pos = self.position_embeddings.view(side, side, -1)
        if side == height == width:
            return pos
        return pos.tile(-(-height // side), -(-width // side), 1)[:height, :width]

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[B, 3, S, S] -> [B, h, w, C]."""
        x = self.patch_embeddings(pixel_values).permute(0, 2, 3, 1)  # (B, h, w, C)
        return x + self._tiled_positions(x.shape[1], x.shape[2])


class RoPEAttention(nn.Module):
    """Multi-head self-attention with axial RoPE on queries and keys, on ``scaled_dot_product_attention``."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        dim = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = dim // self.num_heads
        self.dropout = config.attention_dropout
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.o_proj = nn.Linear(dim, dim)
        # Set by ``sam3lite.modeling.quantize`` to an int8 module computing q/k/v in one product; None = float path.
        self.qkv: nn.Module | None = None

    def fused_qkv(self) -> tuple[torch.Tensor, torch.Tensor]:
        """q/k/v weights stacked [3C, C] and biases [3C]: one GEMM instead of three.

        The checkpoint keeps separate q_proj/k_proj/v_proj. The stack is rebuilt every call rather
        than cached: a cache would hold a second copy of every q/k/v weight (about 400 MB for the
        full-size ViT in float32), while the copy costs about 0.2% of a forward pass.
        """
        weights = (self.q_proj.weight, self.k_proj.weight, self.v_proj.weight)
        biases = (self.q_proj.bias, self.k_proj.bias, self.v_proj.bias)
        return torch.cat(weights), torch.cat(biases)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """x [B', N, C] (B' = batch x windows), rope = cos, sin [N, d / 2] -> [B', N, C]."""
        cos, sin = rope
        b, n, _ = x.shape
        qkv = self.qkv(x) if self.qkv is not None else F.linear(x, *self.fused_qkv())
        qkv = qkv.view(b, n, 3, self.num_heads, self.head_dim)
        qkv = qkv.permute(2, 0, 3, 1, 4)  # (3, B', heads, N, d)
        q, k = apply_rope(qkv[:2], cos, sin).unbind(0)  # one rotation pass for q and k together
        out = F.scaled_dot_product_attention(q, k, qkv[2], dropout_p=self.dropout if self.training else 0.0)
        return self.o_proj(out.transpose(1, 2).reshape(b, n, -1))


class ViTLayer(nn.Module):
    """Pre-norm transformer block; attention within windows (``window_size > 0``) or over the whole grid.

    The LayerNorms stay plain ``nn.LayerNorm``: for bfloat16 inputs its kernels already accumulate
    mean and variance in float32, so an explicit upcast would only add copies.
    """

    def __init__(self, config: ViTConfig, window_size: int) -> None:
        super().__init__()
        self.window_size = window_size
        self.layer_norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = RoPEAttention(config)
        self.layer_norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = MLP(config.hidden_size, config.intermediate_size, config.hidden_act)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """x [B, h, w, C] -> [B, h, w, C]; ``rope`` is the table for this layer's token grid."""
        b, h, w, c = x.shape
        y = self.layer_norm1(x)
        if self.window_size > 0:
            y = window_unpartition(self.attention(window_partition(y, self.window_size), rope), self.window_size, h, w)
        else:
            y = self.attention(y.view(b, h * w, c), rope).view(b, h, w, c)
        x = x + y
        return x + self.mlp(self.layer_norm2(x))


class ViT(nn.Module):
    """Patch embedding, a LayerNorm, then the blocks (no final norm): [B, 3, S, S] -> [B, h, w, C].

    Windowed layers see positions 0..window-1 inside each window; global layers see the whole grid
    with coordinates scaled by window / grid, so both span the same RoPE range.
    """

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        if (config.hidden_size // config.num_attention_heads) % 4:
            raise ValueError(
                f"ViTConfig: head dim {config.hidden_size // config.num_attention_heads} must be a multiple of 4 "
                "for 2-D axial RoPE"
            )
        self.config = config
        self.embeddings = ViTEmbeddings(config)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        global_layers = set(config.global_attn_indexes)
        self.layers = nn.ModuleList(
            ViTLayer(config, 0 if i in global_layers else config.window_size) for i in range(config.num_hidden_layers)
        )

    def _rope(self, device: torch.device) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """RoPE tables keyed by a layer's window size (0 = global)."""
        cfg = self.config
        head_dim = cfg.hidden_size // cfg.num_attention_heads
        grid, window = cfg.grid_size, cfg.window_size
        return {
            window: rope_tables(window, 1.0, head_dim, cfg.rope_theta, device),
            0: rope_tables(grid, window / grid, head_dim, cfg.rope_theta, device),
        }

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.layer_norm(self.embeddings(pixel_values))
        ropes = self._rope(x.device)
        for layer in self.layers:
            x = layer(x, ropes[layer.window_size])
        return x


# ---------------------------------------------------------------------------------------------
# FPN neck
# ---------------------------------------------------------------------------------------------


class FPNLayer(nn.Module):
    """One pyramid level: rescale the ViT map, then a 1x1 and a 3x3 conv (no activation between).

    Rescaling: x4 = ConvT(C -> C/2), GELU, ConvT(C/2 -> C/4); x2 = ConvT(C -> C/2); x1 = identity;
    x0.5 = 2x2 max-pool.
    """

    def __init__(self, in_channels: int, out_channels: int, scale_factor: float) -> None:
        super().__init__()
        self.scale_factor = scale_factor
        c = in_channels
        if scale_factor == 4.0:
            layers = [
                nn.ConvTranspose2d(c, c // 2, 2, stride=2),
                nn.GELU(),
                nn.ConvTranspose2d(c // 2, c // 4, 2, stride=2),
            ]
            mid = c // 4
        elif scale_factor == 2.0:
            layers, mid = [nn.ConvTranspose2d(c, c // 2, 2, stride=2)], c // 2
        elif scale_factor == 1.0:
            layers, mid = [], c
        elif scale_factor == 0.5:
            layers, mid = [nn.MaxPool2d(kernel_size=2, stride=2)], c
        else:
            raise ValueError(f"VisionConfig.scale_factors: {scale_factor} is not one of 4.0, 2.0, 1.0, 0.5")
        self.scale_layers = nn.ModuleList(layers)
        self.proj1 = nn.Conv2d(mid, out_channels, kernel_size=1)
        self.proj2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, h, w] -> [B, D, scale * h, scale * w]."""
        for layer in self.scale_layers:
            x = layer(x)
        return self.proj2(self.proj1(x))


@table_cache(maxsize=16)
def _position_map(height: int, width: int, num_feats: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    # Computed in float32 and cast once: a bfloat16 sine of angles up to 2π would be coarse.
    return encode_grid(height, width, num_feats, device, torch.float32).to(dtype)


class VisionNeck(nn.Module):
    """FPN over the last ViT map, plus a normalized sine position map per level.

    Holds one level per ``scale_factors`` entry (all are in the checkpoint) but computes only the
    first ``len(scale_factors) - 1``: the detector drops the coarsest one.
    """

    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        self.fpn_hidden_size = config.fpn_hidden_size
        width = config.backbone_config.hidden_size
        self.fpn_layers = nn.ModuleList(FPNLayer(width, config.fpn_hidden_size, s) for s in config.scale_factors)

    def forward(self, x: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
        """x [B, C, h, w] -> (levels, position maps), each level [B, D, scale * h, scale * w]."""
        levels = tuple(layer(x) for layer in self.fpn_layers[:-1])
        positions = tuple(
            _position_map(f.shape[-2], f.shape[-1], self.fpn_hidden_size // 2, f.device, f.dtype).expand(
                f.shape[0], -1, -1, -1
            )
            for f in levels
        )
        return levels, positions


# ---------------------------------------------------------------------------------------------
# Whole encoder
# ---------------------------------------------------------------------------------------------


class VisionEncoder(nn.Module):
    """ViT backbone + FPN neck: pixel_values [B, 3, S, S] -> ``VisionFeatures``."""

    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = ViT(config.backbone_config)
        self.neck = VisionNeck(config)

    def _check_input(self, pixel_values: torch.Tensor) -> None:
        cfg = self.config.backbone_config
        expected = f"[batch, {cfg.num_channels}, {cfg.image_size}, {cfg.image_size}]"
        if not isinstance(pixel_values, torch.Tensor) or not pixel_values.is_floating_point():
            kind = pixel_values.dtype if isinstance(pixel_values, torch.Tensor) else type(pixel_values).__name__
            raise ValueError(f"pixel_values must be a floating-point tensor {expected}, got {kind}")
        if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != (
            cfg.num_channels,
            cfg.image_size,
            cfg.image_size,
        ):
            raise ValueError(f"pixel_values must have shape {expected}, got {list(pixel_values.shape)}")

    def forward(self, pixel_values: torch.Tensor) -> VisionFeatures:
        self._check_input(pixel_values)
        tokens = self.backbone(pixel_values)  # (B, h, w, C)
        levels, positions = self.neck(tokens.permute(0, 3, 1, 2))
        return VisionFeatures(levels, positions, tokens.flatten(1, 2))
