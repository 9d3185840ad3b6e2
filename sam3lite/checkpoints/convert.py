"""Convert original EfficientSAM3 / SAM3 ``.pt`` checkpoints to the HF state-dict layout.

The HF layout is the one of transformers' ``Sam3LiteTextModel`` / ``Sam3Model``; sam3lite's modules use
it 1:1. Two sources are supported:

- EfficientSAM3 LiteText (github.com/SimonZeng7108/efficientsam3): SAM3's detector with the text tower
  replaced by a MobileCLIP student (``backbone.language_backbone.encoder`` = ``MobileCLIPTextTransformer``,
  ``backbone.language_backbone.projector`` = the Linear to the detector width).
- Plain SAM3 (facebookresearch/sam3 ``sam3.pt``): the same detector with an open_clip-style CLIP text
  tower (``VETextEncoder``: ``encoder`` = ``TextTransformer``, ``resizer`` = the Linear to the detector width).

Original files hold the detector under ``detector.`` and the video tracker under ``tracker.``
(``split_original_extras`` separates the tracker, its neck and SAM 3.1's extra parts first; the tracker
and its neck are converted by ``convert_tracker``). Each part
is renamed by an explicit table of whole-key regex rules; fused q/k/v projections are split. Every input
key is accounted for: converted, split off as a named part, dropped by the ``_UNUSED`` list (each entry
says why), or reported in a ``ValueError`` — nothing vanishes silently.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from torch import Tensor

__all__ = [
    "convert_original_state_dict",
    "fit_text_positions",
    "infer_config_dict",
    "is_original_checkpoint",
    "split_original_extras",
    "unwrap_checkpoint",
]

# Parts of original files that are not the detector, matched on the full original key: (pattern, part, why).
# The tracker and its neck are converted by ``convert_tracker``; the others are reported as unused.
TRACKER_PART, TRACKER_NECK_PART = "tracker", "tracker neck"
_EXTRA_PARTS: tuple[tuple[str, str, str], ...] = (
    (r"tracker\.model\..+", "sam3.1 tracker", "SAM 3.1's multiplex tracker (not supported)"),
    (
        r"(detector\.)?backbone\.vision_backbone\.(interactive|propagation)_convs\..+",
        "sam3.1 necks",
        "SAM 3.1's interactive/propagation FPN necks (they feed only its multiplex tracker)",
    ),
    (r"tracker\..+", TRACKER_PART, "the SAM3 tracker (prompt encoder, SAM mask decoder, memory)"),
    (r"(detector\.)?backbone\.vision_backbone\.sam2_convs\..+", TRACKER_NECK_PART, "the tracker's FPN neck"),
    (r"(detector\.)?inst_interactive_predictor\..+", "interactive predictor", "a copy of the tracker"),
)

# Prefixes that wrap the detector in original files (``detector.`` in sam3.pt and EfficientSAM3 files;
# ``sam3_model.`` is stripped by transformers' SAM3 converter as well).
_WRAPPER_PREFIXES = ("detector.", "sam3_model.")

# Key prefixes (after the wrapper) that only the original layout has; the HF layout uses
# vision_encoder / text_encoder / detr_* / mask_decoder / dot_product_scoring / geometry_encoder.layers.
_TELLTALE_PREFIXES = (
    "backbone.vision_backbone.",
    "backbone.language_backbone.",
    "transformer.encoder.",
    "transformer.decoder.",
    "segmentation_head.",
    "dot_prod_scoring.",
    "geometry_encoder.encode.",
)

# Original keys the HF detector has no place for, with the reason dropping them loses nothing.
_UNUSED: tuple[tuple[str, str], ...] = (
    (r"backbone\.vision_backbone\.trunk\.blocks\.\d+\.attn\.freqs_cis", "a precomputed RoPE buffer; recomputed"),
    (r"geometry_encoder\.points_(direct|pool|pos_enc)_project\..+", "point-prompt projections; boxes only here"),
    (r"transformer\.decoder\.instance_.+", "SAM2-task instance queries/heads, unused by the detector"),
)

# ---------------------------------------------------------------------------------------------
# Rename tables. A rule is (pattern, target): the pattern must match a whole key (relative to the
# table's prefix); the target is a ``re.Match.expand`` template. ``{qkv}`` in a target marks a fused
# q/k/v tensor that is split in three along dim 0 (order q, k, v in all three fused layouts:
# nn.MultiheadAttention's in_proj, the ViT's qkv Linear and MobileCLIP's qkv_proj).
# ---------------------------------------------------------------------------------------------

Rule = tuple[str, str]

_W = r"(?P<p>weight|bias)"
_BN = r"(?P<p>weight|bias|running_mean|running_var|num_batches_tracked)"
_I = r"(?P<i>\d+)"


def mha_rules(src: str, dst: str, out: str = "o_proj") -> list[Rule]:
    """An ``nn.MultiheadAttention`` at ``src`` (fused in_proj, out_proj) -> q/k/v/``out`` Linears at ``dst``."""
    return [
        (rf"{src}\.in_proj_(?P<p>weight|bias)", rf"{dst}.{{qkv}}_proj.\g<p>"),
        (rf"{src}\.out_proj\.{_W}", rf"{dst}.{out}.\g<p>"),
    ]


def _mlp(src: str, dst: str, num_layers: int) -> list[Rule]:
    """SAM3's ``MLP`` (``layers.0 ..``) -> HF's numbered Linears (``layer1 ..``)."""
    return [(rf"{src}\.layers\.{k}\.{_W}", rf"{dst}.layer{k + 1}.\g<p>") for k in range(num_layers)]


def _same(*names: str) -> list[Rule]:
    """Modules whose name is unchanged (relative to the table prefixes)."""
    return [(rf"{re.escape(name)}\.{_W}", rf"{name}.\g<p>") for name in names]


_VIT_RULES: list[Rule] = [  # backbone.vision_backbone.trunk. -> vision_encoder.backbone.
    (r"pos_embed", "embeddings.position_embeddings"),
    (r"patch_embed\.proj\.weight", "embeddings.patch_embeddings.projection.weight"),  # no bias in SAM3
    (rf"ln_pre\.{_W}", r"layer_norm.\g<p>"),
    (rf"blocks\.{_I}\.norm1\.{_W}", r"layers.\g<i>.layer_norm1.\g<p>"),
    (rf"blocks\.{_I}\.norm2\.{_W}", r"layers.\g<i>.layer_norm2.\g<p>"),
    (rf"blocks\.{_I}\.attn\.qkv\.{_W}", r"layers.\g<i>.attention.{qkv}_proj.\g<p>"),
    (rf"blocks\.{_I}\.attn\.proj\.{_W}", r"layers.\g<i>.attention.o_proj.\g<p>"),
    (rf"blocks\.{_I}\.mlp\.fc(?P<n>[12])\.{_W}", r"layers.\g<i>.mlp.fc\g<n>.\g<p>"),
]

NECK_RULES: list[Rule] = [  # backbone.vision_backbone.convs. -> vision_encoder.neck.fpn_layers.
    # x4 level: ConvT, GELU, ConvT (HF keeps the Sequential indices, so the GELU holds index 1).
    (rf"{_I}\.dconv_2x2_0\.{_W}", r"\g<i>.scale_layers.0.\g<p>"),
    (rf"{_I}\.dconv_2x2_1\.{_W}", r"\g<i>.scale_layers.2.\g<p>"),
    (rf"{_I}\.dconv_2x2\.{_W}", r"\g<i>.scale_layers.0.\g<p>"),  # x2 level; x1 / x0.5 have no weights
    (rf"{_I}\.conv_1x1\.{_W}", r"\g<i>.proj1.\g<p>"),
    (rf"{_I}\.conv_3x3\.{_W}", r"\g<i>.proj2.\g<p>"),
]

_GEOMETRY_RULES: list[Rule] = [  # geometry_encoder. -> geometry_encoder.
    (r"label_embed\.weight", "label_embed.weight"),
    (r"cls_embed\.weight", "cls_embed.weight"),
    *_same("boxes_direct_project", "boxes_pool_project", "boxes_pos_enc_project", "final_proj"),
    (rf"img_pre_norm\.{_W}", r"vision_layer_norm.\g<p>"),
    (rf"norm\.{_W}", r"prompt_layer_norm.\g<p>"),
    (rf"encode_norm\.{_W}", r"output_layer_norm.\g<p>"),
    *mha_rules(rf"encode\.{_I}\.self_attn", r"layers.\g<i>.self_attn"),
    *mha_rules(rf"encode\.{_I}\.cross_attn_image", r"layers.\g<i>.cross_attn"),
    (rf"encode\.{_I}\.linear(?P<n>[12])\.{_W}", r"layers.\g<i>.mlp.fc\g<n>.\g<p>"),
    (rf"encode\.{_I}\.norm(?P<n>[123])\.{_W}", r"layers.\g<i>.layer_norm\g<n>.\g<p>"),
]

_DETR_ENCODER_RULES: list[Rule] = [  # transformer.encoder.layers. -> detr_encoder.layers.
    *mha_rules(rf"{_I}\.self_attn", r"\g<i>.self_attn"),
    *mha_rules(rf"{_I}\.cross_attn_image", r"\g<i>.cross_attn"),
    (rf"{_I}\.linear(?P<n>[12])\.{_W}", r"\g<i>.mlp.fc\g<n>.\g<p>"),
    (rf"{_I}\.norm(?P<n>[123])\.{_W}", r"\g<i>.layer_norm\g<n>.\g<p>"),
]

_DETR_DECODER_RULES: list[Rule] = [  # transformer.decoder. -> detr_decoder.
    (r"query_embed\.weight", "query_embed.weight"),
    (r"reference_points\.weight", "reference_points.weight"),
    (r"presence_token\.weight", "presence_token.weight"),
    (rf"presence_token_out_norm\.{_W}", r"presence_layer_norm.\g<p>"),
    (rf"norm\.{_W}", r"output_layer_norm.\g<p>"),
    *_mlp("presence_token_head", "presence_head", 3),
    *_mlp("bbox_embed", "box_head", 3),
    *_mlp("ref_point_head", "ref_point_head", 2),
    *_mlp("boxRPB_embed_x", "box_rpb_embed_x", 2),
    *_mlp("boxRPB_embed_y", "box_rpb_embed_y", 2),
    *mha_rules(rf"layers\.{_I}\.self_attn", r"layers.\g<i>.self_attn"),
    *mha_rules(rf"layers\.{_I}\.ca_text", r"layers.\g<i>.text_cross_attn"),
    *mha_rules(rf"layers\.{_I}\.cross_attn", r"layers.\g<i>.vision_cross_attn"),
    (rf"layers\.{_I}\.linear(?P<n>[12])\.{_W}", r"layers.\g<i>.mlp.fc\g<n>.\g<p>"),
    # Post-norm layer: norm2 after self-attn, catext_norm after text cross-attn, norm1 after image
    # cross-attn, norm3 after the MLP (see TransformerDecoderLayer.forward in sam3/model/decoder.py).
    (rf"layers\.{_I}\.norm2\.{_W}", r"layers.\g<i>.self_attn_layer_norm.\g<p>"),
    (rf"layers\.{_I}\.catext_norm\.{_W}", r"layers.\g<i>.text_cross_attn_layer_norm.\g<p>"),
    (rf"layers\.{_I}\.norm1\.{_W}", r"layers.\g<i>.vision_cross_attn_layer_norm.\g<p>"),
    (rf"layers\.{_I}\.norm3\.{_W}", r"layers.\g<i>.mlp_layer_norm.\g<p>"),
]

_MASK_DECODER_RULES: list[Rule] = [  # segmentation_head. -> mask_decoder.
    (rf"pixel_decoder\.conv_layers\.{_I}\.{_W}", r"pixel_decoder.conv_layers.\g<i>.\g<p>"),
    (rf"pixel_decoder\.norms\.{_I}\.{_W}", r"pixel_decoder.norms.\g<i>.\g<p>"),
    (rf"mask_predictor\.mask_embed\.layers\.{_I}\.{_W}", r"mask_embedder.layers.\g<i>.\g<p>"),
    (rf"mask_embed\.layers\.{_I}\.{_W}", r"mask_embedder.layers.\g<i>.\g<p>"),  # older files (per transformers)
    (rf"instance_seg_head\.{_W}", r"instance_projection.\g<p>"),
    (rf"semantic_seg_head\.{_W}", r"semantic_projection.\g<p>"),
    *mha_rules("cross_attend_prompt", "prompt_cross_attn"),
    (rf"cross_attn_norm\.{_W}", r"prompt_cross_attn_norm.\g<p>"),
]

_SCORING_RULES: list[Rule] = [  # dot_prod_scoring. -> dot_product_scoring.
    *_mlp("prompt_mlp", "text_mlp", 2),
    (rf"prompt_mlp\.out_norm\.{_W}", r"text_mlp_out_norm.\g<p>"),
    (rf"prompt_proj\.{_W}", r"text_proj.\g<p>"),
    (rf"hs_proj\.{_W}", r"query_proj.\g<p>"),
]

# (original prefix, HF prefix, rules) of the parts SAM3 and EfficientSAM3 share.
_DETECTOR_PARTS: tuple[tuple[str, str, list[Rule]], ...] = (
    ("backbone.vision_backbone.trunk.", "vision_encoder.backbone.", _VIT_RULES),
    ("backbone.vision_backbone.convs.", "vision_encoder.neck.fpn_layers.", NECK_RULES),
    ("geometry_encoder.", "geometry_encoder.", _GEOMETRY_RULES),
    ("transformer.encoder.layers.", "detr_encoder.layers.", _DETR_ENCODER_RULES),
    ("transformer.decoder.", "detr_decoder.", _DETR_DECODER_RULES),
    ("segmentation_head.", "mask_decoder.", _MASK_DECODER_RULES),
    ("dot_prod_scoring.", "dot_product_scoring.", _SCORING_RULES),
)

# MobileCLIP student (sam3/backbones/mobile_clip.py in EfficientSAM3): ``transformer.{i}`` is either a
# TransformerEncoder (pre_norm_mha = [LayerNorm, MultiHeadAttention, Dropout], pre_norm_ffn =
# [LayerNorm, Linear, GELU, Dropout, Linear, Dropout]) or a RepMixerBlock (token_mixer: MobileOne
# ``norm`` with only a BN skip branch, ``mixer`` with BN skip + one conv/BN branch; convffn).
_T, _L = rf"transformer\.{_I}\.", r"layers.\g<i>."  # a MobileCLIP layer -> an HF layer
MOBILECLIP_RULES: list[Rule] = [  # backbone.language_backbone.encoder. -> text_encoder.
    (r"embedding_layer\.weight", "embeddings.token_embedding.weight"),
    (r"positional_embedding\.pos_embed\.pos_embed", "embeddings.position_embedding.position_embedding"),
    (rf"final_layer_norm\.{_W}", r"final_layer_norm.\g<p>"),
    (r"projection_layer", "projection.weight"),  # stored [in, out] for ``x @ P``; see _convert_mobileclip_text
    # TransformerEncoder layers
    (rf"{_T}pre_norm_mha\.0\.{_W}", rf"{_L}layer_norm1.\g<p>"),
    (rf"{_T}pre_norm_mha\.1\.qkv_proj\.{_W}", rf"{_L}self_attn.{{qkv}}_proj.\g<p>"),
    (rf"{_T}pre_norm_mha\.1\.out_proj\.{_W}", rf"{_L}self_attn.out_proj.\g<p>"),
    (rf"{_T}pre_norm_ffn\.0\.{_W}", rf"{_L}layer_norm2.\g<p>"),
    (rf"{_T}pre_norm_ffn\.1\.{_W}", rf"{_L}mlp.fc1.\g<p>"),
    (rf"{_T}pre_norm_ffn\.4\.{_W}", rf"{_L}mlp.fc2.\g<p>"),
    # RepMixerBlock layers
    (rf"{_T}layer_scale", rf"{_L}layer_scale"),
    (rf"{_T}token_mixer\.layer_scale", rf"{_L}token_mixer.layer_scale"),
    (rf"{_T}token_mixer\.norm\.rbr_skip\.{_BN}", rf"{_L}token_mixer.reference_batchnorm.\g<p>"),
    (rf"{_T}token_mixer\.mixer\.rbr_skip\.{_BN}", rf"{_L}token_mixer.mixer.batchnorm_skip.\g<p>"),
    (rf"{_T}token_mixer\.mixer\.rbr_conv\.0\.conv\.weight", rf"{_L}token_mixer.mixer.conv.weight"),
    (rf"{_T}token_mixer\.mixer\.rbr_conv\.0\.bn\.{_BN}", rf"{_L}token_mixer.mixer.batchnorm_conv.\g<p>"),
    (rf"{_T}convffn\.conv\.conv\.weight", rf"{_L}conv_feed_forward.depthwise_conv.weight"),
    (rf"{_T}convffn\.conv\.bn\.{_BN}", rf"{_L}conv_feed_forward.depthwise_batchnorm.\g<p>"),
    (rf"{_T}convffn\.fc(?P<n>[12])\.{_W}", rf"{_L}conv_feed_forward.mlp.fc\g<n>.\g<p>"),
]

# open_clip-style text tower of SAM3 (sam3/model/text_encoder_ve.py: TextTransformer).
_CLIP_RULES: list[Rule] = [  # backbone.language_backbone.encoder. -> text_encoder.
    (r"token_embedding\.weight", "text_model.embeddings.token_embedding.weight"),
    (r"positional_embedding", "text_model.embeddings.position_embedding.weight"),  # [P, H] in both
    (rf"ln_final\.{_W}", r"text_model.final_layer_norm.\g<p>"),
    (r"text_projection", "text_projection.weight"),  # stored [in, out] for ``x @ P``; transposed below
    *mha_rules(rf"transformer\.resblocks\.{_I}\.attn", r"text_model.encoder.layers.\g<i>.self_attn", out="out_proj"),
    (rf"transformer\.resblocks\.{_I}\.ln_(?P<n>[12])\.{_W}", r"text_model.encoder.layers.\g<i>.layer_norm\g<n>.\g<p>"),
    (rf"transformer\.resblocks\.{_I}\.mlp\.c_fc\.{_W}", r"text_model.encoder.layers.\g<i>.mlp.fc1.\g<p>"),
    (rf"transformer\.resblocks\.{_I}\.mlp\.c_proj\.{_W}", r"text_model.encoder.layers.\g<i>.mlp.fc2.\g<p>"),
]

_LINEAR: list[Rule] = [(_W, r"\g<p>")]  # a bare Linear: ``weight`` / ``bias`` directly under the prefix

_TEXT_PREFIX = "backbone.language_backbone."
_MOBILECLIP_TELLTALE = _TEXT_PREFIX + "encoder.embedding_layer.weight"
_CLIP_TELLTALE = _TEXT_PREFIX + "encoder.token_embedding.weight"


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


def unwrap_checkpoint(obj: Any) -> dict[str, Tensor]:
    """The state dict inside a loaded ``.pt``: ``{"model": sd}``, ``{"state_dict": sd}`` or a bare ``sd``.

    Raises ValueError when ``obj`` is not a mapping or the state dict holds non-tensor values.
    """
    state = _inner_state_dict(obj)
    if state is None:
        raise ValueError(f"expected a state dict (a mapping of names to tensors), got {type(obj).__name__}")
    bad = [str(key) for key, value in state.items() if not isinstance(key, str) or not isinstance(value, Tensor)]
    if bad:
        raise ValueError(f"checkpoint entries that are not named tensors: {_listing(bad)}")
    return dict(state)


def is_original_checkpoint(state_dict: Mapping[str, Any]) -> bool:
    """True if the keys are in the original SAM3 / EfficientSAM3 layout (not the HF one).

    Recognised by keys only the original layout has (``backbone.vision_backbone.``,
    ``transformer.decoder.``, ``segmentation_head.`` ...), with or without the ``detector.`` wrapper.
    A ``{"model": ...}`` / ``{"state_dict": ...}`` wrapper is looked through.
    """
    state = _inner_state_dict(state_dict) or {}
    return any(_strip_wrapper(key).startswith(_TELLTALE_PREFIXES) for key in state if isinstance(key, str))


def convert_original_state_dict(
    state_dict: Mapping[str, Tensor], *, text_context_length: int | None = None
) -> dict[str, Tensor]:
    """Rename an original SAM3 / EfficientSAM3 state dict to the HF layout.

    Fused q/k/v projections are split, the cls slot of the ViT position table is dropped and CLIP's
    ``x @ P`` text projection is transposed to a Linear weight (MobileCLIP's is kept as stored where it
    fits, as transformers' converter does). Tensors keep their dtype; split and
    sliced tensors are copies (so the result can be saved with safetensors).

    Only the detector is converted: the parts ``split_original_extras`` separates (tracker, its neck,
    SAM 3.1's extras) are left out here; ``convert_tracker`` converts the tracker and its neck, and
    ``sam3lite.checkpoints.read_contents`` reports the rest.

    Args:
        state_dict: the unwrapped state dict (see ``unwrap_checkpoint``).
        text_context_length: keep only the first N text positions. By default the text position
            table is kept at its stored length (older EfficientSAM3 files hold 77 entries). Truncation
            is what transformers' converter does for the ``ctx16`` files (77 -> 16): use it when the
            original model was built with N positions. It is not output-preserving otherwise, since
            MobileCLIP resizes (interpolates) its table to the input length; CLIP's table is indexed,
            so there it is exact for inputs of at most N tokens.

    Raises:
        ValueError: the keys are not in the original layout, no text encoder is found, a key has
            no place in the HF layout (all such keys are listed), or a tensor has an unexpected shape.
    """
    if not is_original_checkpoint(state_dict):
        raise ValueError("not an original SAM3/EfficientSAM3 state dict: no detector keys found")
    detector, _extras, _reasons = split_original_extras(state_dict)  # tracker parts: see read_contents
    state, origin = _strip_wrappers(detector)
    _drop_unused(state)

    converted = _convert_sam3_detector(state)
    if _MOBILECLIP_TELLTALE in state:
        text = _convert_mobileclip_text(state, text_context_length)
    elif _CLIP_TELLTALE in state:
        text = _convert_clip_text(state, text_context_length)
    else:
        text = {}
    for key, tensor in text.items():
        _put(converted, key, tensor)

    if state:
        leftovers = sorted(origin[key] for key in state)
        hint = ""
        if any("reparam_conv" in key for key in leftovers):
            hint = " (reparameterized MobileOne/RepMixer weights cannot be unfolded into the HF branches)"
        raise ValueError(f"{len(leftovers)} original keys have no place in the HF layout{hint}: {_listing(leftovers)}")
    if not text:
        raise ValueError(
            f"no text encoder found: expected {_MOBILECLIP_TELLTALE!r} (EfficientSAM3 LiteText) "
            f"or {_CLIP_TELLTALE!r} (SAM3)"
        )
    return converted


def infer_config_dict(hf_state_dict: Mapping[str, Tensor]) -> dict[str, Any]:
    """An HF ``config.json``-style dict for an HF-layout state dict, read off tensor shapes.

    Read from shapes: every width, depth, FFN size, vocabulary and position-table length, the patch
    size, the ViT pretraining grid, the FPN levels, RepMixer use and kernel size, the MobileCLIP
    projection size, ROI size, number of queries, pixel-decoder stages, and the DETR heads (the box
    relative-position MLP emits one bias per decoder head).

    Assumed (shapes do not tell; SAM3's values follow from these rules):
        - ViT and text heads = width // 64 (SAM3 ViT 1024/16, MobileCLIP S0/S1 512/8, L 768/12,
          CLIP 1024/16).
        - geometry / DETR-encoder / mask-decoder heads = the DETR-decoder heads (8 in SAM3).
        - ViT window = the pretraining grid (24 = 336 / 14); image size = 3 x the pretraining size
          (1008, the position table tiles 3 x 3); global attention in 4 evenly spaced layers
          (7, 15, 23, 31 of 32).
        - CLIP text activation ``gelu`` (SAM3's open_clip tower uses nn.GELU, not quick_gelu).
        - FPN levels without weights are the x1 then the x0.5 level, in that order.
    Everything else takes the config defaults.

    Raises ValueError naming a missing key when the state dict is not a complete HF detector.
    """
    sd = hf_state_dict
    vision = _infer_vision(sd)
    if "text_encoder.text_model.embeddings.token_embedding.weight" in sd:
        model_type, text = "sam3", _infer_clip_text(sd)
    else:
        model_type, text = "sam3_lite_text", _infer_mobileclip_text(sd)

    decoder_width, num_queries = _shape(sd, "detr_decoder.query_embed.weight")[::-1]
    heads = _shape(sd, "detr_decoder.box_rpb_embed_x.layer2.weight")[0]
    return {
        "model_type": model_type,
        "vision_config": vision,
        "text_config": text,
        "geometry_encoder_config": {
            "hidden_size": _shape(sd, "geometry_encoder.final_proj.weight")[0],
            "num_attention_heads": heads,
            "num_layers": _count_layers(sd, "geometry_encoder.layers."),
            "intermediate_size": _shape(sd, "geometry_encoder.layers.0.mlp.fc1.weight")[0],
            "roi_size": _shape(sd, "geometry_encoder.boxes_pool_project.weight")[-1],
        },
        "detr_encoder_config": {
            "hidden_size": _shape(sd, "detr_encoder.layers.0.layer_norm1.weight")[0],
            "num_attention_heads": heads,
            "num_layers": _count_layers(sd, "detr_encoder.layers."),
            "intermediate_size": _shape(sd, "detr_encoder.layers.0.mlp.fc1.weight")[0],
        },
        "detr_decoder_config": {
            "hidden_size": decoder_width,
            "num_attention_heads": heads,
            "num_layers": _count_layers(sd, "detr_decoder.layers."),
            "intermediate_size": _shape(sd, "detr_decoder.layers.0.mlp.fc1.weight")[0],
            "num_queries": num_queries,
        },
        "mask_decoder_config": {
            "hidden_size": _shape(sd, "mask_decoder.instance_projection.weight")[0],
            "num_attention_heads": heads,
            "num_upsampling_stages": _count_layers(sd, "mask_decoder.pixel_decoder.conv_layers."),
        },
    }


# ---------------------------------------------------------------------------------------------
# Conversion, one function per source
# ---------------------------------------------------------------------------------------------


def _convert_sam3_detector(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The parts SAM3 and EfficientSAM3 share: ViT + FPN neck, geometry encoder, DETR, heads."""
    out: dict[str, Tensor] = {}
    for src, dst, rules in _DETECTOR_PARTS:
        for key, tensor in rename_keys(state, src, dst, rules).items():
            _put(out, key, tensor)
    key = "vision_encoder.backbone.embeddings.position_embeddings"
    if key in out:
        out[key] = _drop_cls_slot(out[key])
    return out


def _convert_mobileclip_text(state: dict[str, Tensor], context_length: int | None) -> dict[str, Tensor]:
    """EfficientSAM3 LiteText: the MobileCLIP student and its ``projector`` (-> ``text_projection``)."""
    out = rename_keys(state, _TEXT_PREFIX + "encoder.", "text_encoder.", MOBILECLIP_RULES)
    out.update(rename_keys(state, _TEXT_PREFIX + "projector.", "text_projection.", _LINEAR))
    # MobileCLIP's projection_layer P [H, D] is used as ``x @ P``. transformers' converter copies it as
    # stored into the Linear-shaped ``projection.weight``; do the same where the shape allows (every
    # released variant: H == D), so that a .pt and its hub conversion hold the same tensor. A non-square
    # P only fits transposed. The detector never reads it; see MobileClipTextEncoder.original_projection.
    projection = out.get("text_encoder.projection.weight")
    if projection is not None and projection.ndim == 2 and projection.shape[0] != projection.shape[1]:
        transpose_projection(out, "text_encoder.projection.weight")
    key = "text_encoder.embeddings.position_embedding.position_embedding"  # [1, 1, P, H]
    if key in out:
        out[key] = _truncate_positions(out[key], context_length, dim=2)
    return out


def _convert_clip_text(state: dict[str, Tensor], context_length: int | None) -> dict[str, Tensor]:
    """SAM3: the open_clip-style CLIP tower and its ``resizer`` (-> ``text_projection``)."""
    out = rename_keys(state, _TEXT_PREFIX + "encoder.", "text_encoder.", _CLIP_RULES)
    out.update(rename_keys(state, _TEXT_PREFIX + "resizer.", "text_projection.", _LINEAR))
    transpose_projection(out, "text_encoder.text_projection.weight")
    key = "text_encoder.text_model.embeddings.position_embedding.weight"  # [P, H]
    if key in out:
        out[key] = _truncate_positions(out[key], context_length, dim=0)
    return out


def split_original_extras(
    state_dict: Mapping[str, Tensor],
) -> tuple[dict[str, Tensor], dict[str, dict[str, Tensor]], dict[str, str]]:
    """Separate an original file's non-detector parts (tracker, its neck, SAM 3.1 parts).

    Returns (the rest, {part: {original key: tensor}}, {part: why it is not the detector}).
    """
    patterns = [(re.compile(p), part, why) for p, part, why in _EXTRA_PARTS]
    rest: dict[str, Tensor] = {}
    parts: dict[str, dict[str, Tensor]] = {}
    reasons: dict[str, str] = {}
    for key, tensor in state_dict.items():
        for pattern, part, why in patterns:
            if pattern.fullmatch(key):
                parts.setdefault(part, {})[key] = tensor
                reasons[part] = why
                break
        else:
            rest[key] = tensor
    return rest, parts, reasons


# The released LiteText files were trained at 16 positions (the ``ctx16`` files); older files store the
# 77-row table MobileCLIP was built with, which EfficientSAM3 cuts to the context it trains at.
DEFAULT_TEXT_CONTEXT = 16


def fit_text_positions(
    state: dict[str, Tensor], length: int | None = None, method: str = "slice"
) -> dict[str, Any] | None:
    """Fit a MobileCLIP position table [1, 1, P, H] with P > ``length`` rows to ``length`` rows, in place.

    ``length`` None means ``DEFAULT_TEXT_CONTEXT`` for a longer table (a shorter one is kept).

    ``slice`` keeps the first rows, as EfficientSAM3 does when a model built at 77 positions is set to a
    shorter context (``resize_pos_embed``); ``interpolate`` resizes the table as MobileCLIP's embedding
    does for a different sequence length (bilinear, ``align_corners=False``), for files trained that way.
    Returns what was done (recorded in the config we write), or None when the table already fits.
    """
    key = "text_encoder.embeddings.position_embedding.position_embedding"
    table = state.get(key)
    if table is None:
        return None
    rows = table.shape[2]
    if length is None:
        length = min(rows, DEFAULT_TEXT_CONTEXT)
    if rows == length:
        return None
    if method not in ("slice", "interpolate"):
        raise ValueError(f"position_table must be 'slice' or 'interpolate', got {method!r}")
    if length > rows:
        raise ValueError(f"context_length={length} is longer than the stored position table ({rows} rows)")
    if method == "slice":
        state[key] = table[:, :, :length].clone()
    else:
        import torch.nn.functional as F  # noqa: N812 - only needed for this rare conversion

        size = (length, table.shape[3])
        state[key] = F.interpolate(table.float(), size=size, mode="bilinear", align_corners=False).to(table.dtype)
    return {"stored_rows": rows, "method": method}


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _inner_state_dict(obj: Any) -> Mapping[Any, Any] | None:
    if not isinstance(obj, Mapping):
        return None
    for wrapper in ("model", "state_dict"):  # training checkpoints: {"model": sd, "optimizer": ...}
        inner = obj.get(wrapper)
        if isinstance(inner, Mapping):
            return inner
    return obj


def _strip_wrapper(key: str) -> str:
    for prefix in _WRAPPER_PREFIXES:
        if key.startswith(prefix):
            return key[len(prefix) :]
    return key


def _strip_wrappers(state_dict: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Keys without the ``detector.`` wrapper, and a map back to the original names (for errors)."""
    state: dict[str, Tensor] = {}
    origin: dict[str, str] = {}
    for key, tensor in state_dict.items():
        short = _strip_wrapper(key)
        if short in state:
            raise ValueError(f"keys {origin[short]!r} and {key!r} both map to {short!r}")
        state[short], origin[short] = tensor, key
    return state, origin


def _drop_unused(state: dict[str, Tensor]) -> None:
    """Remove the keys listed in ``_UNUSED`` (in place)."""
    patterns = [re.compile(pattern) for pattern, _reason in _UNUSED]
    for key in [k for k in state if any(p.fullmatch(k) for p in patterns)]:
        del state[key]


def rename_keys(state: dict[str, Tensor], src: str, dst: str, rules: list[Rule]) -> dict[str, Tensor]:
    """Pop the keys under ``src`` that a rule matches; return them under ``dst``, fused q/k/v split.

    Keys under ``src`` that no rule matches stay in ``state`` (and are reported as leftovers).
    """
    compiled = [(re.compile(pattern), target) for pattern, target in rules]
    out: dict[str, Tensor] = {}
    for key in [k for k in state if k.startswith(src)]:
        for pattern, target in compiled:
            match = pattern.fullmatch(key[len(src) :])
            if match is None:
                continue
            name, tensor = dst + match.expand(target), state.pop(key)
            if "{qkv}" in name:
                if tensor.shape[0] % 3:
                    raise ValueError(f"{key}: fused q/k/v of shape {tuple(tensor.shape)} is not divisible by 3")
                for part, piece in zip("qkv", tensor.chunk(3, dim=0), strict=True):
                    _put(out, name.replace("{qkv}", part), piece.clone())
            else:
                _put(out, name, tensor)
            break
    return out


def _put(out: dict[str, Tensor], key: str, tensor: Tensor) -> None:
    if key in out:
        raise ValueError(f"two original keys map to {key!r}")
    out[key] = tensor


def _drop_cls_slot(table: Tensor) -> Tensor:
    """ViT position table [1, 1+N, C] (cls slot from CLIP-style pretraining first) -> [1, N, C]."""
    n = table.shape[1]
    if _is_square(n - 1):
        return table[:, 1:].clone()
    if _is_square(n):  # already without the cls slot
        return table
    raise ValueError(f"ViT position table of shape {tuple(table.shape)}: neither N nor N-1 is a square grid")


def _truncate_positions(table: Tensor, context_length: int | None, dim: int) -> Tensor:
    if context_length is None:
        return table
    stored = table.shape[dim]
    if not 0 < context_length <= stored:
        raise ValueError(f"text_context_length={context_length} must be in 1..{stored} (the stored table length)")
    return table.narrow(dim, 0, context_length).clone()


def transpose_projection(out: dict[str, Tensor], key: str) -> None:
    """Parameters used as ``x @ P`` ([in, out]) -> Linear weights ([out, in])."""
    if key in out:
        if out[key].ndim != 2:
            raise ValueError(f"{key}: expected a 2-D projection, got shape {tuple(out[key].shape)}")
        out[key] = out[key].t().contiguous()


def _is_square(n: int) -> bool:
    return n > 0 and math.isqrt(n) ** 2 == n


def _listing(keys: list[str], limit: int = 40) -> str:
    shown = ", ".join(keys[:limit])
    return shown if len(keys) <= limit else f"{shown}, ... ({len(keys) - limit} more)"


# ---------------------------------------------------------------------------------------------
# Config inference
# ---------------------------------------------------------------------------------------------


def _shape(sd: Mapping[str, Tensor], key: str) -> tuple[int, ...]:
    if key not in sd:
        raise ValueError(f"cannot infer the config: {key!r} is missing from the state dict")
    return tuple(sd[key].shape)


def _count_layers(sd: Mapping[str, Tensor], prefix: str) -> int:
    """Number of ``prefix{i}.`` blocks; they must be numbered 0..n-1."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    indices = {int(m.group(1)) for key in sd if (m := pattern.match(key))}
    if not indices:
        raise ValueError(f"cannot infer the config: no {prefix!r}* keys in the state dict")
    if indices != set(range(len(indices))):
        raise ValueError(f"{prefix}*: layer indices {sorted(indices)} are not 0..{len(indices) - 1}")
    return len(indices)


def _assumed_heads(width: int, head_dim: int = 64) -> int:
    """width // head_dim heads (at least 1, and dividing the width)."""
    heads = max(1, width // head_dim)
    while width % heads:
        heads -= 1
    return heads


def _infer_vision(sd: Mapping[str, Tensor]) -> dict[str, Any]:
    hidden, channels, patch, _ = _shape(sd, "vision_encoder.backbone.embeddings.patch_embeddings.projection.weight")
    positions = _shape(sd, "vision_encoder.backbone.embeddings.position_embeddings")[1]
    if not _is_square(positions):
        raise ValueError(f"ViT position table with {positions} entries is not a square grid")
    pretrain_grid = math.isqrt(positions)
    depth = _count_layers(sd, "vision_encoder.backbone.layers.")
    scale_factors = _infer_scale_factors(sd)
    grid = 3 * pretrain_grid  # assumed: image = 3 x pretraining size (SAM3: 1008 = 3 x 336)
    return {
        "model_type": "sam3_vision_model",
        "backbone_config": {
            "model_type": "sam3_vit_model",
            "hidden_size": hidden,
            "intermediate_size": _shape(sd, "vision_encoder.backbone.layers.0.mlp.fc1.weight")[0],
            "num_hidden_layers": depth,
            "num_attention_heads": _assumed_heads(hidden),
            "num_channels": channels,
            "patch_size": patch,
            "pretrain_image_size": pretrain_grid * patch,
            "image_size": grid * patch,
            "window_size": pretrain_grid,
            "global_attn_indexes": sorted({max(0, (k + 1) * depth // 4 - 1) for k in range(4)}),
        },
        "fpn_hidden_size": _shape(sd, "vision_encoder.neck.fpn_layers.0.proj1.weight")[0],
        "scale_factors": scale_factors,
        "backbone_feature_sizes": [[int(grid * s)] * 2 for s in scale_factors[:3]],
    }


def _infer_scale_factors(sd: Mapping[str, Tensor]) -> list[float]:
    """x4 levels hold two ConvTs, x2 one; the weightless levels are x1 then x0.5 (SAM3's order)."""
    factors: list[float] = []
    weightless = [1.0, 0.5]
    for i in range(_count_layers(sd, "vision_encoder.neck.fpn_layers.")):
        prefix = f"vision_encoder.neck.fpn_layers.{i}.scale_layers."
        if prefix + "2.weight" in sd:
            factors.append(4.0)
        elif prefix + "0.weight" in sd:
            factors.append(2.0)
        elif weightless:
            factors.append(weightless.pop(0))
        else:
            raise ValueError("cannot infer the FPN scale factors: more than two levels without up-sampling weights")
    return factors


def _infer_mobileclip_text(sd: Mapping[str, Tensor]) -> dict[str, Any]:
    vocab, hidden = _shape(sd, "text_encoder.embeddings.token_embedding.weight")
    positions = _shape(sd, "text_encoder.embeddings.position_embedding.position_embedding")[2]
    depth = _count_layers(sd, "text_encoder.layers.")
    repmixer = [i for i in range(depth) if f"text_encoder.layers.{i}.token_mixer.mixer.conv.weight" in sd]
    if repmixer and repmixer != [0, depth - 1]:
        raise ValueError(f"RepMixer blocks at layers {repmixer}; the HF layout puts them at the first and last only")
    ffn = {
        _shape(sd, f"text_encoder.layers.{i}.conv_feed_forward.mlp.fc1.weight" if i in repmixer else
               f"text_encoder.layers.{i}.mlp.fc1.weight")[0]
        for i in range(depth)
    }  # fmt: skip
    if len(ffn) != 1:
        raise ValueError(f"text layers have different FFN sizes {sorted(ffn)}; the HF config holds one")
    config: dict[str, Any] = {
        "model_type": "sam3_lite_text_text_model",
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": ffn.pop(),
        "num_hidden_layers": depth,
        "num_attention_heads": _assumed_heads(hidden),
        "max_position_embeddings": positions,
        "use_repmixer_blocks": bool(repmixer),
        "projection_dim": _shape(sd, "text_encoder.projection.weight")[0],
    }
    if repmixer:
        config["repmixer_kernel_size"] = _shape(sd, "text_encoder.layers.0.token_mixer.mixer.conv.weight")[-1]
    return config


def _infer_clip_text(sd: Mapping[str, Tensor]) -> dict[str, Any]:
    vocab, hidden = _shape(sd, "text_encoder.text_model.embeddings.token_embedding.weight")
    return {
        "model_type": "clip_text_model",
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": _shape(sd, "text_encoder.text_model.encoder.layers.0.mlp.fc1.weight")[0],
        "num_hidden_layers": _count_layers(sd, "text_encoder.text_model.encoder.layers."),
        "num_attention_heads": _assumed_heads(hidden),
        "max_position_embeddings": _shape(sd, "text_encoder.text_model.embeddings.position_embedding.weight")[0],
        "projection_dim": _shape(sd, "text_encoder.text_projection.weight")[0],
        "hidden_act": "gelu",
    }
