"""A hand-written inverse of the original-checkpoint conversion: HF-layout state dicts as an original
EfficientSAM3 / SAM3 ``.pt`` would hold them (HF names -> original names, q/k/v fused, a cls slot in
the ViT position table, ``x @ P`` projections transposed, everything under ``detector.``).
Written independently of ``sam3lite.checkpoints.convert``, which the tests check against it.
"""

from __future__ import annotations

import re

import torch

# HF name -> original name (without the ``detector.`` wrapper), per part: (HF prefix, original prefix,
# rules on the rest of the name). ``#q``/``#k``/``#v`` mark the pieces of a fused tensor, concatenated
# in q, k, v order under the name before the ``#``; ``<n-1>`` is an MLP index shifted down by one.
_QKV = r"([qkv])_proj\.(weight|bias)"
_INVERSE: list[tuple[str, str, list[tuple[str, str]]]] = [
    ("vision_encoder.backbone.", "backbone.vision_backbone.trunk.", [
        (r"embeddings\.position_embeddings", "pos_embed"),
        (r"embeddings\.patch_embeddings\.projection\.(.+)", r"patch_embed.proj.\1"),
        (r"layer_norm\.(.+)", r"ln_pre.\1"),
        (r"layers\.(\d+)\.layer_norm([12])\.(.+)", r"blocks.\1.norm\2.\3"),
        (rf"layers\.(\d+)\.attention\.{_QKV}", r"blocks.\1.attn.qkv.\3#\2"),
        (r"layers\.(\d+)\.attention\.o_proj\.(.+)", r"blocks.\1.attn.proj.\2"),
        (r"layers\.(\d+)\.mlp\.(fc[12])\.(.+)", r"blocks.\1.mlp.\2.\3"),
    ]),
    # FPN neck: level 0 is the x4 level (two ConvTs), level 1 the x2 level (one)
    ("vision_encoder.neck.fpn_layers.", "backbone.vision_backbone.convs.", [
        (r"0\.scale_layers\.0\.(.+)", r"0.dconv_2x2_0.\1"),
        (r"0\.scale_layers\.2\.(.+)", r"0.dconv_2x2_1.\1"),
        (r"1\.scale_layers\.0\.(.+)", r"1.dconv_2x2.\1"),
        (r"(\d+)\.proj1\.(.+)", r"\1.conv_1x1.\2"),
        (r"(\d+)\.proj2\.(.+)", r"\1.conv_3x3.\2"),
    ]),
    # MobileCLIP text (EfficientSAM3 LiteText)
    ("text_encoder.layers.", "backbone.language_backbone.encoder.transformer.", [
        (r"(\d+)\.layer_norm1\.(.+)", r"\1.pre_norm_mha.0.\2"),
        (rf"(\d+)\.self_attn\.{_QKV}", r"\1.pre_norm_mha.1.qkv_proj.\3#\2"),
        (r"(\d+)\.self_attn\.out_proj\.(.+)", r"\1.pre_norm_mha.1.out_proj.\2"),
        (r"(\d+)\.layer_norm2\.(.+)", r"\1.pre_norm_ffn.0.\2"),
        (r"(\d+)\.mlp\.fc1\.(.+)", r"\1.pre_norm_ffn.1.\2"),
        (r"(\d+)\.mlp\.fc2\.(.+)", r"\1.pre_norm_ffn.4.\2"),
        (r"(\d+)\.layer_scale", r"\1.layer_scale"),
        (r"(\d+)\.token_mixer\.layer_scale", r"\1.token_mixer.layer_scale"),
        (r"(\d+)\.token_mixer\.reference_batchnorm\.(.+)", r"\1.token_mixer.norm.rbr_skip.\2"),
        (r"(\d+)\.token_mixer\.mixer\.batchnorm_skip\.(.+)", r"\1.token_mixer.mixer.rbr_skip.\2"),
        (r"(\d+)\.token_mixer\.mixer\.conv\.(.+)", r"\1.token_mixer.mixer.rbr_conv.0.conv.\2"),
        (r"(\d+)\.token_mixer\.mixer\.batchnorm_conv\.(.+)", r"\1.token_mixer.mixer.rbr_conv.0.bn.\2"),
        (r"(\d+)\.conv_feed_forward\.depthwise_conv\.(.+)", r"\1.convffn.conv.conv.\2"),
        (r"(\d+)\.conv_feed_forward\.depthwise_batchnorm\.(.+)", r"\1.convffn.conv.bn.\2"),
        (r"(\d+)\.conv_feed_forward\.mlp\.(fc[12])\.(.+)", r"\1.convffn.\2.\3"),
    ]),
    # CLIP text (SAM3)
    ("text_encoder.text_model.encoder.layers.", "backbone.language_backbone.encoder.transformer.resblocks.", [
        (rf"(\d+)\.self_attn\.{_QKV}", r"\1.attn.in_proj_\3#\2"),
        (r"(\d+)\.self_attn\.out_proj\.(.+)", r"\1.attn.out_proj.\2"),
        (r"(\d+)\.layer_norm([12])\.(.+)", r"\1.ln_\2.\3"),
        (r"(\d+)\.mlp\.fc1\.(.+)", r"\1.mlp.c_fc.\2"),
        (r"(\d+)\.mlp\.fc2\.(.+)", r"\1.mlp.c_proj.\2"),
    ]),
    ("text_encoder.", "backbone.language_backbone.encoder.", [
        (r"embeddings\.token_embedding\.weight", "embedding_layer.weight"),
        (r"embeddings\.position_embedding\.position_embedding", "positional_embedding.pos_embed.pos_embed"),
        (r"final_layer_norm\.(.+)", r"final_layer_norm.\1"),
        (r"projection\.weight", "projection_layer"),
        (r"text_model\.embeddings\.token_embedding\.weight", "token_embedding.weight"),
        (r"text_model\.embeddings\.position_embedding\.weight", "positional_embedding"),
        (r"text_model\.final_layer_norm\.(.+)", r"ln_final.\1"),
        (r"text_projection\.weight", "text_projection"),
    ]),
    # ``projector`` in LiteText, ``resizer`` in SAM3 (chosen in _to_original)
    ("text_projection.", "backbone.language_backbone.TEXT_PROJ.", [(r"(.+)", r"\1")]),
    ("geometry_encoder.", "geometry_encoder.", [
        (r"vision_layer_norm\.(.+)", r"img_pre_norm.\1"),
        (r"prompt_layer_norm\.(.+)", r"norm.\1"),
        (r"output_layer_norm\.(.+)", r"encode_norm.\1"),
        (rf"layers\.(\d+)\.self_attn\.{_QKV}", r"encode.\1.self_attn.in_proj_\3#\2"),
        (r"layers\.(\d+)\.self_attn\.o_proj\.(.+)", r"encode.\1.self_attn.out_proj.\2"),
        (rf"layers\.(\d+)\.cross_attn\.{_QKV}", r"encode.\1.cross_attn_image.in_proj_\3#\2"),
        (r"layers\.(\d+)\.cross_attn\.o_proj\.(.+)", r"encode.\1.cross_attn_image.out_proj.\2"),
        (r"layers\.(\d+)\.mlp\.fc([12])\.(.+)", r"encode.\1.linear\2.\3"),
        (r"layers\.(\d+)\.layer_norm([123])\.(.+)", r"encode.\1.norm\2.\3"),
        (r"(.+)", r"\1"),
    ]),
    ("detr_encoder.layers.", "transformer.encoder.layers.", [
        (rf"(\d+)\.self_attn\.{_QKV}", r"\1.self_attn.in_proj_\3#\2"),
        (r"(\d+)\.self_attn\.o_proj\.(.+)", r"\1.self_attn.out_proj.\2"),
        (rf"(\d+)\.cross_attn\.{_QKV}", r"\1.cross_attn_image.in_proj_\3#\2"),
        (r"(\d+)\.cross_attn\.o_proj\.(.+)", r"\1.cross_attn_image.out_proj.\2"),
        (r"(\d+)\.mlp\.fc([12])\.(.+)", r"\1.linear\2.\3"),
        (r"(\d+)\.layer_norm([123])\.(.+)", r"\1.norm\2.\3"),
    ]),
    ("detr_decoder.", "transformer.decoder.", [
        (rf"layers\.(\d+)\.self_attn\.{_QKV}", r"layers.\1.self_attn.in_proj_\3#\2"),
        (r"layers\.(\d+)\.self_attn\.o_proj\.(.+)", r"layers.\1.self_attn.out_proj.\2"),
        (rf"layers\.(\d+)\.text_cross_attn\.{_QKV}", r"layers.\1.ca_text.in_proj_\3#\2"),
        (r"layers\.(\d+)\.text_cross_attn\.o_proj\.(.+)", r"layers.\1.ca_text.out_proj.\2"),
        (rf"layers\.(\d+)\.vision_cross_attn\.{_QKV}", r"layers.\1.cross_attn.in_proj_\3#\2"),
        (r"layers\.(\d+)\.vision_cross_attn\.o_proj\.(.+)", r"layers.\1.cross_attn.out_proj.\2"),
        (r"layers\.(\d+)\.mlp\.fc([12])\.(.+)", r"layers.\1.linear\2.\3"),
        (r"layers\.(\d+)\.self_attn_layer_norm\.(.+)", r"layers.\1.norm2.\2"),
        (r"layers\.(\d+)\.text_cross_attn_layer_norm\.(.+)", r"layers.\1.catext_norm.\2"),
        (r"layers\.(\d+)\.vision_cross_attn_layer_norm\.(.+)", r"layers.\1.norm1.\2"),
        (r"layers\.(\d+)\.mlp_layer_norm\.(.+)", r"layers.\1.norm3.\2"),
        (r"output_layer_norm\.(.+)", r"norm.\1"),
        (r"presence_layer_norm\.(.+)", r"presence_token_out_norm.\1"),
        (r"box_head\.layer(\d)\.(.+)", r"bbox_embed.layers.<\1-1>.\2"),
        (r"presence_head\.layer(\d)\.(.+)", r"presence_token_head.layers.<\1-1>.\2"),
        (r"ref_point_head\.layer(\d)\.(.+)", r"ref_point_head.layers.<\1-1>.\2"),
        (r"box_rpb_embed_([xy])\.layer(\d)\.(.+)", r"boxRPB_embed_\1.layers.<\2-1>.\3"),
        (r"(query_embed|reference_points|presence_token)\.weight", r"\1.weight"),
    ]),
    ("mask_decoder.", "segmentation_head.", [
        (r"pixel_decoder\.(.+)", r"pixel_decoder.\1"),
        (r"mask_embedder\.layers\.(.+)", r"mask_predictor.mask_embed.layers.\1"),
        (r"instance_projection\.(.+)", r"instance_seg_head.\1"),
        (r"semantic_projection\.(.+)", r"semantic_seg_head.\1"),
        (rf"prompt_cross_attn\.{_QKV}", r"cross_attend_prompt.in_proj_\2#\1"),
        (r"prompt_cross_attn\.o_proj\.(.+)", r"cross_attend_prompt.out_proj.\1"),
        (r"prompt_cross_attn_norm\.(.+)", r"cross_attn_norm.\1"),
    ]),
    ("dot_product_scoring.", "dot_prod_scoring.", [
        (r"text_mlp\.layer(\d)\.(.+)", r"prompt_mlp.layers.<\1-1>.\2"),
        (r"text_mlp_out_norm\.(.+)", r"prompt_mlp.out_norm.\1"),
        (r"text_proj\.(.+)", r"prompt_proj.\1"),
        (r"query_proj\.(.+)", r"hs_proj.\1"),
    ]),
]  # fmt: skip

# Keys the original files hold that the detector conversion must drop (RoPE buffers, point projections).
# The tracker and its neck (tracker.*, sam2_convs.*) are added by original_tracker_layout when a test
# needs them: a partial tracker here would be reported as not convertible.
_UNUSED_EXTRAS = {
    "detector.backbone.vision_backbone.trunk.blocks.0.attn.freqs_cis": (16, 8),
    "detector.geometry_encoder.points_direct_project.weight": (32, 2),
    "detector.geometry_encoder.points_pool_project.weight": (32, 32),
    "detector.geometry_encoder.points_pos_enc_project.bias": (32,),
}


def _original_name(hf_key: str) -> str:
    for hf_prefix, original_prefix, rules in _INVERSE:
        if not hf_key.startswith(hf_prefix):
            continue
        for pattern, target in rules:
            match = re.fullmatch(pattern, hf_key[len(hf_prefix) :])
            if match:
                name = original_prefix + match.expand(target)
                return re.sub(r"<(\d)-1>", lambda m: str(int(m.group(1)) - 1), name)
    raise AssertionError(f"test inverse has no rule for {hf_key}")


def to_original(hf_sd: dict[str, torch.Tensor], variant: str) -> dict[str, torch.Tensor]:
    """The HF state dict as an original checkpoint's state dict would hold it."""
    fused: dict[str, dict[str, torch.Tensor]] = {}
    out: dict[str, torch.Tensor] = {}
    for key, tensor in hf_sd.items():
        name = _original_name(key)
        name = name.replace("TEXT_PROJ", "resizer" if variant == "sam3" else "projector")
        if "#" in name:
            base, part = name.split("#")
            fused.setdefault(base, {})[part] = tensor
            continue
        if name.endswith(("encoder.projection_layer", "encoder.text_projection")):
            tensor = tensor.t()  # Linear weight [out, in] -> parameter used as x @ P
        if name.endswith("trunk.pos_embed"):
            tensor = torch.cat([torch.randn(1, 1, tensor.shape[-1]), tensor], dim=1)  # cls slot first
        out[name] = tensor.clone()
    for base, parts in fused.items():
        assert sorted(parts) == ["k", "q", "v"], base
        out[base] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    original = {f"detector.{name}": tensor for name, tensor in out.items()}
    for name, shape in _UNUSED_EXTRAS.items():
        original[name] = torch.randn(shape)
    return original
