"""The two text modes (docs/text_modes.md), against EfficientSAM3's algorithm written out by hand.

``original`` mode must compute what EfficientSAM3's ``TextStudentEncoder`` computes (read from
github.com/SimonZeng7108/efficientsam3, ``sam3/sam3/model/text_encoder_student.py`` and
``sam3/sam3/backbones/mobile_clip.py``): embedding + position table used as stored (no resize at the
trained context length), pre-norm layers on ``nn.MultiheadAttention`` **without** a key padding mask,
final LayerNorm, then the projector on every token; the detector's padding is ``ids == 0``; the
sentence embedding is the EOT token times ``projection_layer`` (``x @ P``).
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from reference import rel_err, save_reference, tiny_config_dict

import sam3lite
from sam3lite.processing.tokenizer import Tokenizer

PROMPTS = ["yellow school bus", "ear", "a dog &amp; a cat", "the person on the left holding a red umbrella!!"]


@pytest.fixture(scope="module")
def s1_dir(tmp_path_factory):
    """A tiny S1-shaped checkpoint (standard layers only) with a 16-row position table."""
    config = tiny_config_dict("s1")
    directory = tmp_path_factory.mktemp("s1")
    save_reference(config, directory, seed=7)
    return directory


@pytest.fixture(scope="module")
def s0_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("s0")
    save_reference(tiny_config_dict("s0"), directory, seed=8)
    return directory


def original_text_path(model, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """EfficientSAM3's text path for a MobileCLIP student without RepMixer blocks, from its weights.

    Returns (prompt tokens [B, T, C] = projector(all tokens), detector padding mask [B, T] (True = real),
    sentence embedding [B, D] = EOT state @ projection_layer).
    """
    sd = {k: v.double() for k, v in model.text_encoder.state_dict().items()}
    cfg = model.config.text_config
    width, heads, eps = cfg.hidden_size, cfg.num_attention_heads, cfg.layer_norm_eps
    x = F.embedding(ids, sd["embeddings.token_embedding.weight"])
    x = x + sd["embeddings.position_embedding.position_embedding"][0, 0, : ids.shape[1]]
    for i in range(cfg.num_hidden_layers):
        p = f"layers.{i}."
        attention = torch.nn.MultiheadAttention(width, heads, batch_first=True).double().eval()
        attention.in_proj_weight.data = torch.cat([sd[p + f"self_attn.{n}_proj.weight"] for n in "qkv"])
        attention.in_proj_bias.data = torch.cat([sd[p + f"self_attn.{n}_proj.bias"] for n in "qkv"])
        attention.out_proj.weight.data = sd[p + "self_attn.out_proj.weight"]
        attention.out_proj.bias.data = sd[p + "self_attn.out_proj.bias"]
        h = F.layer_norm(x, (width,), sd[p + "layer_norm1.weight"], sd[p + "layer_norm1.bias"], eps)
        x = x + attention(h, h, h, need_weights=False)[0]  # no key_padding_mask: pads are attended to
        h = F.layer_norm(x, (width,), sd[p + "layer_norm2.weight"], sd[p + "layer_norm2.bias"], eps)
        h = F.linear(F.gelu(F.linear(h, sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"])), sd[p + "mlp.fc2.weight"])
        x = x + h + sd[p + "mlp.fc2.bias"]
    x = F.layer_norm(x, (width,), sd["final_layer_norm.weight"], sd["final_layer_norm.bias"], eps)
    projector = {k: v.double() for k, v in model.text_projection.state_dict().items()}
    tokens = F.linear(x, projector["weight"], projector["bias"])
    weight = sd["projection.weight"]
    p_matrix = weight if weight.shape[0] == weight.shape[1] else weight.t()  # see original_projection
    sentence = x[torch.arange(len(ids)), ids.argmax(-1)] @ p_matrix
    return tokens, ids != 0, sentence


def test_original_mode_is_the_original_algorithm(s1_dir):
    model = sam3lite.load(s1_dir, text_mode="original")
    assert model.text_mode == "original"
    ids, mask = Tokenizer(16, "original")(PROMPTS)
    with torch.no_grad():
        ours = model.get_text_features(ids, mask)
        pooled = model.text_encoder(ids, None, original=True).pooler_output
    tokens, valid, sentence = original_text_path(model, ids)
    assert rel_err(ours.pooler_output, tokens) < 1e-5
    assert torch.equal(ours.attention_mask.bool(), valid)
    assert rel_err(pooled, sentence) < 1e-5


def test_modes_differ_on_padded_prompts_and_agree_on_full_ones(s0_dir):
    """A prompt filling the whole context has no padding: both modes give the same features. A short
    one differs (pad id, padding mask, table resize), as measured in docs/text_modes.md."""
    ours = {mode: sam3lite.load(s0_dir, text_mode=mode) for mode in ("transformers", "original")}
    full = torch.randint(1, 49406, (2, 16), generator=torch.Generator().manual_seed(0))
    full[:, 0], full[:, -1] = 49406, 49407
    with torch.no_grad():
        a = ours["transformers"].get_text_features(full, torch.ones_like(full))
        b = ours["original"].get_text_features(full)
        assert torch.allclose(a.pooler_output, b.pooler_output, atol=1e-6)
        assert torch.equal(a.attention_mask.bool(), b.attention_mask.bool())
        short_t = ours["transformers"].get_text_features(*Tokenizer(32)(["ear"]))
        short_o = ours["original"].get_text_features(*Tokenizer(16, "original")(["ear"]))
    real = 3  # BOS ear EOS
    assert rel_err(short_o.pooler_output[:, :real], short_t.pooler_output[:, :real]) > 1e-3


def test_pads_reach_real_tokens_only_in_original_mode(s1_dir):
    """Without a padding mask (original), what sits in the padding slots changes the real tokens' features;
    with one (transformers, no RepMixer in S1), it does not."""
    ids, _ = Tokenizer(16, "original")(["yellow school bus"])
    other = ids.clone()
    other[ids == 0] = 320  # another token in every pad slot
    real = ids != 0
    for mode, should_change in (("original", True), ("transformers", False)):
        model = sam3lite.load(s1_dir, text_mode=mode)
        with torch.no_grad():
            a = model.get_text_features(ids, real.long()).pooler_output[real]
            b = model.get_text_features(other, real.long()).pooler_output[real]
        assert (not torch.allclose(a, b, atol=1e-6)) == should_change, mode


def test_text_mode_is_saved_and_read_back(s0_dir, tmp_path):
    import json

    model = sam3lite.load(s0_dir, text_mode="original")
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["text_mode"] == "original"
    assert sam3lite.load(tmp_path).text_mode == "original"
    assert sam3lite.load(tmp_path, text_mode="transformers").text_mode == "transformers"
    # transformers still reads the file (it keeps the extra key as an attribute)
    from transformers import Sam3LiteTextModel

    Sam3LiteTextModel.from_pretrained(tmp_path)
    # a default-mode save writes no text_mode key: HF configs round-trip unchanged
    sam3lite.load(s0_dir).save_pretrained(tmp_path / "plain")
    assert "text_mode" not in json.loads((tmp_path / "plain" / "config.json").read_text())


def test_bad_text_mode_is_named(s0_dir):
    with pytest.raises(ValueError, match="text_mode"):
        sam3lite.load(s0_dir, text_mode="clip")


def test_predictor_tokenizes_in_the_models_mode(s0_dir):
    model = sam3lite.load(s0_dir, text_mode="original")
    predictor = sam3lite.Predictor(model)
    assert predictor.processor.text_mode == "original" and predictor.processor.context_length == 16
    feats = predictor.text_features(["ear"])
    assert feats.pooler_output.shape[1] == 16
    with pytest.raises(ValueError, match="text_mode"):
        sam3lite.Predictor(model, processor=sam3lite.Processor(image_size=112))
    plain = sam3lite.Predictor(sam3lite.load(s0_dir))
    assert plain.processor.text_mode == "transformers" and plain.processor.context_length == 32


def test_original_mode_predictions_run_end_to_end(s0_dir):
    predictor = sam3lite.Predictor(sam3lite.load(s0_dir, text_mode="original"))
    predictor.set_image(torch.rand(3, 90, 120))
    results = predictor.predict(text=["ear", "yellow school bus"], threshold=0.0)
    assert [r.prompt for r in results] == ["ear", "yellow school bus"]
    assert all(r.masks.shape[1:] == (90, 120) for r in results)


def test_processor_from_pretrained_reads_mode_and_context(s0_dir, tmp_path):
    processor = sam3lite.Processor.from_pretrained(s0_dir, text_mode="original")
    assert processor.text_mode == "original" and processor.context_length == 16
    ids = processor(text=["ear"])["input_ids"]
    assert ids.shape == (1, 16) and ids[0, 3:].eq(0).all()
    sam3lite.load(s0_dir, text_mode="original").save_pretrained(tmp_path)
    assert sam3lite.Processor.from_pretrained(tmp_path).text_mode == "original"  # from config.json
    assert sam3lite.Processor.from_pretrained(s0_dir).context_length == 32


def test_original_mode_with_rows_other_than_16(tmp_path):
    """The context is the checkpoint's table length, whatever it is."""
    config = copy.deepcopy(tiny_config_dict("s1"))
    config["text_config"]["max_position_embeddings"] = 12
    save_reference(config, tmp_path, seed=1)
    model = sam3lite.load(tmp_path, text_mode="original")
    assert sam3lite.Predictor(model).processor.context_length == 12
