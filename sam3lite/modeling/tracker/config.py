"""Typed config of SAM3's tracker (``sam3_tracker_video``), read from and written back to the
``tracker_config`` block of a ``sam3_video`` ``config.json``.

Field names and defaults follow transformers' ``Sam3TrackerVideoConfig`` (full-size SAM3). Keys we do
not model are kept in ``extra`` and written back unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..config import VisionConfig, _Config

TRACKER_MODEL_TYPE = "sam3_tracker_video"

# The memory cross-attention reads 64-wide keys/values: the reference hard-codes that width.
MEMORY_KV_WIDTH = 64


@dataclass
class TrackerPromptEncoderConfig(_Config):
    """Point/box/mask prompt encoder."""

    model_type: str = "sam3_tracker_video_prompt_encoder"
    hidden_size: int = 256
    image_size: int = 1008
    patch_size: int = 14
    mask_input_channels: int = 16
    num_point_embeddings: int = 4
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-6
    scale: float = 1

    @property
    def grid_size(self) -> int:
        """Side of the image-embedding grid (72 at full size)."""
        return self.image_size // self.patch_size

    def validate(self) -> None:
        self._check_positive("hidden_size", "image_size", "patch_size", "mask_input_channels")
        if self.hidden_size % 2:
            raise ValueError(f"TrackerPromptEncoderConfig.hidden_size={self.hidden_size} must be even")
        if self.mask_input_channels % 4:
            raise ValueError(
                f"TrackerPromptEncoderConfig.mask_input_channels={self.mask_input_channels} must be a multiple of 4"
            )
        if self.num_point_embeddings < 4:
            raise ValueError(
                "TrackerPromptEncoderConfig.num_point_embeddings must be >= 4 (negative, positive, two box corners), "
                f"got {self.num_point_embeddings}"
            )


@dataclass
class TrackerMaskDecoderConfig(_Config):
    """Two-way transformer mask decoder with IoU and object-score heads."""

    model_type: str = "sam3_tracker_video_mask_decoder"
    hidden_size: int = 256
    hidden_act: str = "gelu"
    mlp_dim: int = 2048
    num_hidden_layers: int = 2
    num_attention_heads: int = 8
    attention_downsample_rate: int = 2
    num_multimask_outputs: int = 3
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
    dynamic_multimask_via_stability: bool = True
    dynamic_multimask_stability_delta: float = 0.05
    dynamic_multimask_stability_thresh: float = 0.98

    def validate(self) -> None:
        self._check_positive(
            "hidden_size", "mlp_dim", "num_hidden_layers", "num_attention_heads", "attention_downsample_rate"
        )
        if self.hidden_size % 8:
            raise ValueError(f"TrackerMaskDecoderConfig.hidden_size={self.hidden_size} must be a multiple of 8")
        inner = self.hidden_size // self.attention_downsample_rate
        if inner % self.num_attention_heads:
            raise ValueError(
                f"TrackerMaskDecoderConfig: hidden_size / attention_downsample_rate = {inner} is not divisible by "
                f"num_attention_heads={self.num_attention_heads}"
            )
        if self.num_multimask_outputs < 1:
            raise ValueError("TrackerMaskDecoderConfig.num_multimask_outputs must be >= 1")


def _default_vision() -> VisionConfig:
    return VisionConfig.from_dict({"backbone_feature_sizes": [[288, 288], [144, 144], [72, 72]]})


@dataclass
class TrackerConfig(_Config):
    """SAM3's tracker: image part (prompt encoder, mask decoder) and video part (memory)."""

    model_type: str = TRACKER_MODEL_TYPE
    vision_config: VisionConfig = field(default_factory=_default_vision)
    prompt_encoder_config: TrackerPromptEncoderConfig = field(default_factory=TrackerPromptEncoderConfig)
    mask_decoder_config: TrackerMaskDecoderConfig = field(default_factory=TrackerMaskDecoderConfig)
    image_size: int = 1008
    initializer_range: float = 0.02
    # Memory bank and what a frame reads.
    num_maskmem: int = 7
    sigmoid_scale_for_mem_enc: float = 20.0
    sigmoid_bias_for_mem_enc: float = -10.0
    enable_occlusion_spatial_embedding: bool = True
    multimask_output_in_sam: bool = True
    multimask_min_pt_num: int = 0
    multimask_max_pt_num: int = 1
    multimask_output_for_tracking: bool = True
    max_object_pointers_in_encoder: int = 16
    max_cond_frame_num: int = 4
    enable_temporal_pos_encoding_for_object_pointers: bool = True
    # Memory attention.
    memory_attention_hidden_size: int = 256
    memory_attention_num_layers: int = 4
    memory_attention_num_attention_heads: int = 1
    memory_attention_downsample_rate: int = 1
    memory_attention_feed_forward_hidden_size: int = 2048
    memory_attention_feed_forward_hidden_act: str = "relu"
    memory_attention_dropout: float = 0.1
    memory_attention_rope_feat_sizes: list[int] = field(default_factory=lambda: [72, 72])
    memory_attention_rope_dropout: float = 0.1
    rope_parameters: dict[str, Any] = field(default_factory=lambda: {"rope_theta": 10000.0, "rope_type": "axial"})
    # Memory encoder.
    memory_encoder_hidden_size: int = 256
    memory_encoder_output_channels: int = 64
    mask_downsampler_embed_dim: int = 256
    mask_downsampler_kernel_size: int = 3
    mask_downsampler_stride: int = 2
    mask_downsampler_padding: int = 1
    mask_downsampler_total_stride: int = 16
    mask_downsampler_hidden_act: str = "gelu"
    memory_fuser_num_layers: int = 2
    memory_fuser_embed_dim: int = 256
    memory_fuser_intermediate_dim: int = 1024
    memory_fuser_kernel_size: int = 7
    memory_fuser_padding: int = 3
    memory_fuser_layer_scale_init_value: float = 1e-6
    memory_fuser_hidden_act: str = "gelu"

    _nested: ClassVar[dict[str, Any]] = {
        "vision_config": VisionConfig,
        "prompt_encoder_config": TrackerPromptEncoderConfig,
        "mask_decoder_config": TrackerMaskDecoderConfig,
    }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None = None, **overrides: Any) -> TrackerConfig:
        data = {**(data or {}), **overrides}
        # A video config wraps the tracker; take the tracker part.
        if isinstance(data.get("tracker_config"), dict):
            data = data["tracker_config"]
        model_type = data.get("model_type", TRACKER_MODEL_TYPE)
        if model_type not in (TRACKER_MODEL_TYPE, "sam3_tracker"):
            raise ValueError(f"config model_type={model_type!r} is not a SAM3 tracker; expected {TRACKER_MODEL_TYPE!r}")
        return super().from_dict(data)

    @property
    def hidden_size(self) -> int:
        """Width of image features, prompts, decoder tokens and object pointers (256 at full size)."""
        return self.vision_config.fpn_hidden_size

    @property
    def memory_dim(self) -> int:
        """Width of the encoded memories and of the memory-attention keys/values (64)."""
        return self.memory_encoder_output_channels

    @property
    def grid_size(self) -> int:
        """Side of the lowest-resolution feature grid (72 at full size)."""
        return self.prompt_encoder_config.grid_size

    @property
    def mask_input_size(self) -> int:
        """Side of the low-resolution mask logits (4 x the grid: 288 at full size)."""
        return 4 * self.grid_size

    @property
    def mask_downsampler_num_layers(self) -> int:
        """Strided conv layers taking a mask down by ``mask_downsampler_total_stride`` (4 for 16 / 2)."""
        return int(math.log2(self.mask_downsampler_total_stride) // math.log2(self.mask_downsampler_stride))

    @property
    def rope_theta(self) -> float:
        return float((self.rope_parameters or {}).get("rope_theta", 10000.0))

    def validate(self) -> None:
        self._check_positive("num_maskmem", "max_object_pointers_in_encoder", "memory_attention_num_layers")
        width = self.hidden_size
        widths = {
            "prompt_encoder_config.hidden_size": self.prompt_encoder_config.hidden_size,
            "mask_decoder_config.hidden_size": self.mask_decoder_config.hidden_size,
            "memory_attention_hidden_size": self.memory_attention_hidden_size,
            "memory_encoder_hidden_size": self.memory_encoder_hidden_size,
            "mask_downsampler_embed_dim": self.mask_downsampler_embed_dim,
            "memory_fuser_embed_dim": self.memory_fuser_embed_dim,
        }
        for name, value in widths.items():
            if value != width:
                raise ValueError(
                    f"TrackerConfig.{name}={value} must equal vision_config.fpn_hidden_size={width} "
                    "(the tracker adds these features to each other)"
                )
        if self.memory_dim != MEMORY_KV_WIDTH:
            raise ValueError(
                f"TrackerConfig.memory_encoder_output_channels={self.memory_dim} must be {MEMORY_KV_WIDTH}: the memory "
                "attention reads 64-wide keys and values"
            )
        if width % self.memory_dim:
            raise ValueError(
                f"vision_config.fpn_hidden_size={width} must be a multiple of memory_encoder_output_channels="
                f"{self.memory_dim} (object pointers are split into memory-wide tokens)"
            )
        inner = self.memory_attention_hidden_size // self.memory_attention_downsample_rate
        if (
            inner % self.memory_attention_num_attention_heads
            or (inner // self.memory_attention_num_attention_heads) % 4
        ):
            raise ValueError(
                "TrackerConfig: memory-attention head width "
                f"{inner}/{self.memory_attention_num_attention_heads} must be a multiple of 4 for 2-D RoPE"
            )
        grid = self.grid_size
        if self.prompt_encoder_config.image_size != self.image_size:
            raise ValueError(
                f"TrackerConfig.prompt_encoder_config.image_size={self.prompt_encoder_config.image_size} must equal "
                f"image_size={self.image_size}"
            )
        if list(self.memory_attention_rope_feat_sizes) != [grid, grid]:
            raise ValueError(
                f"TrackerConfig.memory_attention_rope_feat_sizes={self.memory_attention_rope_feat_sizes} must be "
                f"[{grid}, {grid}] (image_size / patch_size)"
            )
        stride = self.mask_downsampler_stride
        if stride < 2 or stride**self.mask_downsampler_num_layers != self.mask_downsampler_total_stride:
            raise ValueError(
                f"TrackerConfig.mask_downsampler_total_stride={self.mask_downsampler_total_stride} must be a power of "
                f"mask_downsampler_stride={stride}"
            )
