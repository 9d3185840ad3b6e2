"""Memory encoder: a frame's image features and its predicted mask become a 64-channel memory.

The mask (at 16 x the feature grid) is downsampled x16 by strided convs; the image features go through
a 1x1 conv; their sum goes through two ConvNeXt-style blocks and a 1x1 projection to 64 channels.

Module names equal the checkpoint keys under ``tracker_model.memory_encoder.``.
"""

from __future__ import annotations

import torch
from torch import nn

from ..common import activation
from .config import TrackerConfig
from .layers import LayerNorm2d


class MaskDownSamplerLayer(nn.Module):
    """Strided conv, channels-first LayerNorm, activation."""

    def __init__(self, config: TrackerConfig, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size=config.mask_downsampler_kernel_size,
            stride=config.mask_downsampler_stride,
            padding=config.mask_downsampler_padding,
        )
        self.layer_norm = LayerNorm2d(out_channels, eps=1e-6)
        self.act = activation(config.mask_downsampler_hidden_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.layer_norm(self.conv(x)))


class MaskDownSampler(nn.Module):
    """[B, 1, 16h, 16w] -> [B, D, h, w]: channels grow by stride² per layer, then a 1x1 conv to D."""

    def __init__(self, config: TrackerConfig) -> None:
        super().__init__()
        layers, channels = [], 1
        for _ in range(config.mask_downsampler_num_layers):
            out = channels * config.mask_downsampler_stride**2
            layers.append(MaskDownSamplerLayer(config, channels, out))
            channels = out
        self.layers = nn.ModuleList(layers)
        self.final_conv = nn.Conv2d(channels, config.mask_downsampler_embed_dim, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.final_conv(x)


class FuserBlock(nn.Module):
    """ConvNeXt block: depthwise conv, LayerNorm, pointwise MLP, layer scale, residual."""

    def __init__(self, config: TrackerConfig) -> None:
        super().__init__()
        dim = config.memory_fuser_embed_dim
        self.depthwise_conv = nn.Conv2d(
            dim, dim, kernel_size=config.memory_fuser_kernel_size, padding=config.memory_fuser_padding, groups=dim
        )
        self.layer_norm = LayerNorm2d(dim, eps=1e-6)
        self.pointwise_conv1 = nn.Linear(dim, config.memory_fuser_intermediate_dim)
        self.pointwise_conv2 = nn.Linear(config.memory_fuser_intermediate_dim, dim)
        self.act = activation(config.memory_fuser_hidden_act)
        self.scale = nn.Parameter(torch.full((dim,), config.memory_fuser_layer_scale_init_value))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.layer_norm(self.depthwise_conv(x)).permute(0, 2, 3, 1)  # (B, H, W, C)
        y = self.scale * self.pointwise_conv2(self.act(self.pointwise_conv1(y)))
        return x + y.permute(0, 3, 1, 2)


class MemoryFuser(nn.Module):
    def __init__(self, config: TrackerConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(FuserBlock(config) for _ in range(config.memory_fuser_num_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class MemoryEncoder(nn.Module):
    """features [1 or B, C, h, w] + mask [B, 1, 16h, 16w] (already scaled to ±10) -> memory [B, 64, h, w].

    The memory's spatial position encoding (a normalised sine map of its grid) depends only on the
    shape; ``Sam3Tracker`` computes it where it is read instead of storing it with every memory.
    """

    def __init__(self, config: TrackerConfig) -> None:
        super().__init__()
        dim = config.memory_encoder_hidden_size
        self.mask_downsampler = MaskDownSampler(config)
        self.feature_projection = nn.Conv2d(dim, dim, kernel_size=1)
        self.memory_fuser = MemoryFuser(config)
        self.projection = nn.Conv2d(dim, config.memory_encoder_output_channels, kernel_size=1)

    def forward(self, features: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        x = self.feature_projection(features) + self.mask_downsampler(masks)
        return self.projection(self.memory_fuser(x))
