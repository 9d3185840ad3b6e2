"""A hand-written inverse of the tracker conversion: the tracker of a transformers ``Sam3VideoModel``
(``tracker_model.*``) and its neck (``tracker_neck.*``) as an original SAM3 / EfficientSAM3 ``.pt`` holds
them: ``tracker.*`` with the attribute names of sam3/model/sam3_tracker_base.py and the SAM modules it
builds (sam/prompt_encoder.py, sam/mask_decoder.py, sam/transformer.py, model/memory.py, the memory
attention of model/decoder.py), the neck under ``detector.backbone.vision_backbone.sam2_convs.*``.

Written from those module definitions, independently of ``sam3lite.checkpoints.convert_tracker``, which
the tests check against it. MLPs are SAM's ``MLP`` with three Linears (``layers.0..2``), as in SAM3.
"""

from __future__ import annotations

import re

import torch

NECK = "detector.backbone.vision_backbone.sam2_convs."

# (HF name after ``tracker_model.``, original name after ``tracker.``), first match wins. ``{last}`` is
# the index of the mask downsampler's closing 1x1 conv (3 x the number of strided stages).
_MLP3 = {"proj_in": "0", "layers.0": "1", "proj_out": "2"}
_TRACKER_NAMES: list[tuple[str, str]] = [
    # prompt encoder: PromptEncoder(pe_layer, point_embeddings, not_a_point_embed, mask_downscaling, no_mask_embed)
    (r"prompt_encoder\.shared_embedding\.positional_embedding",
     "sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"),
    (r"prompt_encoder\.not_a_point_embed\.weight", "sam_prompt_encoder.not_a_point_embed.weight"),
    (r"prompt_encoder\.no_mask_embed\.weight", "sam_prompt_encoder.no_mask_embed.weight"),
    (r"prompt_encoder\.mask_embed\.conv1\.(.+)", r"sam_prompt_encoder.mask_downscaling.0.\1"),
    (r"prompt_encoder\.mask_embed\.layer_norm1\.(.+)", r"sam_prompt_encoder.mask_downscaling.1.\1"),
    (r"prompt_encoder\.mask_embed\.conv2\.(.+)", r"sam_prompt_encoder.mask_downscaling.3.\1"),
    (r"prompt_encoder\.mask_embed\.layer_norm2\.(.+)", r"sam_prompt_encoder.mask_downscaling.4.\1"),
    (r"prompt_encoder\.mask_embed\.conv3\.(.+)", r"sam_prompt_encoder.mask_downscaling.6.\1"),
    # mask decoder: MaskDecoder with a TwoWayTransformer of TwoWayAttentionBlocks
    (r"mask_decoder\.transformer\.layers\.(\d+)\.(self_attn|cross_attn_token_to_image|cross_attn_image_to_token)\.o_proj\.(.+)",
     r"sam_mask_decoder.transformer.layers.\1.\2.out_proj.\3"),
    (r"mask_decoder\.transformer\.layers\.(\d+)\.(self_attn|cross_attn_token_to_image|cross_attn_image_to_token)\.([qkv]_proj)\.(.+)",
     r"sam_mask_decoder.transformer.layers.\1.\2.\3.\4"),
    (r"mask_decoder\.transformer\.layers\.(\d+)\.layer_norm(\d)\.(.+)",
     r"sam_mask_decoder.transformer.layers.\1.norm\2.\3"),
    (r"mask_decoder\.transformer\.layers\.(\d+)\.mlp\.proj_in\.(.+)",
     r"sam_mask_decoder.transformer.layers.\1.mlp.lin1.\2"),
    (r"mask_decoder\.transformer\.layers\.(\d+)\.mlp\.proj_out\.(.+)",
     r"sam_mask_decoder.transformer.layers.\1.mlp.lin2.\2"),
    (r"mask_decoder\.transformer\.final_attn_token_to_image\.o_proj\.(.+)",
     r"sam_mask_decoder.transformer.final_attn_token_to_image.out_proj.\1"),
    (r"mask_decoder\.transformer\.final_attn_token_to_image\.([qkv]_proj)\.(.+)",
     r"sam_mask_decoder.transformer.final_attn_token_to_image.\1.\2"),
    (r"mask_decoder\.transformer\.layer_norm_final_attn\.(.+)", r"sam_mask_decoder.transformer.norm_final_attn.\1"),
    (r"mask_decoder\.upscale_conv1\.(.+)", r"sam_mask_decoder.output_upscaling.0.\1"),
    (r"mask_decoder\.upscale_layer_norm\.(.+)", r"sam_mask_decoder.output_upscaling.1.\1"),
    (r"mask_decoder\.upscale_conv2\.(.+)", r"sam_mask_decoder.output_upscaling.3.\1"),
    (r"mask_decoder\.output_hypernetworks_mlps\.(\d+)\.(proj_in|layers\.0|proj_out)\.(.+)",
     r"sam_mask_decoder.output_hypernetworks_mlps.\1.layers.<\2>.\3"),
    (r"mask_decoder\.(iou_prediction_head|pred_obj_score_head)\.(proj_in|layers\.0|proj_out)\.(.+)",
     r"sam_mask_decoder.\1.layers.<\2>.\3"),
    (r"mask_decoder\.(iou_token|mask_tokens|obj_score_token|conv_s0|conv_s1)\.(.+)", r"sam_mask_decoder.\1.\2"),
    # memory attention: TransformerWrapper.encoder = TransformerEncoderCrossAttention of TransformerDecoderLayerv2
    (r"memory_attention\.layers\.(\d+)\.(self_attn|cross_attn_image)\.o_proj\.(.+)",
     r"transformer.encoder.layers.\1.\2.out_proj.\3"),
    (r"memory_attention\.layers\.(\d+)\.(self_attn|cross_attn_image)\.([qkv]_proj)\.(.+)",
     r"transformer.encoder.layers.\1.\2.\3.\4"),
    (r"memory_attention\.layers\.(\d+)\.(linear[12])\.(.+)", r"transformer.encoder.layers.\1.\2.\3"),
    (r"memory_attention\.layers\.(\d+)\.layer_norm([123])\.(.+)", r"transformer.encoder.layers.\1.norm\2.\3"),
    (r"memory_attention\.layer_norm\.(.+)", r"transformer.encoder.norm.\1"),
    # memory encoder: SimpleMaskEncoder(mask_downsampler.encoder Sequential, pix_feat_proj, fuser of CXBlocks, out_proj)
    (r"memory_encoder\.mask_downsampler\.layers\.(\d+)\.conv\.(.+)",
     r"maskmem_backbone.mask_downsampler.encoder.<3*\1>.\2"),
    (r"memory_encoder\.mask_downsampler\.layers\.(\d+)\.layer_norm\.(.+)",
     r"maskmem_backbone.mask_downsampler.encoder.<3*\1+1>.\2"),
    (r"memory_encoder\.mask_downsampler\.final_conv\.(.+)", r"maskmem_backbone.mask_downsampler.encoder.{last}.\1"),
    (r"memory_encoder\.feature_projection\.(.+)", r"maskmem_backbone.pix_feat_proj.\1"),
    (r"memory_encoder\.memory_fuser\.layers\.(\d+)\.depthwise_conv\.(.+)",
     r"maskmem_backbone.fuser.layers.\1.dwconv.\2"),
    (r"memory_encoder\.memory_fuser\.layers\.(\d+)\.layer_norm\.(.+)", r"maskmem_backbone.fuser.layers.\1.norm.\2"),
    (r"memory_encoder\.memory_fuser\.layers\.(\d+)\.pointwise_conv([12])\.(.+)",
     r"maskmem_backbone.fuser.layers.\1.pwconv\2.\3"),
    (r"memory_encoder\.memory_fuser\.layers\.(\d+)\.scale", r"maskmem_backbone.fuser.layers.\1.gamma"),
    (r"memory_encoder\.projection\.(.+)", r"maskmem_backbone.out_proj.\1"),
    # Sam3TrackerBase's own parameters
    (r"mask_downsample\.(.+)", r"mask_downsample.\1"),
    (r"memory_temporal_positional_encoding", "maskmem_tpos_enc"),
    (r"no_memory_embedding", "no_mem_embed"),
    (r"no_memory_positional_encoding", "no_mem_pos_enc"),
    (r"no_object_pointer", "no_obj_ptr"),
    (r"occlusion_spatial_embedding_parameter", "no_obj_embed_spatial"),
    (r"object_pointer_proj\.(proj_in|layers\.0|proj_out)\.(.+)", r"obj_ptr_proj.layers.<\1>.\2"),
    (r"temporal_positional_encoding_projection_layer\.(.+)", r"obj_ptr_tpos_proj.\1"),
]  # fmt: skip

# Sam3DualViTDetNeck.sam2_convs: level 0 (x4) = dconv_2x2_0, GELU, dconv_2x2_1; level 1 (x2) = dconv_2x2.
_NECK_NAMES: list[tuple[str, str]] = [
    (r"fpn_layers\.0\.scale_layers\.0\.(.+)", r"0.dconv_2x2_0.\1"),
    (r"fpn_layers\.0\.scale_layers\.2\.(.+)", r"0.dconv_2x2_1.\1"),
    (r"fpn_layers\.1\.scale_layers\.0\.(.+)", r"1.dconv_2x2.\1"),
    (r"fpn_layers\.(\d+)\.proj1\.(.+)", r"\1.conv_1x1.\2"),
    (r"fpn_layers\.(\d+)\.proj2\.(.+)", r"\1.conv_3x3.\2"),
]


def _fill(template: str) -> str:
    """Evaluate the ``<...>`` index expressions of a matched template."""
    template = re.sub(r"<(proj_in|layers\.0|proj_out)>", lambda m: _MLP3[m.group(1)], template)
    return re.sub(r"<3\*(\d+)(\+1)?>", lambda m: str(3 * int(m.group(1)) + (1 if m.group(2) else 0)), template)


def _rename(name: str, table: list[tuple[str, str]], last: int) -> str:
    for pattern, template in table:
        match = re.fullmatch(pattern, name)
        if match:
            return _fill(match.expand(template)).replace("{last}", str(last))
    raise AssertionError(f"test inverse has no rule for {name}")


def tracker_to_original(hf_sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The ``tracker_model.*`` / ``tracker_neck.*`` tensors of an HF ``sam3_video`` state dict (transformers'
    doubled ``tracker_model.tracker_model.`` accepted) as an original file's ``tracker.*`` and ``sam2_convs.*``."""
    tracker = {}
    neck = {}
    for key, tensor in hf_sd.items():
        if key.startswith("tracker_model."):
            tracker[key.replace("tracker_model.tracker_model.", "tracker_model.", 1)[len("tracker_model.") :]] = tensor
        elif key.startswith("tracker_neck."):
            neck[key[len("tracker_neck.") :]] = tensor
    stages = len({k.split(".")[3] for k in tracker if k.startswith("memory_encoder.mask_downsampler.layers.")})
    out: dict[str, torch.Tensor] = {}
    # The HF layout stores the random-Fourier matrix twice; the original once (in the prompt encoder).
    image, points = (
        tracker.pop("shared_image_embedding.positional_embedding"),
        tracker["prompt_encoder.shared_embedding.positional_embedding"],
    )
    assert image is points or torch.equal(image, points), "the two random-Fourier copies differ"
    for row, embedding in enumerate(tracker.pop("prompt_encoder.point_embed.weight")):
        out[f"tracker.sam_prompt_encoder.point_embeddings.{row}.weight"] = embedding[None].clone()
    for name, tensor in tracker.items():
        out["tracker." + _rename(name, _TRACKER_NAMES, 3 * stages)] = tensor.clone()
    for name, tensor in neck.items():
        out[NECK + _rename(name, _NECK_NAMES, 0)] = tensor.clone()
    return out
