"""Typed configs, read from and written back to the HF ``config.json``.

Field names and defaults follow the transformers configs (``Sam3LiteTextConfig`` and ``Sam3Config``)
so that the same ``config.json`` drives both implementations. Keys we do not model (``id2label``,
``transformers_version`` ...) are kept in ``extra`` and written back unchanged: nothing the file held
is lost by a load/save round trip.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from ..runtime import check_text_mode

C = TypeVar("C", bound="_Config")


@dataclass
class _Config:
    """Base: ``from_dict`` / ``to_dict`` with nested sub-configs and pass-through of unknown keys."""

    extra: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    # Sub-config fields: name -> class (or a callable choosing the class from the dict).
    _nested: ClassVar[dict[str, Any]] = {}
    _model_types: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any] | None = None, **overrides: Any) -> C:
        """Build from a (possibly partial) HF config dict; missing fields take the defaults."""
        data = {**(data or {}), **overrides}
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for key, value in data.items():
            if key in names:
                known[key] = value
            else:
                extra[key] = value
        for name, sub in cls._nested.items():
            value = known.get(name)
            if isinstance(value, _Config):
                continue
            sub_cls = sub(value or {}) if not isinstance(sub, type) else sub
            known[name] = sub_cls.from_dict(value or {})
        config = cls(**known)
        config.extra = extra
        config.validate()
        return config

    def to_dict(self) -> dict[str, Any]:
        """Plain dict in the HF layout (sub-configs nested, unknown keys restored)."""
        out: dict[str, Any] = dict(self.extra)
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            out[f.name] = value.to_dict() if isinstance(value, _Config) else _plain(value)
        return out

    def validate(self) -> None:
        """Check cross-field constraints; raise ValueError naming the field."""

    def _check_positive(self, *names: str) -> None:
        for name in names:
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{type(self).__name__}.{name} must be a positive int, got {value!r}")

    def _check_divisible(self, width: str = "hidden_size", heads: str = "num_attention_heads") -> None:
        if getattr(self, width) % getattr(self, heads):
            raise ValueError(
                f"{type(self).__name__}.{width}={getattr(self, width)} is not divisible by "
                f"{heads}={getattr(self, heads)}"
            )


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------------
# Vision
# ---------------------------------------------------------------------------------------------


@dataclass
class ViTConfig(_Config):
    """The ViT backbone (``sam3_vit_model``)."""

    model_type: str = "sam3_vit_model"
    hidden_size: int = 1024
    intermediate_size: int = 4736
    num_hidden_layers: int = 32
    num_attention_heads: int = 16
    num_channels: int = 3
    image_size: int = 1008
    patch_size: int = 14
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-6
    attention_dropout: float = 0.0
    window_size: int = 24
    global_attn_indexes: list[int] = field(default_factory=lambda: [7, 15, 23, 31])
    layer_scale_init_value: float | None = None
    pretrain_image_size: int = 336
    hidden_dropout: float = 0.0
    initializer_range: float = 0.02
    rope_parameters: dict[str, Any] = field(default_factory=lambda: {"rope_theta": 10000.0, "rope_type": "axial"})

    @property
    def grid_size(self) -> int:
        """Patch grid side (72 for 1008 / 14)."""
        return self.image_size // self.patch_size

    @property
    def rope_theta(self) -> float:
        return float((self.rope_parameters or {}).get("rope_theta", 10000.0))

    def validate(self) -> None:
        self._check_positive("hidden_size", "num_hidden_layers", "num_attention_heads", "image_size", "patch_size")
        self._check_divisible()
        if self.image_size % self.patch_size:
            raise ValueError(
                f"ViTConfig.image_size={self.image_size} is not a multiple of patch_size={self.patch_size}"
            )
        if self.grid_size % self.window_size:
            raise ValueError(
                f"ViTConfig: patch grid {self.grid_size} is not a multiple of window_size={self.window_size}"
            )
        bad = [i for i in self.global_attn_indexes if not 0 <= i < self.num_hidden_layers]
        if bad:
            raise ValueError(f"ViTConfig.global_attn_indexes has layers out of range: {bad}")


@dataclass
class VisionConfig(_Config):
    """ViT backbone plus FPN neck (``sam3_vision_model``)."""

    model_type: str = "sam3_vision_model"
    backbone_config: ViTConfig = field(default_factory=ViTConfig)
    fpn_hidden_size: int = 256
    backbone_feature_sizes: list[list[int]] = field(default_factory=lambda: [[288, 288], [144, 144], [72, 72]])
    scale_factors: list[float] = field(default_factory=lambda: [4.0, 2.0, 1.0, 0.5])
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-6
    initializer_range: float = 0.02

    _nested: ClassVar[dict[str, Any]] = {"backbone_config": ViTConfig}

    @property
    def image_size(self) -> int:
        return self.backbone_config.image_size


# ---------------------------------------------------------------------------------------------
# Text
# ---------------------------------------------------------------------------------------------


@dataclass
class TextConfig(_Config):
    """MobileCLIP student text encoder (``sam3_lite_text_text_model``)."""

    model_type: str = "sam3_lite_text_text_model"
    vocab_size: int = 49408
    hidden_size: int = 512
    intermediate_size: int = 2048
    projection_dim: int = 512
    num_hidden_layers: int = 12
    num_attention_heads: int = 8
    max_position_embeddings: int = 77
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-5
    attention_dropout: float = 0.0
    use_repmixer_blocks: bool = True
    layer_scale_init_value: float = 1e-5
    repmixer_kernel_size: int = 11

    def validate(self) -> None:
        self._check_positive("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads")
        self._check_divisible()
        if self.use_repmixer_blocks and self.num_hidden_layers < 2:
            raise ValueError("TextConfig: use_repmixer_blocks needs num_hidden_layers >= 2 (first and last)")


@dataclass
class ClipTextConfig(_Config):
    """SAM3's own CLIP text encoder (``clip_text_model``: causal, 24 layers, width 1024)."""

    model_type: str = "clip_text_model"
    vocab_size: int = 49408
    hidden_size: int = 1024
    intermediate_size: int = 4096
    projection_dim: int = 512
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    max_position_embeddings: int = 32
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-5
    attention_dropout: float = 0.0
    initializer_range: float = 0.02
    initializer_factor: float = 1.0
    pad_token_id: int = 1
    bos_token_id: int = 49406
    eos_token_id: int = 49407

    def validate(self) -> None:
        self._check_positive("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads")
        self._check_divisible()


# ---------------------------------------------------------------------------------------------
# Prompt / DETR heads
# ---------------------------------------------------------------------------------------------


@dataclass
class _HeadConfig(_Config):
    hidden_size: int = 256
    num_attention_heads: int = 8
    layer_norm_eps: float = 1e-6  # stored for round trips; the reference's LayerNorms use 1e-5
    initializer_range: float = 0.02

    def validate(self) -> None:
        self._check_positive("hidden_size", "num_attention_heads")
        self._check_divisible()


@dataclass
class GeometryEncoderConfig(_HeadConfig):
    """Box-prompt encoder."""

    model_type: str = "sam3_lite_text_geometry_encoder"
    num_layers: int = 3
    intermediate_size: int = 2048
    dropout: float = 0.1
    hidden_act: str = "relu"
    hidden_dropout: float = 0.0
    roi_size: int = 7


@dataclass
class DETREncoderConfig(_HeadConfig):
    """DETR encoder fusing image tokens with the prompt."""

    model_type: str = "sam3_lite_text_detr_encoder"
    num_layers: int = 6
    intermediate_size: int = 2048
    dropout: float = 0.1
    hidden_act: str = "relu"
    hidden_dropout: float = 0.0


@dataclass
class DETRDecoderConfig(_HeadConfig):
    """DETR decoder with presence token."""

    model_type: str = "sam3_lite_text_detr_decoder"
    num_layers: int = 6
    num_queries: int = 200
    intermediate_size: int = 2048
    dropout: float = 0.1
    hidden_act: str = "relu"
    hidden_dropout: float = 0.0


@dataclass
class MaskDecoderConfig(_HeadConfig):
    """Pixel decoder and mask head."""

    model_type: str = "sam3_lite_text_mask_decoder"
    num_upsampling_stages: int = 3
    dropout: float = 0.0


# ---------------------------------------------------------------------------------------------
# Whole model
# ---------------------------------------------------------------------------------------------

LITE_MODEL_TYPE = "sam3_lite_text"
SAM3_MODEL_TYPE = "sam3"


def _text_config_class(data: dict[str, Any]) -> type[_Config]:
    return ClipTextConfig if data.get("model_type") == "clip_text_model" else TextConfig


@dataclass
class Sam3LiteTextConfig(_Config):
    """The whole detector. ``model_type`` ``sam3_lite_text`` (MobileCLIP text) or ``sam3`` (CLIP text)."""

    model_type: str = LITE_MODEL_TYPE
    vision_config: VisionConfig = field(default_factory=VisionConfig)
    text_config: TextConfig | ClipTextConfig = field(default_factory=TextConfig)
    geometry_encoder_config: GeometryEncoderConfig = field(default_factory=GeometryEncoderConfig)
    detr_encoder_config: DETREncoderConfig = field(default_factory=DETREncoderConfig)
    detr_decoder_config: DETRDecoderConfig = field(default_factory=DETRDecoderConfig)
    mask_decoder_config: MaskDecoderConfig = field(default_factory=MaskDecoderConfig)
    initializer_range: float = 0.02
    # sam3lite's own key (transformers ignores it): how prompts are encoded, see sam3lite.runtime.TEXT_MODES.
    # Written to config.json only when it is not the default, so HF configs round-trip unchanged.
    text_mode: str = "transformers"

    _nested: ClassVar[dict[str, Any]] = {
        "vision_config": VisionConfig,
        "text_config": _text_config_class,
        "geometry_encoder_config": GeometryEncoderConfig,
        "detr_encoder_config": DETREncoderConfig,
        "detr_decoder_config": DETRDecoderConfig,
        "mask_decoder_config": MaskDecoderConfig,
    }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None = None, **overrides: Any) -> Sam3LiteTextConfig:
        data = {**(data or {}), **overrides}
        # A video config wraps the detector; take the detector part.
        if isinstance(data.get("detector_config"), dict):
            data = data["detector_config"]
        model_type = data.get("model_type", LITE_MODEL_TYPE)
        if model_type not in (LITE_MODEL_TYPE, SAM3_MODEL_TYPE):
            raise ValueError(
                f"config model_type={model_type!r} is not a SAM3 detector; expected "
                f"{LITE_MODEL_TYPE!r} or {SAM3_MODEL_TYPE!r}"
            )
        if model_type == SAM3_MODEL_TYPE:
            data = _sam3_defaults(data)
        return super().from_dict(data)

    @classmethod
    def from_json_file(cls, path: str | Path) -> Sam3LiteTextConfig:
        with open(path, encoding="utf-8") as fh:
            try:
                data = json.load(fh)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path} is not valid JSON: {err}") from err
        return cls.from_dict(data)

    def to_json_file(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out.setdefault("architectures", [self.architecture])
        if out.get("text_mode") == "transformers":
            del out["text_mode"]
        return out

    @property
    def text_context_length(self) -> int:
        """Token length L the prompts are padded to: 32 as in transformers' processor, or, in
        ``original`` mode, the position table's length (16 for the released LiteText files)."""
        return self.text_config.max_position_embeddings if self.text_mode == "original" else 32

    @property
    def is_sam3(self) -> bool:
        """True for plain SAM3 (CLIP text encoder), False for LiteText (MobileCLIP student)."""
        return self.model_type == SAM3_MODEL_TYPE

    @property
    def architecture(self) -> str:
        return "Sam3Model" if self.is_sam3 else "Sam3LiteTextModel"

    @property
    def image_size(self) -> int:
        return self.vision_config.image_size

    def validate(self) -> None:
        check_text_mode(self.text_mode, "config text_mode")
        width = self.detr_encoder_config.hidden_size
        for name in ("geometry_encoder_config", "detr_decoder_config", "mask_decoder_config"):
            if getattr(self, name).hidden_size != width:
                raise ValueError(
                    f"Sam3LiteTextConfig.{name}.hidden_size={getattr(self, name).hidden_size} must equal "
                    f"detr_encoder_config.hidden_size={width}"
                )
        if self.vision_config.fpn_hidden_size != width:
            raise ValueError(
                f"vision_config.fpn_hidden_size={self.vision_config.fpn_hidden_size} must equal the heads' "
                f"hidden_size={width}"
            )
        expects_clip = self.is_sam3
        if isinstance(self.text_config, ClipTextConfig) != expects_clip:
            raise ValueError(
                f"model_type={self.model_type!r} needs text_config.model_type="
                f"{'clip_text_model' if expects_clip else 'sam3_lite_text_text_model'!r}, "
                f"got {self.text_config.model_type!r}"
            )


def _sam3_defaults(data: dict[str, Any]) -> dict[str, Any]:
    """Fill the sub-config ``model_type``s that a plain-SAM3 config implies when they are absent."""
    data = dict(data)
    names = {
        "geometry_encoder_config": "sam3_geometry_encoder",
        "detr_encoder_config": "sam3_detr_encoder",
        "detr_decoder_config": "sam3_detr_decoder",
        "mask_decoder_config": "sam3_mask_decoder",
        "text_config": "clip_text_model",
    }
    for key, model_type in names.items():
        sub = dict(data.get(key) or {})
        sub.setdefault("model_type", model_type)
        data[key] = sub
    return data


# transformers-compatible aliases for the sub-config classes.
Sam3LiteTextTextConfig = TextConfig
Sam3LiteTextGeometryEncoderConfig = GeometryEncoderConfig
Sam3LiteTextDETREncoderConfig = DETREncoderConfig
Sam3LiteTextDETRDecoderConfig = DETRDecoderConfig
Sam3LiteTextMaskDecoderConfig = MaskDecoderConfig
Sam3ViTConfig = ViTConfig
Sam3VisionConfig = VisionConfig
