"""The assembled SAM3-LiteText detector.

Data flow (shapes for the full-size config, one image, T text tokens, N boxes, Q = 200 queries):

    pixel_values [B, 3, 1008, 1008] --VisionEncoder--> FPN levels [B, 256, 288²/144²/72²] + positions
    input_ids [B, T] --text encoder--> [B, T, H] --text_projection--> prompt tokens [B, T, 256]
    input_boxes [B, N, 4] --GeometryEncoder(72² level)--> box tokens [B, N + 1, 256]
    prompt = concat(text tokens, box tokens) with concatenated validity masks
    DetrEncoder(72² level, prompt) --> memory [B, 5184, 256]
    DetrDecoder(memory, prompt) --> queries [B, Q, 256], boxes [B, Q, 4], presence [B, 1]
    DotProductScoring(queries, prompt) --> logits [B, Q]
    MaskDecoder(queries, FPN levels, memory, prompt) --> masks [B, Q, 288, 288], semantic [B, 1, 288, 288]

The model receives its parts (or builds them from the config); module names equal checkpoint keys.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import nn

from .clip_text import ClipTextEncoder
from .config import ClipTextConfig, Sam3LiteTextConfig
from .detr_decoder import DetrDecoder
from .detr_encoder import DetrEncoder
from .geometry import GeometryEncoder
from .mask_decoder import MaskDecoder
from .scoring import DotProductScoring
from .text import MobileClipTextEncoder
from .tracker.config import TrackerConfig
from .tracker.model import Sam3Tracker, TrackerImageFeatures
from .video_config import Sam3VideoConfig
from .vision import VisionEncoder, VisionFeatures, VisionNeck

PAD_LABEL = -10  # box label of padding entries, as in the reference processor
NO_TRACKER_MESSAGE = (
    "this model has no tracker, which point, object-box and mask prompts need: load one with "
    "sam3lite.load(MODEL, tracker='sam3') (facebook/sam3's tracker fits every LiteText model; CLI: --tracker sam3)"
)


class _FieldAccess:
    """ModelOutput-style access on output dataclasses, so code written against transformers keeps
    working: by name (``out["pred_masks"]``, ``out.get``, ``keys``), by position (``out[0]``,
    ``out[1:]``) and as a tuple (``out.to_tuple()``); positions count only fields that are not None,
    as in transformers."""

    def __getitem__(self, key: str | int | slice) -> Any:
        if isinstance(key, (int, slice)):
            return self.to_tuple()[key]
        if key not in self.keys():
            raise KeyError(key)
        return getattr(self, key)

    def to_tuple(self) -> tuple[Any, ...]:
        """The fields that are not None, in declaration order."""
        values = (getattr(self, name) for name in self.keys())
        return tuple(value for value in values if value is not None)

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key) if key in self.keys() else default

    def keys(self) -> list[str]:
        return [f.name for f in fields(self)]  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())


@dataclass
class TextFeatures(_FieldAccess):
    """Text encoder output, computed once and reusable across images.

    last_hidden_state: [B, T, H] text encoder output before the projection.
    pooler_output: [B, T, C] prompt tokens after ``text_projection`` (named as in transformers, whose
        ``get_text_features`` stores the projected sequence there).
    attention_mask: [B, T] 1 for real tokens, 0 for padding (None = all real).

    The field order is transformers' (``feats[0]`` is ``last_hidden_state`` there too).
    """

    last_hidden_state: torch.Tensor
    pooler_output: torch.Tensor
    attention_mask: torch.Tensor | None = None


@dataclass
class Sam3LiteTextOutput(_FieldAccess):
    """Detector output for B (image, prompt) pairs.

    pred_masks: [B, Q, 4h, 4w] mask logits (288² for a 1008² image).
    pred_boxes: [B, Q, 4] normalized xyxy boxes.
    pred_logits: [B, Q] query-prompt match logits.
    presence_logits: [B, 1] logit that the prompt is present in the image at all.
    semantic_seg: [B, 1, 4h, 4w] semantic mask logits.
    Final instance score = sigmoid(pred_logits) * sigmoid(presence_logits).
    """

    pred_masks: torch.Tensor
    pred_boxes: torch.Tensor
    pred_logits: torch.Tensor
    presence_logits: torch.Tensor
    semantic_seg: torch.Tensor


def build_text_encoder(config: Sam3LiteTextConfig) -> nn.Module:
    """MobileCLIP student for LiteText configs, the CLIP text tower for plain SAM3."""
    if isinstance(config.text_config, ClipTextConfig):
        return ClipTextEncoder(config.text_config)
    return MobileClipTextEncoder(config.text_config)


class Sam3Detector(nn.Module):
    """SAM3-LiteText (or SAM3) detector: image + noun phrase and/or boxes -> instances.

    ``Sam3Detector(config)`` builds every part with random weights; parts may also be passed in
    (e.g. a distilled text encoder). The network only: ``sam3lite.Sam3LiteTextModel`` is this class
    with ``from_pretrained`` / ``save_pretrained``, and ``sam3lite.load`` fills it with trained weights.
    """

    def __init__(
        self,
        config: Sam3LiteTextConfig | None = None,
        *,
        vision_encoder: nn.Module | None = None,
        text_encoder: nn.Module | None = None,
        tracker_config: TrackerConfig | None = None,
        video_settings: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        config = config or Sam3LiteTextConfig()
        if isinstance(config, dict):
            config = Sam3LiteTextConfig.from_dict(config)
        self.config = config
        # With a tracker: facebook/sam3's video config around this detector (saved in that layout).
        self.video_config: Sam3VideoConfig | None = None
        if tracker_config is not None:
            self.video_config = Sam3VideoConfig.combine(config, tracker_config, **(video_settings or {}))
        width = config.detr_encoder_config.hidden_size
        self.vision_encoder = vision_encoder or VisionEncoder(config.vision_config)
        self.text_encoder = text_encoder or build_text_encoder(config)
        self.text_projection = nn.Linear(config.text_config.hidden_size, width)
        self.geometry_encoder = GeometryEncoder(config.geometry_encoder_config)
        self.detr_encoder = DetrEncoder(config.detr_encoder_config)
        self.detr_decoder = DetrDecoder(config.detr_decoder_config)
        self.mask_decoder = MaskDecoder(config.mask_decoder_config)
        self.dot_product_scoring = DotProductScoring(config.detr_decoder_config)
        # SAM3's tracker (clicks, boxes, masks, video) reads the same ViT output through its own neck.
        self.tracker_neck: VisionNeck | None = None
        self.tracker_model: Sam3Tracker | None = None
        if tracker_config is not None:
            self.tracker_neck = VisionNeck(config.vision_config)
            self.tracker_model = Sam3Tracker(tracker_config)

    # ------------------------------------------------------------------------------------------
    # Properties and loading helpers
    # ------------------------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return self.text_projection.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.text_projection.weight.dtype

    def reparameterize(self) -> Sam3Detector:
        """Fold RepMixer branches into single depthwise convolutions (inference only; same outputs).

        A folded model can no longer be saved in the checkpoint layout.
        """
        from .text import reparameterize_model

        reparameterize_model(self.text_encoder)
        return self

    def quantize_image_encoder(self) -> Sam3Detector:
        """Opt-in int8 ViT linear layers for x86 CPUs (float32 model on the CPU; see ``sam3lite.modeling.quantize``).

        Faster where bfloat16 has no hardware support; check its accuracy on your weights with
        ``sam3lite bench --quantize int8``. Inference only: a quantized model cannot be saved.
        """
        from .quantize import quantize_image_encoder

        quantize_image_encoder(self)
        return self

    def compile_parts(self, mode: str = "default") -> Sam3Detector:
        """``torch.compile`` the image encoder and the heads in place (optional; GPU mostly).

        Fuses the element-wise work around the matmuls (RoPE, LayerNorm, GELU, residual adds). The
        first call per input shape compiles (about a minute); measured on an H100 in bfloat16 it
        took a batch of 8 images from 214 ms to 134 ms (see BENCHMARKS.md).
        """
        for name in ("vision_encoder", "detr_encoder", "detr_decoder", "mask_decoder"):
            setattr(self, name, torch.compile(getattr(self, name), mode=mode))
        return self

    # ------------------------------------------------------------------------------------------
    # Encoders, usable on their own
    # ------------------------------------------------------------------------------------------

    def get_vision_features(self, pixel_values: torch.Tensor) -> VisionFeatures:
        """pixel_values [B, 3, S, S] (normalized) -> FPN features, computed once per image."""
        _check_tensor("pixel_values", pixel_values, ndim=4, floating=True)
        return self.vision_encoder(pixel_values.to(self.dtype))

    @property
    def has_tracker(self) -> bool:
        """True when the model holds SAM3's tracker (point / box / mask prompts for one object, video)."""
        return self.tracker_model is not None

    def get_tracker_features(self, vision: VisionFeatures) -> TrackerImageFeatures:
        """The tracker's features of images already encoded by ``get_vision_features`` (no second ViT pass):
        the ViT tokens [B, h*w, C] go through the tracker's own FPN neck."""
        tokens = vision.last_hidden_state
        vit = self.config.vision_config.backbone_config
        side = vit.image_size // vit.patch_size
        return self._tracker_from_grid(tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], side, side))

    def get_tracker_features_from_pixels(self, pixel_values: torch.Tensor) -> TrackerImageFeatures:
        """pixel_values [B, 3, S, S] -> tracker features, through the ViT and the tracker neck only (video
        frames tracked without text need no detector neck)."""
        if self.tracker_model is None:
            raise ValueError(NO_TRACKER_MESSAGE)
        _check_tensor("pixel_values", pixel_values, ndim=4, floating=True)
        self.vision_encoder._check_input(pixel_values)
        tokens = self.vision_encoder.backbone(pixel_values.to(self.dtype))  # [B, h, w, C]
        return self._tracker_from_grid(tokens.permute(0, 3, 1, 2))

    def _tracker_from_grid(self, grid: torch.Tensor) -> TrackerImageFeatures:
        """ViT output [B, C, h, w] -> tracker neck -> ``prepare_image``."""
        if self.tracker_model is None or self.tracker_neck is None:
            raise ValueError(NO_TRACKER_MESSAGE)
        levels, _ = self.tracker_neck(grid)
        return self.tracker_model.prepare_image(levels)

    @property
    def text_mode(self) -> str:
        """How prompts are encoded: ``"transformers"`` or ``"original"`` (``sam3lite.runtime.TEXT_MODES``)."""
        return self.config.text_mode

    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> TextFeatures:
        """input_ids [B, T] -> prompt tokens [B, T, C] (``pooler_output``), computed once per prompt.

        In ``original`` text mode the text encoder runs without a padding mask (real tokens attend to the
        pads, as in EfficientSAM3) and the detector's padding is ``input_ids == 0`` unless
        ``attention_mask`` is given.
        """
        if self.text_mode == "original":
            encoded = self.text_encoder(input_ids, None, original=True)  # validates input_ids
            if attention_mask is None:
                attention_mask = (input_ids != 0).long()
        else:
            encoded = self.text_encoder(input_ids, attention_mask)  # the encoder validates both arguments
        return TextFeatures(
            pooler_output=self.text_projection(encoded.last_hidden_state),
            last_hidden_state=encoded.last_hidden_state,
            attention_mask=attention_mask,
        )

    # ------------------------------------------------------------------------------------------
    # Forward
    # ------------------------------------------------------------------------------------------

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        vision_embeds: VisionFeatures | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        text_embeds: TextFeatures | torch.Tensor | None = None,
        input_boxes: torch.Tensor | None = None,
        input_boxes_labels: torch.Tensor | None = None,
        original_sizes: torch.Tensor | None = None,
    ) -> Sam3LiteTextOutput:
        """Detect every instance matching the prompt.

        Args:
            pixel_values: [B, 3, S, S] normalized images; or ``vision_embeds`` from ``get_vision_features``.
            input_ids / attention_mask: [B, T] tokenized prompts; or ``text_embeds`` from
                ``get_text_features`` (or a [B, T, C] tensor of projected tokens with ``attention_mask``).
            input_boxes: [B, N, 4] normalized (cx, cy, w, h) box prompts.
            input_boxes_labels: [B, N] 1 positive, 0 negative, -10 padding (default: all positive).
            original_sizes: accepted and ignored, so ``model(**processor_output)`` works.

        An image batch of 1 is broadcast over a prompt batch of B (many prompts, one image) and a
        prompt batch of 1 over B images.
        """
        if (pixel_values is None) == (vision_embeds is None):
            raise ValueError("pass exactly one of pixel_values or vision_embeds")
        if (input_ids is None) == (text_embeds is None):
            raise ValueError("pass exactly one of input_ids or text_embeds")
        vision = self.get_vision_features(pixel_values) if vision_embeds is None else vision_embeds
        if text_embeds is None:
            text_embeds = self.get_text_features(input_ids, attention_mask)
        prompt, prompt_valid = self._text_prompt(text_embeds, attention_mask)
        prompt, prompt_valid = self._full_prompt(vision, prompt, prompt_valid, input_boxes, input_boxes_labels)
        return self.run_heads(vision, prompt, prompt_valid)

    def run_heads(self, vision: VisionFeatures, prompt: torch.Tensor, prompt_valid: torch.Tensor) -> Sam3LiteTextOutput:
        """Everything after the prompt is built: DETR encoder and decoder, scoring, mask head.

        ``prompt`` [B, S, C] holds the projected text tokens followed by any geometry tokens,
        ``prompt_valid`` [B, S] bool marks the real ones; ``vision`` has batch B or 1 (broadcast).
        """
        stage = self._detect(vision, prompt, prompt_valid)
        masks, semantic = self.mask_decoder(stage.queries, vision.fpn_hidden_states, stage.memory, prompt, prompt_valid)
        return Sam3LiteTextOutput(
            pred_masks=masks,
            pred_boxes=stage.boxes,
            pred_logits=stage.logits,
            presence_logits=stage.presence_logits,
            semantic_seg=semantic,
        )

    @torch.inference_mode()
    def detect(
        self,
        vision_embeds: VisionFeatures,
        text_embeds: TextFeatures | torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        input_boxes: torch.Tensor | None = None,
        input_boxes_labels: torch.Tensor | None = None,
        threshold: float = 0.5,
    ) -> list[Detections]:
        """Inference shortcut: like ``forward``, but the mask head runs only for kept queries.

        Returns one ``Detections`` per prompt with the queries whose score
        sigmoid(logit) * sigmoid(presence) > ``threshold``. Masks are the same logits ``forward``
        gives for those queries; the 288² mask products of the other queries are never computed.
        """
        prompt, prompt_valid = self._text_prompt(text_embeds, attention_mask)
        prompt, prompt_valid = self._full_prompt(vision_embeds, prompt, prompt_valid, input_boxes, input_boxes_labels)
        stage = self._detect(vision_embeds, prompt, prompt_valid)
        scores = stage.logits.float().sigmoid() * stage.presence_logits.float().sigmoid()
        results = []
        mask_size = vision_embeds.fpn_hidden_states[0].shape[-2:]
        for i in range(scores.shape[0]):
            keep = (scores[i] > threshold).nonzero().squeeze(1)
            if keep.numel() == 0:
                # Nothing kept: skip the pixel decoder, the largest per-prompt cost after the DETR encoder
                # (two 3x3 convolutions at 144² and 288²).
                empty = stage.queries.new_zeros((0, *mask_size))
                results.append(Detections(scores=scores[i, keep], boxes=stage.boxes[i, keep], mask_logits=empty))
                continue
            features = [f[i : i + 1] if f.shape[0] > 1 else f for f in vision_embeds.fpn_hidden_states]
            masks, _ = self.mask_decoder(
                stage.queries[i : i + 1, keep],
                features,
                stage.memory[i : i + 1],
                prompt[i : i + 1],
                prompt_valid[i : i + 1],
            )
            results.append(Detections(scores=scores[i, keep], boxes=stage.boxes[i, keep], mask_logits=masks[0]))
        return results

    def _full_prompt(
        self,
        vision: VisionFeatures,
        prompt: torch.Tensor,
        prompt_valid: torch.Tensor,
        input_boxes: torch.Tensor | None,
        input_boxes_labels: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Text tokens plus encoded box tokens, broadcast to the common batch: [B, S, C], [B, S]."""
        batch = _common_batch(vision.fpn_hidden_states[-1].shape[0], prompt.shape[0], input_boxes)
        prompt, prompt_valid = _expand(prompt, batch), _expand(prompt_valid, batch)
        if input_boxes is None or input_boxes.numel() == 0:
            return prompt, prompt_valid
        boxes, labels, valid = _check_boxes(input_boxes, input_boxes_labels, batch)
        # A batch-1 image is broadcast inside the geometry encoder, without copies.
        geo, geo_valid = self.geometry_encoder(
            boxes, labels, valid, vision.fpn_hidden_states[-1], vision.fpn_position_encoding[-1]
        )
        return torch.cat([prompt, geo], dim=1), torch.cat([prompt_valid, geo_valid], dim=1)

    def _text_prompt(
        self, text_embeds: TextFeatures | torch.Tensor, attention_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Projected text tokens [B, T, C] and their validity mask [B, T] bool."""
        if isinstance(text_embeds, torch.Tensor):
            tokens = text_embeds
        elif hasattr(text_embeds, "pooler_output"):
            tokens = text_embeds.pooler_output
            if attention_mask is None:
                attention_mask = getattr(text_embeds, "attention_mask", None)
        else:
            raise ValueError(f"text_embeds must be TextFeatures or a tensor, got {type(text_embeds).__name__}")
        width = self.config.detr_encoder_config.hidden_size
        if tokens.ndim != 3 or tokens.shape[-1] != width:
            raise ValueError(f"text_embeds must be [B, T, {width}] projected tokens, got {tuple(tokens.shape)}")
        if attention_mask is None:
            valid = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        else:
            if tuple(attention_mask.shape) != tuple(tokens.shape[:2]):
                raise ValueError(
                    f"attention_mask shape {tuple(attention_mask.shape)} does not match the text tokens "
                    f"{tuple(tokens.shape[:2])}"
                )
            valid = attention_mask.bool()
        return tokens.to(self.dtype), valid

    def _detect(self, vision: VisionFeatures, prompt: torch.Tensor, prompt_valid: torch.Tensor) -> _DetectorStage:
        """DETR encoder, decoder and scoring for prompt [B, S, C] against 1 or B images."""
        encoded = self.detr_encoder(
            vision.fpn_hidden_states[-1], vision.fpn_position_encoding[-1], prompt, prompt_valid
        )
        decoded = self.detr_decoder(
            encoded.memory, encoded.memory_pos, encoded.prompt, prompt_valid, encoded.spatial_shape
        )
        return _DetectorStage(
            memory=encoded.memory,
            queries=decoded.queries,
            boxes=decoded.boxes,
            presence_logits=decoded.presence_logits,
            logits=self.dot_product_scoring(decoded.queries, encoded.prompt, prompt_valid),
        )


@dataclass
class _DetectorStage:
    """Everything before the mask head: memory [B, hw, C], queries [B, Q, C], boxes [B, Q, 4] xyxy,
    presence_logits [B, 1], logits [B, Q]."""

    memory: torch.Tensor
    queries: torch.Tensor
    boxes: torch.Tensor
    presence_logits: torch.Tensor
    logits: torch.Tensor


@dataclass
class Detections:
    """Kept instances of one prompt: scores [N], boxes [N, 4] normalized xyxy, mask_logits [N, 4h, 4w]."""

    scores: torch.Tensor
    boxes: torch.Tensor
    mask_logits: torch.Tensor


# ----------------------------------------------------------------------------------------------
# Input checks and batch broadcasting
# ----------------------------------------------------------------------------------------------


def _check_tensor(name: str, value: Any, ndim: int, floating: bool | None = None) -> None:
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(value.shape)}")
    if floating is True and not value.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {value.dtype}")
    if floating is False and value.is_floating_point():
        raise ValueError(f"{name} must be an integer tensor, got {value.dtype}")


def _check_boxes(
    boxes: torch.Tensor, labels: torch.Tensor | None, batch: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validate box prompts; return (boxes [B, N, 4], labels [B, N] in {0, 1}, valid [B, N] bool)."""
    _check_tensor("input_boxes", boxes, ndim=3, floating=True)
    if boxes.shape[-1] != 4:
        raise ValueError(f"input_boxes must be [B, N, 4] (cx, cy, w, h), got shape {tuple(boxes.shape)}")
    if labels is None:
        labels = torch.ones(boxes.shape[:2], dtype=torch.long, device=boxes.device)
    _check_tensor("input_boxes_labels", labels, ndim=2)
    if labels.shape != boxes.shape[:2]:
        raise ValueError(
            f"input_boxes_labels shape {tuple(labels.shape)} must match input_boxes {tuple(boxes.shape[:2])}"
        )
    labels = labels.long()
    allowed = (labels == 1) | (labels == 0) | (labels == PAD_LABEL)
    if not bool(allowed.all()):
        raise ValueError(f"input_boxes_labels must be 1 (positive), 0 (negative) or {PAD_LABEL} (padding)")
    valid = labels != PAD_LABEL
    real = boxes[valid]
    if not bool(torch.isfinite(real).all()):
        raise ValueError("input_boxes contains NaN or infinite values")
    if real.numel() and (bool((real < 0).any()) or bool((real > 1).any())):
        raise ValueError(
            "input_boxes must be normalized (cx, cy, w, h) in [0, 1]; got values in "
            f"[{real.min().item():.4g}, {real.max().item():.4g}] (the processor converts pixel xyxy boxes)"
        )
    boxes, labels, valid = _expand(boxes, batch, "input_boxes"), _expand(labels, batch), _expand(valid, batch)
    return boxes, torch.where(valid, labels, torch.zeros_like(labels)), valid


def _common_batch(vision_batch: int, prompt_batch: int, boxes: torch.Tensor | None) -> int:
    """The batch all inputs broadcast to; a batch of 1 broadcasts, any other mismatch is an error."""
    sizes = {"images": vision_batch, "text prompts": prompt_batch}
    if boxes is not None and boxes.ndim == 3 and boxes.numel() > 0:
        sizes["input_boxes"] = boxes.shape[0]
    batch = max(sizes.values())
    bad = {k: v for k, v in sizes.items() if v not in (1, batch)}
    if bad:
        raise ValueError(f"batch sizes do not match and cannot broadcast: {sizes}")
    return batch


def _expand(x: torch.Tensor, batch: int, name: str = "tensor") -> torch.Tensor:
    if x.shape[0] == batch:
        return x
    if x.shape[0] != 1:
        raise ValueError(f"{name} has batch {x.shape[0]}, expected 1 or {batch}")
    return x.expand(batch, *x.shape[1:])
