"""Sine/cosine position encodings (DETR style) for feature maps, points and boxes.

All take coordinates already normalised to [0, 1] and scale them by 2π. Channels come as
interleaved (sin, cos) pairs: [sin f0, cos f0, sin f1, cos f1, ...].
"""

from __future__ import annotations

import math

import torch

from .common import table_cache

_SCALE = 2 * math.pi


def _frequencies(num_feats: int, temperature: float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """[num_feats] divisors temperature^(2*(i//2)/num_feats)."""
    idx = torch.arange(num_feats, device=device).to(dtype)
    return temperature ** (2 * torch.div(idx, 2, rounding_mode="floor") / num_feats)


def _interleave(angles: torch.Tensor) -> torch.Tensor:
    """[..., F] angles -> [..., F] with even slots sin(angle), odd slots cos(angle)."""
    return torch.stack((angles[..., 0::2].sin(), angles[..., 1::2].cos()), dim=-1).flatten(-2)


def encode_coords(coords: torch.Tensor, num_feats: int, temperature: float = 10000.0) -> torch.Tensor:
    """[...] coordinates in [0, 1] -> [..., num_feats] sine encoding."""
    freqs = _frequencies(num_feats, temperature, coords.device, coords.dtype)
    return _interleave(coords[..., None] * _SCALE / freqs)


def encode_boxes(boxes: torch.Tensor, num_feats: int, temperature: float = 10000.0) -> torch.Tensor:
    """[..., 4] boxes (cx, cy, w, h) -> [..., 4 * num_feats] in the order (cy, cx, w, h)."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.cat([encode_coords(c, num_feats, temperature) for c in (cy, cx, w, h)], dim=-1)


@table_cache(maxsize=8)
def _grid_cached(
    height: int, width: int, num_feats: int, temperature: float, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    eps = 1e-6
    # Positions 1..H normalised by (H + eps), as the reference computes it from a cumsum of ones.
    ys = torch.arange(1, height + 1, device=device, dtype=dtype) / (height + eps)
    xs = torch.arange(1, width + 1, device=device, dtype=dtype) / (width + eps)
    pos_y = encode_coords(ys, num_feats, temperature)  # (H, F)
    pos_x = encode_coords(xs, num_feats, temperature)  # (W, F)
    grid = torch.cat(
        (pos_y[:, None, :].expand(height, width, num_feats), pos_x[None, :, :].expand(height, width, num_feats)),
        dim=-1,
    )
    return grid.permute(2, 0, 1).contiguous()  # (2F, H, W)


def encode_grid(
    height: int,
    width: int,
    num_feats: int,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    temperature: float = 10000.0,
) -> torch.Tensor:
    """Normalised 2-D sine encoding of an H x W feature map -> [2 * num_feats, H, W] (y half, then x).

    Cached per shape/device/dtype: it depends on nothing else, and the heads ask for it on every call.
    Treat the result as read-only.
    """
    return _grid_cached(height, width, num_feats, float(temperature), torch.device(device), dtype)
