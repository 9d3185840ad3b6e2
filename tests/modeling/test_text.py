"""Text encoders against the transformers reference: MobileCLIP student (s0/s1/l) and SAM3's CLIP."""

from __future__ import annotations

import copy
import functools
from collections import OrderedDict

import pytest
import torch
from reference import TEXT_VARIANTS, hf_config, randomize_, rel_err, text_inputs, tiny_config_dict

from sam3lite.modeling.clip_text import ClipTextEncoder
from sam3lite.modeling.config import Sam3LiteTextConfig
from sam3lite.modeling.text import MobileClipTextEncoder, Sam3LiteTextTextModel, TextEncoderOutput, reparameterize_model

LENGTHS = [5, 11]  # two prompts of different lengths, padded with 49407


@functools.cache
def _reference(variant: str) -> torch.nn.Module:
    """The reference text encoder alone (what ``Sam3[LiteText]Model.text_encoder`` is), randomized."""
    from transformers import CLIPTextModelWithProjection
    from transformers.models.sam3_lite_text.modeling_sam3_lite_text import Sam3LiteTextTextModel as Reference

    config = hf_config(tiny_config_dict(variant)).text_config
    torch.manual_seed(0)
    model = CLIPTextModelWithProjection(config) if variant == "sam3" else Reference(config)
    return randomize_(model).eval()


@functools.cache
def _ours(variant: str) -> torch.nn.Module:
    """Ours with the reference weights (cached: tests copy it before changing it)."""
    config = Sam3LiteTextConfig.from_dict(tiny_config_dict(variant)).text_config
    model = ClipTextEncoder(config) if variant == "sam3" else MobileClipTextEncoder(config)
    model.load_state_dict(_reference(variant).state_dict(), strict=True)
    return model.eval()


def _ref_outputs(variant: str, ids: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        out = _reference(variant)(input_ids=ids, attention_mask=mask)
    pooled = out.text_embeds if variant == "sam3" else out.pooler_output
    return out.last_hidden_state, pooled


@pytest.mark.parametrize("length", [32, 16])
@pytest.mark.parametrize("variant", list(TEXT_VARIANTS))
def test_matches_reference(variant: str, length: int) -> None:
    model = _ours(variant)
    ids, mask = text_inputs(2, length, lengths=LENGTHS)
    for m in (mask, None):
        ref_hidden, ref_pooled = _ref_outputs(variant, ids, m)
        with torch.no_grad():
            out = model(ids, m)
        assert isinstance(out, TextEncoderOutput)
        assert out.last_hidden_state.shape == (2, length, model.config.hidden_size)
        assert out.pooler_output.shape == (2, model.config.projection_dim)
        assert rel_err(out.last_hidden_state, ref_hidden) < 1e-4
        assert rel_err(out.pooler_output, ref_pooled) < 1e-4


def test_alias() -> None:
    assert Sam3LiteTextTextModel is MobileClipTextEncoder


def test_pad_tokens_leak_only_through_repmixer() -> None:
    """RepMixer ignores the attention mask; standard (masked) layers do not see padded tokens."""
    ids, mask = text_inputs(2, 32, lengths=LENGTHS)
    other = ids.clone()
    other[mask == 0] = 0  # different pad id, same mask
    real = mask.bool()
    for variant, leaks in (("s0", True), ("s1", False)):
        model = _ours(variant)
        with torch.no_grad():
            a = model(ids, mask).last_hidden_state[real]
            b = model(other, mask).last_hidden_state[real]
        assert (rel_err(a, b) > 1e-3) == leaks, variant


def test_reparameterize_keeps_outputs() -> None:
    model = _ours("s0")
    ids, mask = text_inputs(2, 32, lengths=LENGTHS)
    with torch.no_grad():
        before = model(ids, mask)
        folded = reparameterize_model(copy.deepcopy(model))
        folded.reparameterize()  # idempotent
        after = folded(ids, mask)
    assert rel_err(after.last_hidden_state, before.last_hidden_state) < 1e-5
    assert rel_err(after.pooler_output, before.pooler_output) < 1e-5
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    keys = folded.state_dict().keys()
    assert not any("batchnorm" in k or "layer_scale" in k or "running_" in k for k in keys)
    assert "layers.0.token_mixer.reparam_conv.weight" in keys
    mixer = folded.layers[0].token_mixer.reparam_conv
    assert mixer.groups == mixer.in_channels == mixer.out_channels  # one depthwise conv


def test_loads_without_num_batches_tracked() -> None:
    ids, mask = text_inputs(2, 32, lengths=LENGTHS)
    full = _reference("s0").state_dict()
    kept = OrderedDict((k, v) for k, v in full.items() if not k.endswith("num_batches_tracked"))
    assert len(kept) < len(full)
    expected = _ours("s0")(ids, mask).last_hidden_state
    plain = dict(kept)
    with_metadata = copy.copy(kept)
    with_metadata._metadata = full._metadata  # version info makes plain torch BatchNorm demand the key
    for state in (plain, with_metadata):
        model = MobileClipTextEncoder(_ours("s0").config).eval()
        model.load_state_dict(state, strict=True)
        with torch.no_grad():
            assert rel_err(model(ids, mask).last_hidden_state, expected) == 0


@pytest.mark.parametrize("variant", ["s0", "sam3"])
def test_bad_inputs(variant: str) -> None:
    model = _ours(variant)
    ids, mask = text_inputs(2, 16, lengths=LENGTHS)
    vocab = model.config.vocab_size
    with pytest.raises(ValueError, match="input_ids"):
        model(ids[0])
    with pytest.raises(ValueError, match="input_ids"):
        model(ids.float())
    with pytest.raises(ValueError, match="input_ids"):
        model(torch.full_like(ids, vocab))
    with pytest.raises(ValueError, match="input_ids"):
        model(ids - 50000)
    with pytest.raises(ValueError, match="attention_mask"):
        model(ids, mask[:, :8])
    with pytest.raises(ValueError, match="attention_mask"):
        model(ids, mask[0])
    if variant == "sam3":
        long_ids, _ = text_inputs(2, model.config.max_position_embeddings + 1, lengths=LENGTHS)
        with pytest.raises(ValueError, match="input_ids"):
            model(long_ids)


@pytest.mark.parametrize("variant", ["s0", "sam3"])
def test_bfloat16(variant: str) -> None:
    model = _ours(variant)
    ids, mask = text_inputs(2, 32, lengths=LENGTHS)
    with torch.no_grad():
        ref = model(ids, mask).last_hidden_state
        low = copy.deepcopy(model).to(torch.bfloat16)
        for m in (low, reparameterize_model(copy.deepcopy(low))):
            out = m(ids, mask)
            assert out.last_hidden_state.dtype == out.pooler_output.dtype == torch.bfloat16
            assert torch.isfinite(out.last_hidden_state).all()
            assert rel_err(out.last_hidden_state, ref) < 5e-2


def test_randomized_standalone_matches_after_fold() -> None:
    """A freshly randomized encoder (not from the reference) folds exactly too, incl. batch of one."""
    config = Sam3LiteTextConfig.from_dict(tiny_config_dict("s0")).text_config
    model = randomize_(MobileClipTextEncoder(config), seed=3).eval()
    ids, mask = text_inputs(1, 20, lengths=[7])
    with torch.no_grad():
        before = model(ids, mask).last_hidden_state
        model.reparameterize()
        assert rel_err(model(ids, mask).last_hidden_state, before) < 1e-5
