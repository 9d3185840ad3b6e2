"""Convert SAM3's tracker in original ``.pt`` files to the HF ``sam3_video`` layout.

facebookresearch/sam3's ``sam3.pt`` and EfficientSAM3's LiteText files hold, beside the detector, the
tracker of ``Sam3TrackerBase`` (sam3/model/sam3_tracker_base.py, SAM 2 lineage) under ``tracker.`` and its
FPN neck (``Sam3DualViTDetNeck.sam2_convs``, a copy of the detector's ``convs``) under
``detector.backbone.vision_backbone.sam2_convs.``. In the HF layout (transformers' ``Sam3VideoModel``,
sam3lite's ``Sam3Tracker`` + ``VisionNeck``) they are ``tracker_model.*`` and ``tracker_neck.*``:

    tracker.sam_prompt_encoder.*    -> prompt_encoder.*     (SAM's PromptEncoder)
    tracker.sam_mask_decoder.*      -> mask_decoder.*       (SAM's MaskDecoder + TwoWayTransformer)
    tracker.transformer.encoder.*   -> memory_attention.*   (RoPE self/cross-attention layers)
    tracker.maskmem_backbone.*      -> memory_encoder.*     (mask downsampler, ConvNeXt fuser)
    tracker.{no_mem_embed, maskmem_tpos_enc, obj_ptr_proj, ...} -> {no_memory_embedding, ...}
    ...sam2_convs.{i}.*             -> fpn_layers.{i}.*     (same renames as the detector's neck)

Each part is renamed by whole-key regex rules (as in ``convert``); a few rules depend on a depth read off
the keys (MLP lengths, mask-downsampler stages). SAM's attentions keep separate q/k/v projections, so
nothing is split; two tensors change form: the four [1, C] point embeddings become one [4, C] table, and
the random-Fourier matrix, stored once, fills both of the HF layout's copies (prompt encoder and image).
Every key is converted or reported in a ``ValueError``; the result is checked against a ``Sam3Tracker``
built from the config, so a converted tracker is known to load.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..modeling.config import Sam3LiteTextConfig
from ..modeling.tracker.config import TRACKER_MODEL_TYPE, TrackerConfig
from ..modeling.tracker.model import Sam3Tracker
from ..modeling.vision import VisionNeck
from .convert import NECK_RULES, Rule

__all__ = ["ConvertedTracker", "convert_original_tracker", "infer_tracker_config"]

TRACKER_PREFIX = "tracker."
_NECK_PREFIX = re.compile(r"(detector\.)?backbone\.vision_backbone\.sam2_convs\.")

_W = r"(?P<p>weight|bias)"
_I = r"(?P<i>\d+)"


@dataclass
class ConvertedTracker:
    """The tracker of an original file in sam3lite's (= the HF) names.

    tracker: ``Sam3Tracker`` state dict (the ``tracker_model.*`` keys without the prefix).
    neck: ``VisionNeck`` state dict of the tracker's FPN neck (``tracker_neck.*`` without the prefix).
    config: the HF ``sam3_tracker_video`` config dict.
    """

    tracker: dict[str, Tensor]
    neck: dict[str, Tensor]
    config: dict[str, Any]


# ---------------------------------------------------------------------------------------------
# Rename tables (patterns relative to each part's prefix; see ``convert.rename_keys``)
# ---------------------------------------------------------------------------------------------


def _attention(src: str, dst: str) -> list[Rule]:
    """SAM's ``Attention`` (q_proj, k_proj, v_proj, out_proj) -> HF's (q/k/v_proj, o_proj)."""
    return [
        (rf"{src}\.(?P<x>[qkv])_proj\.{_W}", rf"{dst}.\g<x>_proj.\g<p>"),
        (rf"{src}\.out_proj\.{_W}", rf"{dst}.o_proj.\g<p>"),
    ]


def _mlp(src: str, dst: str, depth: int) -> list[Rule]:
    """SAM's ``MLP`` (``layers.0 .. layers.{depth-1}``) -> HF's ``proj_in``, ``layers.{k}``, ``proj_out``."""
    if depth < 2:
        return []  # nothing to rename: the keys stay and are reported
    rules = [(rf"{src}\.layers\.0\.{_W}", rf"{dst}.proj_in.\g<p>")]
    rules += [(rf"{src}\.layers\.{k}\.{_W}", rf"{dst}.layers.{k - 1}.\g<p>") for k in range(1, depth - 1)]
    rules.append((rf"{src}\.layers\.{depth - 1}\.{_W}", rf"{dst}.proj_out.\g<p>"))
    return rules


_PROMPT_ENCODER_RULES: list[Rule] = [  # sam_prompt_encoder. -> prompt_encoder.
    (r"pe_layer\.positional_encoding_gaussian_matrix", "shared_embedding.positional_embedding"),
    (r"not_a_point_embed\.weight", "not_a_point_embed.weight"),
    (r"no_mask_embed\.weight", "no_mask_embed.weight"),
    # mask_downscaling = Sequential(Conv, LayerNorm2d, GELU, Conv, LayerNorm2d, GELU, Conv)
    (rf"mask_downscaling\.0\.{_W}", r"mask_embed.conv1.\g<p>"),
    (rf"mask_downscaling\.1\.{_W}", r"mask_embed.layer_norm1.\g<p>"),
    (rf"mask_downscaling\.3\.{_W}", r"mask_embed.conv2.\g<p>"),
    (rf"mask_downscaling\.4\.{_W}", r"mask_embed.layer_norm2.\g<p>"),
    (rf"mask_downscaling\.6\.{_W}", r"mask_embed.conv3.\g<p>"),
]

_TWO_WAY_RULES: list[Rule] = [  # sam_mask_decoder.transformer. -> mask_decoder.transformer.
    *_attention(
        rf"layers\.{_I}\.(?P<a>self_attn|cross_attn_token_to_image|cross_attn_image_to_token)", r"layers.\g<i>.\g<a>"
    ),
    (rf"layers\.{_I}\.norm(?P<n>[1-4])\.{_W}", r"layers.\g<i>.layer_norm\g<n>.\g<p>"),
    (rf"layers\.{_I}\.mlp\.lin1\.{_W}", r"layers.\g<i>.mlp.proj_in.\g<p>"),  # MLPBlock: lin1, GELU, lin2
    (rf"layers\.{_I}\.mlp\.lin2\.{_W}", r"layers.\g<i>.mlp.proj_out.\g<p>"),
    *_attention("final_attn_token_to_image", "final_attn_token_to_image"),
    (rf"norm_final_attn\.{_W}", r"layer_norm_final_attn.\g<p>"),
]


def _mask_decoder_rules(depths: Mapping[str, int]) -> list[Rule]:  # sam_mask_decoder. -> mask_decoder.
    return [
        (r"(?P<t>iou_token|mask_tokens|obj_score_token)\.weight", r"\g<t>.weight"),
        # output_upscaling = Sequential(ConvT, LayerNorm2d, GELU, ConvT, GELU)
        (rf"output_upscaling\.0\.{_W}", r"upscale_conv1.\g<p>"),
        (rf"output_upscaling\.1\.{_W}", r"upscale_layer_norm.\g<p>"),
        (rf"output_upscaling\.3\.{_W}", r"upscale_conv2.\g<p>"),
        (rf"(?P<c>conv_s[01])\.{_W}", r"\g<c>.\g<p>"),
        *_mlp(r"output_hypernetworks_mlps\.(?P<j>\d+)", r"output_hypernetworks_mlps.\g<j>", depths["hypernetwork"]),
        *_mlp("iou_prediction_head", "iou_prediction_head", depths["iou"]),
        *_mlp("pred_obj_score_head", "pred_obj_score_head", depths["object_score"]),
    ]


_MEMORY_ATTENTION_RULES: list[Rule] = [  # transformer.encoder. -> memory_attention.
    *_attention(rf"layers\.{_I}\.(?P<a>self_attn|cross_attn_image)", r"layers.\g<i>.\g<a>"),
    (rf"layers\.{_I}\.(?P<l>linear[12])\.{_W}", r"layers.\g<i>.\g<l>.\g<p>"),
    (rf"layers\.{_I}\.norm(?P<n>[123])\.{_W}", r"layers.\g<i>.layer_norm\g<n>.\g<p>"),
    (rf"norm\.{_W}", r"layer_norm.\g<p>"),
]


def _memory_encoder_rules(stages: int) -> list[Rule]:  # maskmem_backbone. -> memory_encoder.
    # mask_downsampler.encoder = Sequential((Conv, LayerNorm2d, GELU) x stages, Conv): indices 3k, 3k+1, 3*stages.
    rules: list[Rule] = []
    for k in range(stages):
        rules.append((rf"mask_downsampler\.encoder\.{3 * k}\.{_W}", rf"mask_downsampler.layers.{k}.conv.\g<p>"))
        rules.append(
            (rf"mask_downsampler\.encoder\.{3 * k + 1}\.{_W}", rf"mask_downsampler.layers.{k}.layer_norm.\g<p>")
        )
    if stages:
        rules.append((rf"mask_downsampler\.encoder\.{3 * stages}\.{_W}", r"mask_downsampler.final_conv.\g<p>"))
    return [
        *rules,
        (rf"pix_feat_proj\.{_W}", r"feature_projection.\g<p>"),
        (rf"fuser\.layers\.{_I}\.dwconv\.{_W}", r"memory_fuser.layers.\g<i>.depthwise_conv.\g<p>"),
        (rf"fuser\.layers\.{_I}\.norm\.{_W}", r"memory_fuser.layers.\g<i>.layer_norm.\g<p>"),
        (rf"fuser\.layers\.{_I}\.pwconv(?P<n>[12])\.{_W}", r"memory_fuser.layers.\g<i>.pointwise_conv\g<n>.\g<p>"),
        (rf"fuser\.layers\.{_I}\.gamma", r"memory_fuser.layers.\g<i>.scale"),  # ConvNeXt layer scale
        (rf"out_proj\.{_W}", r"projection.\g<p>"),
    ]


def _top_level_rules(object_pointer_depth: int) -> list[Rule]:  # tracker. -> (no prefix)
    return [
        (rf"mask_downsample\.{_W}", r"mask_downsample.\g<p>"),
        (r"maskmem_tpos_enc", "memory_temporal_positional_encoding"),
        (r"no_mem_embed", "no_memory_embedding"),
        (r"no_mem_pos_enc", "no_memory_positional_encoding"),
        (r"no_obj_ptr", "no_object_pointer"),
        (r"no_obj_embed_spatial", "occlusion_spatial_embedding_parameter"),
        *_mlp("obj_ptr_proj", "object_pointer_proj", object_pointer_depth),
        (rf"obj_ptr_tpos_proj\.{_W}", r"temporal_positional_encoding_projection_layer.\g<p>"),
    ]


def _tracker_parts(state: Mapping[str, Tensor]) -> list[tuple[str, str, list[Rule]]]:
    """(original prefix, HF prefix, rules) per part, in order; the top level (empty prefix) comes last."""
    depths = {
        "hypernetwork": _depth(state, "sam_mask_decoder.output_hypernetworks_mlps.0.layers."),
        "iou": _depth(state, "sam_mask_decoder.iou_prediction_head.layers."),
        "object_score": _depth(state, "sam_mask_decoder.pred_obj_score_head.layers."),
    }
    final_index = _depth(state, "maskmem_backbone.mask_downsampler.encoder.") - 1  # the 1x1 conv closes it
    return [
        ("sam_prompt_encoder.", "prompt_encoder.", _PROMPT_ENCODER_RULES),
        ("sam_mask_decoder.transformer.", "mask_decoder.transformer.", _TWO_WAY_RULES),
        ("sam_mask_decoder.", "mask_decoder.", _mask_decoder_rules(depths)),
        ("transformer.encoder.", "memory_attention.", _MEMORY_ATTENTION_RULES),
        ("maskmem_backbone.", "memory_encoder.", _memory_encoder_rules(max(final_index, 0) // 3)),
        ("", "", _top_level_rules(_depth(state, "obj_ptr_proj.layers."))),
    ]


# ---------------------------------------------------------------------------------------------
# Conversion
# ---------------------------------------------------------------------------------------------


def convert_original_tracker(
    tracker: Mapping[str, Tensor],
    neck: Mapping[str, Tensor],
    detector_config: Sam3LiteTextConfig,
    tracker_config: dict[str, Any] | None = None,
) -> ConvertedTracker:
    """Rename an original file's tracker and tracker neck to the HF layout and give its config.

    Args:
        tracker: the ``tracker.*`` tensors, original names (not SAM 3.1's ``tracker.model.*``).
        neck: the ``(detector.)backbone.vision_backbone.sam2_convs.*`` tensors, original names.
        detector_config: the file's detector config; the tracker works on the same ViT grid, so image
            size, patch size and the neck's levels come from it.
        tracker_config: an HF ``sam3_tracker_video`` dict (from a sibling ``config.json`` in the
            ``sam3_video`` layout); None: inferred from shapes (see ``infer_tracker_config``).

    Raises:
        ValueError: a part is missing, a key has no place in the HF layout (original names listed), or
            the converted tensors do not fit the ``Sam3Tracker`` / ``VisionNeck`` of the config.
    """
    if not tracker:
        raise ValueError("the file holds the tracker's FPN neck (sam2_convs.*) but no tracker.* tensors")
    if not neck:
        raise ValueError("the file holds tracker.* tensors but not the tracker's FPN neck (sam2_convs.*)")
    state, origin = _strip(tracker, neck)
    sources: dict[str, str] = {}  # converted name (with its tracker_model./tracker_neck. prefix) -> original key
    converted = _stack_point_embeddings(state, sources)
    for src, dst, rules in _tracker_parts(state):
        converted.update(_rename(state, origin, "t:" + src, dst, rules, sources, "tracker_model."))
    neck_out = _rename(state, origin, "n:", "fpn_layers.", NECK_RULES, sources, "tracker_neck.")
    if state:
        leftovers = sorted(origin[key] for key in state)
        raise ValueError(
            f"{len(leftovers)} original tracker keys have no place in the HF layout: {_listing(leftovers)}"
        )
    # One random-Fourier matrix serves points and the image grid; the HF layout stores it in both places.
    shared = converted.get("prompt_encoder.shared_embedding.positional_embedding")
    if shared is not None:
        converted["shared_image_embedding.positional_embedding"] = shared
    if tracker_config is None:
        tracker_config = infer_tracker_config(converted, detector_config)
    config = TrackerConfig.from_dict(tracker_config)
    _check_fits(config, converted, neck_out, sources)
    return ConvertedTracker(tracker=converted, neck=neck_out, config=config.to_dict())


def _strip(tracker: Mapping[str, Tensor], neck: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, str]]:
    """One working dict with the part prefixes replaced by markers (``t:`` tracker, ``n:`` neck), and a map
    from every working name back to the original key (for messages)."""
    state: dict[str, Tensor] = {}
    origin: dict[str, str] = {}
    for key, tensor in tracker.items():
        if not key.startswith(TRACKER_PREFIX):
            raise ValueError(f"{key!r} is not a tracker key (expected the prefix {TRACKER_PREFIX!r})")
        state["t:" + key[len(TRACKER_PREFIX) :]], origin["t:" + key[len(TRACKER_PREFIX) :]] = tensor, key
    for key, tensor in neck.items():
        match = _NECK_PREFIX.match(key)
        if match is None:
            raise ValueError(f"{key!r} is not a tracker-neck key (expected ...vision_backbone.sam2_convs.*)")
        short = "n:" + key[match.end() :]
        if short in state:
            raise ValueError(f"keys {origin[short]!r} and {key!r} are the same tracker-neck tensor")
        state[short], origin[short] = tensor, key
    return state, origin


def _stack_point_embeddings(state: dict[str, Tensor], sources: dict[str, str]) -> dict[str, Tensor]:
    """``point_embeddings.{i}.weight`` [1, C] (labels 0, 1, then two box corners) -> ``point_embed.weight`` [N, C]."""
    pattern = re.compile(r"t:sam_prompt_encoder\.point_embeddings\.(\d+)\.weight")
    rows = {int(m.group(1)): key for key in state if (m := pattern.fullmatch(key))}
    if not rows:
        return {}
    if sorted(rows) != list(range(len(rows))):
        raise ValueError(
            f"tracker.sam_prompt_encoder.point_embeddings.*: indices {sorted(rows)} are not 0..{len(rows) - 1}"
        )
    shapes = {tuple(state[key].shape) for key in rows.values()}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2 or next(iter(shapes))[0] != 1:
        raise ValueError(
            f"tracker.sam_prompt_encoder.point_embeddings.*: expected [1, C] each, got shapes {sorted(shapes)}"
        )
    name = "prompt_encoder.point_embed.weight"
    sources["tracker_model." + name] = "tracker.sam_prompt_encoder.point_embeddings.*.weight"
    return {name: torch.cat([state.pop(rows[i]) for i in range(len(rows))], dim=0)}


def _rename(
    state: dict[str, Tensor],
    origin: dict[str, str],
    src: str,
    dst: str,
    rules: list[Rule],
    sources: dict[str, str],
    part: str,
) -> dict[str, Tensor]:
    """Pop the keys under ``src`` that a rule matches (whole key after ``src``); return them under ``dst``.
    Keys no rule matches stay in ``state`` (reported by the caller)."""
    compiled = [(re.compile(pattern), target) for pattern, target in rules]
    out: dict[str, Tensor] = {}
    for key in [k for k in state if k.startswith(src)]:
        for pattern, target in compiled:
            match = pattern.fullmatch(key[len(src) :])
            if match is None:
                continue
            name = dst + match.expand(target)
            if part + name in sources:
                raise ValueError(f"{sources[part + name]!r} and {origin[key]!r} both map to {part}{name}")
            out[name], sources[part + name] = state.pop(key), origin[key]
            break
    return out


def _check_fits(
    config: TrackerConfig, tracker: dict[str, Tensor], neck: dict[str, Tensor], sources: dict[str, str]
) -> None:
    """Compare the converted tensors with a ``Sam3Tracker`` / ``VisionNeck`` of ``config`` (built on the meta
    device: shapes only); raise naming every missing, unexpected or mis-shaped key."""
    with torch.device("meta"):
        expected = {
            "tracker_model.": Sam3Tracker(config).state_dict(),
            "tracker_neck.": VisionNeck(config.vision_config).state_dict(),
        }
    problems: list[str] = []
    for prefix, got in (("tracker_model.", tracker), ("tracker_neck.", neck)):
        want = expected[prefix]
        missing = [prefix + k for k in want if k not in got and not k.endswith("num_batches_tracked")]
        unexpected = [f"{prefix}{k} (from {sources.get(prefix + k, '?')})" for k in got if k not in want]
        mismatched = [
            f"{prefix}{k} (from {sources.get(prefix + k, '?')}): file {tuple(got[k].shape)} vs config "
            f"{tuple(want[k].shape)}"
            for k in got
            if k in want and tuple(got[k].shape) != tuple(want[k].shape)
        ]
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatches", mismatched)):
            if keys:
                problems.append(f"{len(keys)} {label}: {_listing(keys, 10)}")
    if problems:
        raise ValueError("the converted tracker does not fit its config; " + "; ".join(problems))


# ---------------------------------------------------------------------------------------------
# Config inference
# ---------------------------------------------------------------------------------------------


def infer_tracker_config(sd: Mapping[str, Tensor], detector_config: Sam3LiteTextConfig) -> dict[str, Any]:
    """An HF ``sam3_tracker_video`` config dict for a converted ``Sam3Tracker`` state dict.

    Read from shapes: the width, mask-decoder depth / MLP size / attention down-sampling / number of
    multimask outputs / IoU-head depth and width, the mask-input channels and number of point
    embeddings, the memory bank size (``num_maskmem``), memory-attention depth / FFN size / attention
    down-sampling, memory-encoder widths, mask-downsampler kernel, stride and stages, fuser depth /
    kernel / FFN size, and whether the occlusion embedding and the object-pointer temporal projection
    exist.

    Implied by the architecture: padding that keeps each fuser block's size (kernel // 2) and makes each
    downsampler conv divide by its stride exactly ((kernel - stride + 1) // 2).

    From the detector (the tracker reads its ViT): image size, patch size (so the RoPE grid), the
    neck's levels.

    Full-size SAM3 defaults (shapes do not tell; every released SAM3 / EfficientSAM3 tracker uses them):
    8 mask-decoder heads, 1 memory-attention head, activations, RoPE theta 10000, the memory sigmoid
    scale / bias (20, -10), up to 16 object pointers and 4 conditioning frames, the multimask settings
    and the dynamic-multimask stability thresholds (0.05, 0.98).

    Raises ValueError naming a missing key when the state dict is not a complete tracker.
    """
    width = _shape(sd, "no_memory_embedding")[-1]
    vision = detector_config.vision_config.to_dict()
    vision["fpn_hidden_size"] = width
    backbone = detector_config.vision_config.backbone_config
    image_size, patch_size = backbone.image_size, backbone.patch_size
    grid = image_size // patch_size
    downsampler = _shape(sd, "memory_encoder.mask_downsampler.layers.0.conv.weight")  # [stride², 1, k, k]
    stride, kernel = math.isqrt(downsampler[0]), downsampler[-1]
    if stride**2 != downsampler[0]:
        raise ValueError(f"mask downsampler: {downsampler[0]} channels after the first conv is not a square stride")
    stages = _count(sd, "memory_encoder.mask_downsampler.layers.")
    fuser_kernel = _shape(sd, "memory_encoder.memory_fuser.layers.0.depthwise_conv.weight")[-1]
    return {
        "model_type": TRACKER_MODEL_TYPE,
        "vision_config": vision,
        "image_size": image_size,
        "prompt_encoder_config": {
            "hidden_size": width,
            "image_size": image_size,
            "patch_size": patch_size,
            "mask_input_channels": _shape(sd, "prompt_encoder.mask_embed.conv2.weight")[0],
            "num_point_embeddings": _shape(sd, "prompt_encoder.point_embed.weight")[0],
        },
        "mask_decoder_config": {
            "hidden_size": width,
            "mlp_dim": _shape(sd, "mask_decoder.transformer.layers.0.mlp.proj_in.weight")[0],
            "num_hidden_layers": _count(sd, "mask_decoder.transformer.layers."),
            "attention_downsample_rate": width
            // _shape(sd, "mask_decoder.transformer.layers.0.cross_attn_token_to_image.q_proj.weight")[0],
            "num_multimask_outputs": _shape(sd, "mask_decoder.mask_tokens.weight")[0] - 1,
            "iou_head_depth": 2 + _count(sd, "mask_decoder.iou_prediction_head.layers.", allow_none=True),
            "iou_head_hidden_dim": _shape(sd, "mask_decoder.iou_prediction_head.proj_in.weight")[0],
        },
        "num_maskmem": _shape(sd, "memory_temporal_positional_encoding")[0],
        "enable_occlusion_spatial_embedding": "occlusion_spatial_embedding_parameter" in sd,
        "enable_temporal_pos_encoding_for_object_pointers": "temporal_positional_encoding_projection_layer.weight"
        in sd,
        "memory_attention_hidden_size": width,
        "memory_attention_num_layers": _count(sd, "memory_attention.layers."),
        "memory_attention_downsample_rate": width // _shape(sd, "memory_attention.layers.0.self_attn.q_proj.weight")[0],
        "memory_attention_feed_forward_hidden_size": _shape(sd, "memory_attention.layers.0.linear1.weight")[0],
        "memory_attention_rope_feat_sizes": [grid, grid],
        "memory_encoder_hidden_size": _shape(sd, "memory_encoder.feature_projection.weight")[0],
        "memory_encoder_output_channels": _shape(sd, "memory_encoder.projection.weight")[0],
        "mask_downsampler_embed_dim": _shape(sd, "memory_encoder.mask_downsampler.final_conv.weight")[0],
        "mask_downsampler_kernel_size": kernel,
        "mask_downsampler_stride": stride,
        "mask_downsampler_padding": (kernel - stride + 1) // 2,
        "mask_downsampler_total_stride": stride**stages,
        "memory_fuser_num_layers": _count(sd, "memory_encoder.memory_fuser.layers."),
        "memory_fuser_embed_dim": _shape(sd, "memory_encoder.memory_fuser.layers.0.depthwise_conv.weight")[0],
        "memory_fuser_intermediate_dim": _shape(sd, "memory_encoder.memory_fuser.layers.0.pointwise_conv1.weight")[0],
        "memory_fuser_kernel_size": fuser_kernel,
        "memory_fuser_padding": fuser_kernel // 2,
    }


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _depth(state: Mapping[str, Tensor], prefix: str) -> int:
    """1 + the largest index ``i`` of ``t:{prefix}{i}.`` keys (0 when there are none)."""
    pattern = re.compile(re.escape("t:" + prefix) + r"(\d+)\.")
    indices = [int(m.group(1)) for key in state if (m := pattern.match(key))]
    return max(indices) + 1 if indices else 0


def _shape(sd: Mapping[str, Tensor], key: str) -> tuple[int, ...]:
    if key not in sd:
        raise ValueError(f"cannot infer the tracker config: tracker_model.{key} is missing after conversion")
    return tuple(sd[key].shape)


def _count(sd: Mapping[str, Tensor], prefix: str, allow_none: bool = False) -> int:
    """Number of ``prefix{i}.`` blocks, numbered 0..n-1."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    indices = {int(m.group(1)) for key in sd if (m := pattern.match(key))}
    if not indices and not allow_none:
        raise ValueError(f"cannot infer the tracker config: no tracker_model.{prefix}* keys after conversion")
    if indices != set(range(len(indices))):
        raise ValueError(f"tracker_model.{prefix}*: indices {sorted(indices)} are not 0..{len(indices) - 1}")
    return len(indices)


def _listing(keys: list[str], limit: int = 40) -> str:
    shown = ", ".join(keys[:limit])
    return shown if len(keys) <= limit else f"{shown}, ... ({len(keys) - limit} more)"
