"""Original EfficientSAM3 / SAM3 checkpoints -> HF layout (sam3lite.checkpoints.convert).

Synthetic original checkpoints are built from tiny transformers reference models by a hand-written
inverse of the conversion (HF names -> original names, q/k/v fused, a cls slot added to the ViT
position table, ``x @ P`` projections transposed, everything under ``detector.``), saved with
``torch.save`` and read back with ``weights_only=True``, as an original ``.pt`` would be.
"""

from __future__ import annotations

import pytest
import torch
from original_layout import to_original
from reference import hf_config, hf_model, tiny_config_dict

from sam3lite.checkpoints.convert import (
    convert_original_state_dict,
    infer_config_dict,
    is_original_checkpoint,
    unwrap_checkpoint,
)
from sam3lite.modeling.config import Sam3LiteTextConfig

VARIANTS = ("s0", "l", "sam3")


@pytest.fixture(scope="module", params=VARIANTS)
def case(request, tmp_path_factory):
    """(variant, tiny config dict, HF state dict, original state dict as read back from a .pt)."""
    variant = request.param
    config = tiny_config_dict(variant)
    hf_sd = {k: v.detach().clone() for k, v in hf_model(config).state_dict().items()}
    path = tmp_path_factory.mktemp(variant) / "original.pt"
    torch.save({"model": to_original(hf_sd, variant), "epoch": 3}, path)
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    return variant, config, hf_sd, unwrap_checkpoint(loaded)


def _assert_same(converted: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert set(converted) == set(expected), (
        sorted(set(converted) - set(expected)),
        sorted(set(expected) - set(converted)),
    )
    for key, tensor in expected.items():
        assert converted[key].shape == tensor.shape, key
        assert converted[key].dtype == tensor.dtype, key
        assert torch.equal(converted[key], tensor), key


def test_round_trip_equals_hf_state_dict(case):
    _variant, _config, hf_sd, original = case
    assert is_original_checkpoint(original)
    _assert_same(convert_original_state_dict(original), hf_sd)


def test_converted_tensors_own_their_storage(case):
    # Split / sliced pieces are copies: safetensors refuses tensors sharing memory.
    _variant, _config, _hf_sd, original = case
    converted = convert_original_state_dict(original)
    pointers = [t.untyped_storage().data_ptr() for t in converted.values() if t.numel()]
    assert len(pointers) == len(set(pointers))


def test_hf_layout_is_not_original(case):
    _variant, _config, hf_sd, _original = case
    assert not is_original_checkpoint(hf_sd)
    with pytest.raises(ValueError, match="not an original"):
        convert_original_state_dict(hf_sd)


def test_bare_keys_without_detector_prefix(case):
    variant, _config, hf_sd, original = case
    bare = {k.removeprefix("detector."): v for k, v in original.items()}
    assert is_original_checkpoint(bare)
    _assert_same(convert_original_state_dict(bare), hf_sd)


def test_unknown_key_raises_naming_it(case):
    _variant, _config, _hf_sd, original = case
    extra = {
        **original,
        "detector.backbone.vision_backbone.trunk.ln_post.weight": torch.ones(64),
        "detector.mystery_head.weight": torch.ones(3),
    }
    with pytest.raises(ValueError) as info:
        convert_original_state_dict(extra)
    message = str(info.value)
    assert "detector.backbone.vision_backbone.trunk.ln_post.weight" in message
    assert "detector.mystery_head.weight" in message
    assert "2 original keys" in message


def test_missing_text_encoder_raises(case):
    _variant, _config, _hf_sd, original = case
    no_text = {k: v for k, v in original.items() if ".language_backbone." not in k}
    with pytest.raises(ValueError, match="no text encoder"):
        convert_original_state_dict(no_text)


def test_infer_config_reproduces_tiny_config(case):
    variant, config, hf_sd, _original = case
    inferred = infer_config_dict(hf_sd)
    assert inferred["model_type"] == config["model_type"]

    vit, tiny_vit = inferred["vision_config"]["backbone_config"], config["vision_config"]["backbone_config"]
    for name in ("hidden_size", "intermediate_size", "num_hidden_layers", "patch_size", "pretrain_image_size",
                 "window_size"):  # fmt: skip
        assert vit[name] == tiny_vit[name], name
    assert vit["num_attention_heads"] == tiny_vit["hidden_size"] // 64  # assumed
    assert inferred["vision_config"]["fpn_hidden_size"] == config["vision_config"]["fpn_hidden_size"]
    assert inferred["vision_config"]["scale_factors"] == [4.0, 2.0, 1.0, 0.5]

    text, tiny_text = inferred["text_config"], config["text_config"]
    for name in ("hidden_size", "intermediate_size", "num_hidden_layers", "max_position_embeddings"):
        assert text[name] == tiny_text[name], name
    assert text["num_attention_heads"] == max(1, tiny_text["hidden_size"] // 64)  # assumed
    if variant == "sam3":
        assert text["projection_dim"] == tiny_text["projection_dim"]
        assert text["hidden_act"] == "gelu"
    else:
        assert text["use_repmixer_blocks"] == tiny_text["use_repmixer_blocks"]
        assert text["projection_dim"] == hf_config(config).text_config.projection_dim

    for part in ("geometry_encoder_config", "detr_encoder_config", "detr_decoder_config"):
        for name in ("hidden_size", "num_attention_heads", "intermediate_size", "num_layers"):
            assert inferred[part][name] == config[part][name], (part, name)
    assert inferred["detr_decoder_config"]["num_queries"] == config["detr_decoder_config"]["num_queries"]
    assert inferred["mask_decoder_config"]["hidden_size"] == config["mask_decoder_config"]["hidden_size"]


def test_inferred_config_builds_a_model_the_weights_fit(case):
    # The strongest check of the inferred numbers: transformers builds a model of that shape and the
    # state dict loads into it strictly; sam3lite's typed config accepts it too.
    _variant, _config, hf_sd, original = case
    inferred = infer_config_dict(convert_original_state_dict(original))
    Sam3LiteTextConfig.from_dict(inferred)
    model = hf_model(inferred)
    model.load_state_dict(hf_sd, strict=True)


def test_infer_config_names_a_missing_key(case):
    _variant, _config, hf_sd, _original = case
    partial = {k: v for k, v in hf_sd.items() if not k.startswith("detr_decoder.")}
    with pytest.raises(ValueError, match="detr_decoder"):
        infer_config_dict(partial)


# ---------------------------------------------------------------------------------------------
# MobileCLIP position table (77 entries in older files)
# ---------------------------------------------------------------------------------------------

_POS_KEY = "text_encoder.embeddings.position_embedding.position_embedding"


@pytest.fixture(scope="module")
def original_l():
    config = tiny_config_dict("l")  # TEXT_L stores a 77-entry table
    hf_sd = dict(hf_model(config).state_dict())
    return hf_sd, to_original(hf_sd, "l")


def test_77_entry_table_kept_by_default(original_l):
    hf_sd, original = original_l
    converted = convert_original_state_dict(original)
    assert converted[_POS_KEY].shape == (1, 1, 77, 96)
    assert infer_config_dict(converted)["text_config"]["max_position_embeddings"] == 77


def test_77_entry_table_truncated_on_request(original_l):
    hf_sd, original = original_l
    converted = convert_original_state_dict(original, text_context_length=16)
    assert converted[_POS_KEY].shape == (1, 1, 16, 96)
    assert torch.equal(converted[_POS_KEY], hf_sd[_POS_KEY][:, :, :16])
    assert infer_config_dict(converted)["text_config"]["max_position_embeddings"] == 16
    rest = {k: v for k, v in converted.items() if k != _POS_KEY}
    _assert_same(rest, {k: v for k, v in hf_sd.items() if k != _POS_KEY})


@pytest.mark.parametrize("length", [0, 78])
def test_bad_context_length_raises(original_l, length):
    _hf_sd, original = original_l
    with pytest.raises(ValueError, match="text_context_length"):
        convert_original_state_dict(original, text_context_length=length)


def test_clip_table_truncated_on_request():
    config = tiny_config_dict("sam3")
    hf_sd = dict(hf_model(config).state_dict())
    converted = convert_original_state_dict(to_original(hf_sd, "sam3"), text_context_length=20)
    key = "text_encoder.text_model.embeddings.position_embedding.weight"
    assert torch.equal(converted[key], hf_sd[key][:20])


# ---------------------------------------------------------------------------------------------
# Unwrapping and recognition
# ---------------------------------------------------------------------------------------------


def test_unwrap_checkpoint_forms():
    sd = {"a.weight": torch.ones(2)}
    assert unwrap_checkpoint({"model": sd, "optimizer": {"state": {}}}) == sd
    assert unwrap_checkpoint({"state_dict": sd}) == sd
    assert unwrap_checkpoint(sd) == sd
    with pytest.raises(ValueError, match="not named tensors"):
        unwrap_checkpoint({"a.weight": torch.ones(2), "epoch": 3})
    with pytest.raises(ValueError, match="expected a state dict"):
        unwrap_checkpoint([torch.ones(2)])


def test_is_original_looks_through_wrapper():
    sd = {"detector.backbone.vision_backbone.trunk.pos_embed": torch.zeros(1, 17, 4)}
    assert is_original_checkpoint(sd)
    assert is_original_checkpoint({"model": sd})
    assert not is_original_checkpoint({"vision_encoder.backbone.embeddings.position_embeddings": torch.zeros(1)})
    assert not is_original_checkpoint({"tracker.sam_mask_decoder.iou_token.weight": torch.zeros(1)})


def test_reparameterized_repmixer_is_reported():
    config = tiny_config_dict("s0")
    original = to_original(dict(hf_model(config).state_dict()), "s0")
    folded = {k: v for k, v in original.items() if ".transformer.0.token_mixer." not in k}
    folded["detector.backbone.language_backbone.encoder.transformer.0.token_mixer.reparam_conv.weight"] = torch.ones(
        64, 1, 1, 11
    )
    with pytest.raises(ValueError, match="reparameterized"):
        convert_original_state_dict(folded)
