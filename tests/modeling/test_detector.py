"""End-to-end parity of the assembled model against transformers, on checkpoints the tests create."""

from __future__ import annotations

import pytest
import torch
from reference import rel_err, save_reference, text_inputs, tiny_config_dict

import sam3lite

OUTPUTS = ("pred_masks", "pred_boxes", "pred_logits", "presence_logits", "semantic_seg")
TOL = 1e-4


@pytest.fixture(scope="module", params=["s0", "s1", "l", "sam3"])
def pair(request, tmp_path_factory):
    """(reference model, our model loaded from the reference's saved files, variant)."""
    directory = tmp_path_factory.mktemp(f"ckpt_{request.param}")
    ref = save_reference(tiny_config_dict(request.param), directory, seed=1)
    ours = sam3lite.load(directory)
    return ref, ours, request.param


def _pixels(batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, 112, 112, generator=torch.Generator().manual_seed(seed))


def _compare(ref_out, our_out, tol: float = TOL) -> None:
    for name in OUTPUTS:
        ref_t, our_t = getattr(ref_out, name), getattr(our_out, name)
        assert our_t.shape == ref_t.shape, name
        err = rel_err(our_t, ref_t)
        assert err < tol, f"{name}: relative error {err:.2e}"


def _run_both(ref, ours, **inputs):
    with torch.no_grad():
        return ref(**inputs), ours(**inputs)


def test_text_only_batch_of_two_lengths(pair):
    ref, ours, _ = pair
    ids, mask = text_inputs(2, lengths=[4, 11])
    _compare(*_run_both(ref, ours, pixel_values=_pixels(), input_ids=ids, attention_mask=mask))


def test_boxes_positive_negative_and_padded(pair):
    ref, ours, _ = pair
    ids, mask = text_inputs(2, lengths=[3, 3])  # "visual": what the processor sends for boxes only
    boxes = torch.tensor([[[0.5, 0.5, 0.4, 0.3], [0.2, 0.3, 0.1, 0.2]], [[0.6, 0.4, 0.5, 0.5], [0.0, 0.0, 0.0, 0.0]]])
    labels = torch.tensor([[1, 0], [1, -10]])
    _compare(
        *_run_both(
            ref,
            ours,
            pixel_values=_pixels(),
            input_ids=ids,
            attention_mask=mask,
            input_boxes=boxes,
            input_boxes_labels=labels,
        )
    )


def test_text_and_boxes(pair):
    ref, ours, _ = pair
    ids, mask = text_inputs(2, lengths=[6, 9], seed=3)
    boxes = torch.tensor([[[0.3, 0.6, 0.2, 0.2]], [[0.7, 0.2, 0.3, 0.1]]])
    labels = torch.tensor([[1], [0]])
    _compare(
        *_run_both(
            ref,
            ours,
            pixel_values=_pixels(seed=2),
            input_ids=ids,
            attention_mask=mask,
            input_boxes=boxes,
            input_boxes_labels=labels,
        )
    )


def test_precomputed_features_reused_across_prompts(pair):
    """One image encoding and one text encoding, reused: same numbers as full forwards."""
    ref, ours, _ = pair
    pixels = _pixels(1, seed=5)
    with torch.no_grad():
        vision = ours.get_vision_features(pixels)
        for seed, n in ((1, 5), (2, 12)):
            ids, mask = text_inputs(1, lengths=[n], seed=seed)
            text = ours.get_text_features(ids, mask)
            expected = ref(pixel_values=pixels, input_ids=ids, attention_mask=mask)
            _compare(expected, ours(vision_embeds=vision, text_embeds=text))
            _compare(expected, ours(vision_embeds=vision, input_ids=ids, attention_mask=mask))


def test_many_prompts_against_one_image_broadcast(pair):
    """A batch of prompts against a single cached image equals one forward per prompt."""
    ref, ours, _ = pair
    pixels = _pixels(1, seed=7)
    ids, mask = text_inputs(3, lengths=[4, 8, 6], seed=4)
    with torch.no_grad():
        vision = ours.get_vision_features(pixels)
        batched = ours(vision_embeds=vision, input_ids=ids, attention_mask=mask)
        for i in range(3):
            single = ref(pixel_values=pixels, input_ids=ids[i : i + 1], attention_mask=mask[i : i + 1])
            for name in OUTPUTS:
                assert rel_err(getattr(batched, name)[i : i + 1], getattr(single, name)) < TOL, name


def test_text_model_alone(pair):
    ref, ours, variant = pair
    ids, mask = text_inputs(2, lengths=[5, 10])
    with torch.no_grad():
        ref_feats = ref.get_text_features(input_ids=ids, attention_mask=mask)
        our_feats = ours.get_text_features(ids, mask)
    assert rel_err(our_feats.pooler_output, ref_feats.pooler_output) < TOL
    assert rel_err(our_feats.last_hidden_state, ref_feats.last_hidden_state) < TOL


def test_reparameterized_model_keeps_outputs(tmp_path):
    """Folding S0's RepMixer blocks changes no output."""
    save_reference(tiny_config_dict("s0"), tmp_path, seed=2)
    ours = sam3lite.load(tmp_path)
    import copy

    folded = copy.deepcopy(ours).reparameterize()
    assert folded.state_dict().keys() != ours.state_dict().keys()  # the BatchNorm branches are gone
    ids, mask = text_inputs(2, lengths=[4, 9])
    with torch.no_grad():
        _compare(
            ours(pixel_values=_pixels(), input_ids=ids, attention_mask=mask),
            folded(pixel_values=_pixels(), input_ids=ids, attention_mask=mask),
            tol=1e-5,
        )


def test_outputs_support_dict_access(pair):
    _, ours, _ = pair
    ids, mask = text_inputs(1, lengths=[5])
    with torch.no_grad():
        out = ours(pixel_values=_pixels(1), input_ids=ids, attention_mask=mask)
    assert out["pred_logits"] is out.pred_logits
    assert out.get("nope") is None
    assert set(OUTPUTS) <= set(out.keys())


def test_outputs_support_positions_and_to_tuple_as_transformers(pair):
    """``out[0]``, ``out[-1]``, ``out[1:3]`` and ``out.to_tuple()`` follow transformers' ModelOutput:
    the fields that are not None, in the reference's order."""
    ref, ours, variant = pair
    ids, mask = text_inputs(1, lengths=[5])
    ref_out, out = _run_both(ref, ours, pixel_values=_pixels(1), input_ids=ids, attention_mask=mask)
    assert out[0] is out.pred_masks and out[-1] is out.semantic_seg
    assert out[1:3] == (out.pred_boxes, out.pred_logits)
    assert len(out.to_tuple()) == len(OUTPUTS)
    for mine, theirs in zip(out.to_tuple(), ref_out.to_tuple()[: len(OUTPUTS)], strict=True):
        assert mine.shape == theirs.shape and rel_err(mine, theirs) < TOL

    with torch.no_grad():
        ref_feats = ref.get_text_features(input_ids=ids, attention_mask=mask)
        feats = ours.get_text_features(ids, mask)
    assert feats[0] is feats.last_hidden_state and feats[1] is feats.pooler_output  # the projected tokens
    if variant != "sam3":  # transformers' SAM3 returns CLIP's output class, which puts text_embeds first
        assert rel_err(feats[0], ref_feats[0]) < TOL and rel_err(feats[1], ref_feats[1]) < TOL
    assert feats.to_tuple() == (feats.last_hidden_state, feats.pooler_output, feats.attention_mask)
    unmasked = ours.get_text_features(ids)
    assert len(unmasked.to_tuple()) == 2  # attention_mask None: left out, as ModelOutput does
    with pytest.raises(IndexError):
        unmasked[2]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_close_to_float32(pair, dtype):
    """The whole detector in bfloat16 / float16 stays close to float32 (sensitive parts run in float32)."""
    import copy

    _, ours, _ = pair
    half = copy.deepcopy(ours).to(dtype)
    ids, mask = text_inputs(2, lengths=[4, 11])
    boxes = torch.tensor([[[0.5, 0.5, 0.4, 0.3]], [[0.3, 0.6, 0.2, 0.2]]])
    inputs = dict(pixel_values=_pixels(), input_ids=ids, attention_mask=mask, input_boxes=boxes)
    with torch.no_grad():
        expected, got = ours(**inputs), half(**inputs)
    for name in OUTPUTS:
        value = getattr(got, name)
        # Boxes and presence come out in float32: that arithmetic is kept there on purpose.
        assert value.dtype == (torch.float32 if name in ("pred_boxes", "presence_logits") else dtype), name
        assert bool(value.isfinite().all()), name
        # Relative to the output's scale, floored at 1: a presence logit near 0 has no relative scale.
        target = getattr(expected, name)
        err = (value.float() - target).abs().max() / target.abs().max().clamp(min=1.0)
        assert err < 5e-2, f"{name}: {err:.2e}"
