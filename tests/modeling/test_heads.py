"""Parity of the DETR decoder, dot-product scoring and mask decoder with the transformers reference.

Inputs come from the reference pipeline itself (vision encoder, text encoder, geometry encoder, DETR
encoder); the expected outputs are the reference model's own ``pred_*`` fields, so these tests also pin
down which prompt tensor each head receives.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import pytest
import torch
from reference import hf_model, rel_err, text_inputs, tiny_config_dict

from sam3lite.modeling.config import Sam3LiteTextConfig
from sam3lite.modeling.detr_decoder import DetrDecoder
from sam3lite.modeling.mask_decoder import MaskDecoder
from sam3lite.modeling.scoring import DotProductScoring

TOL = 1e-4


@dataclass
class Case:
    memory: torch.Tensor
    memory_pos: torch.Tensor
    prompt: torch.Tensor
    prompt_valid: torch.Tensor
    spatial_shape: tuple[int, int]
    fpn: list[torch.Tensor]
    expected: object  # reference model output


@pytest.fixture(scope="module")
def ref():
    return hf_model(tiny_config_dict())


@pytest.fixture(scope="module")
def heads(ref):
    config = Sam3LiteTextConfig.from_dict(tiny_config_dict())
    decoder = DetrDecoder(config.detr_decoder_config)
    scoring = DotProductScoring(config.detr_decoder_config)
    mask_decoder = MaskDecoder(config.mask_decoder_config)
    decoder.load_state_dict(ref.detr_decoder.state_dict(), strict=True)
    scoring.load_state_dict(ref.dot_product_scoring.state_dict(), strict=True)
    mask_decoder.load_state_dict(ref.mask_decoder.state_dict(), strict=True)
    return decoder.eval(), scoring.eval(), mask_decoder.eval()


def _case(ref, boxes: torch.Tensor | None = None, labels: torch.Tensor | None = None, grad: bool = False) -> Case:
    """Run the reference model, and rebuild the inputs its heads saw from the reference's own parts."""
    torch.manual_seed(1)
    pixels = torch.randn(2, 3, 112, 112)
    ids, attention_mask = text_inputs(batch=2, lengths=[5, 11])  # different prompt lengths in the batch
    with torch.set_grad_enabled(grad):
        expected = ref(
            pixel_values=pixels,
            input_ids=ids,
            attention_mask=attention_mask,
            input_boxes=boxes,
            input_boxes_labels=labels,
        )
    with torch.no_grad():
        vision = ref.vision_encoder(pixels)
        fpn, fpn_pos = list(vision.fpn_hidden_states[:-1]), list(vision.fpn_position_encoding[:-1])
        prompt = ref.get_text_features(input_ids=ids, attention_mask=attention_mask).pooler_output
        valid = attention_mask.bool()
        if boxes is not None:
            geometry = ref.geometry_encoder(
                box_embeddings=boxes,
                box_mask=labels != -10,
                box_labels=labels.clamp(min=0),
                img_feats=fpn,
                img_pos_embeds=fpn_pos,
            )
            prompt = torch.cat((prompt, geometry.last_hidden_state), dim=1)
            valid = torch.cat((valid, geometry.attention_mask), dim=1)
        encoded = ref.detr_encoder(
            vision_features=[fpn[-1]], text_features=prompt, vision_pos_embeds=[fpn_pos[-1]], text_mask=valid
        )
    return Case(
        encoded.last_hidden_state, encoded.pos_embeds_flattened, prompt, valid, tuple(fpn[-1].shape[-2:]), fpn, expected
    )


def _run(heads, case: Case, dtype: torch.dtype = torch.float32):
    decoder, scoring, mask_decoder = heads
    cast = lambda t: t.to(dtype)  # noqa: E731
    out = decoder(cast(case.memory), cast(case.memory_pos), cast(case.prompt), case.prompt_valid, case.spatial_shape)
    logits = scoring(out.queries, cast(case.prompt), case.prompt_valid)
    masks, semantic = mask_decoder(
        out.queries, [cast(f) for f in case.fpn], cast(case.memory), cast(case.prompt), case.prompt_valid
    )
    return out, logits, masks, semantic


@pytest.fixture(scope="module")
def text_case(ref):
    return _case(ref)


@pytest.fixture(scope="module")
def box_case(ref):
    boxes = torch.tensor([[[0.3, 0.4, 0.2, 0.3], [0.6, 0.5, 0.4, 0.2]], [[0.5, 0.5, 0.5, 0.6], [0, 0, 0, 0]]])
    labels = torch.tensor([[1, 0], [1, -10]])
    return _case(ref, boxes, labels)


@pytest.mark.parametrize("case_name", ["text_case", "box_case"])
def test_heads_match_reference_model(request, ref, heads, case_name):
    case = request.getfixturevalue(case_name)
    with torch.no_grad():
        out, logits, masks, semantic = _run(heads, case)
        ref_dec = ref.detr_decoder(
            vision_features=case.memory,
            text_features=case.prompt,
            vision_pos_encoding=case.memory_pos,
            text_mask=case.prompt_valid,
            spatial_shapes=torch.tensor([case.spatial_shape]),
        )
    exp = case.expected
    assert out.queries.shape == (2, 10, 32) and out.boxes.shape == (2, 10, 4) and out.presence_logits.shape == (2, 1)
    assert logits.shape == (2, 10) and masks.shape == (2, 10, 32, 32) and semantic.shape == (2, 1, 32, 32)
    assert rel_err(out.queries, ref_dec.intermediate_hidden_states[-1]) < TOL
    assert rel_err(out.boxes, exp.pred_boxes) < TOL
    assert rel_err(out.presence_logits, exp.presence_logits) < TOL
    assert rel_err(logits, exp.pred_logits) < TOL
    assert rel_err(masks, exp.pred_masks) < TOL
    assert rel_err(semantic, exp.semantic_seg) < TOL


def test_padding_is_ignored(heads, text_case):
    """Extra padded prompt tokens with garbage values change nothing."""
    case = text_case
    pad = 7
    prompt = torch.cat((case.prompt, 50 * torch.randn(2, pad, 32)), dim=1)
    valid = torch.cat((case.prompt_valid, torch.zeros(2, pad, dtype=torch.bool)), dim=1)
    padded = Case(case.memory, case.memory_pos, prompt, valid, case.spatial_shape, case.fpn, None)
    with torch.no_grad():
        a, b = _flat(_run(heads, case)), _flat(_run(heads, padded))
    for x, y in zip(a, b, strict=True):
        assert rel_err(x, y) < TOL


def _flat(result) -> list[torch.Tensor]:
    out, *rest = result
    return [out.queries, out.boxes, out.presence_logits, *rest]


def test_gradients_match_reference(ref, heads):
    """Box refinement detaches exactly where the reference does: head parameter gradients agree."""
    decoder, scoring, mask_decoder = heads
    case = _case(ref, grad=True)
    weights = [
        torch.randn(t.shape, generator=torch.Generator().manual_seed(i))
        for i, t in enumerate(
            (
                case.expected.pred_boxes,
                case.expected.pred_logits,
                case.expected.presence_logits,
                case.expected.pred_masks,
            )
        )
    ]

    def loss(boxes, logits, presence, masks):
        return sum((w * t).sum() for w, t in zip(weights, (boxes, logits, presence, masks), strict=True))

    ref.zero_grad()
    exp = case.expected
    loss(exp.pred_boxes, exp.pred_logits, exp.presence_logits, exp.pred_masks).backward()
    for module in heads:
        module.zero_grad()
    out, logits, masks, _ = _run(heads, case)
    loss(out.boxes, logits, out.presence_logits, masks).backward()
    pairs = [(decoder, ref.detr_decoder), (scoring, ref.dot_product_scoring), (mask_decoder, ref.mask_decoder)]
    for ours, theirs in pairs:
        ref_grads = dict(theirs.named_parameters())
        for name, p in ours.named_parameters():
            g_ref = ref_grads[name].grad
            if g_ref is None:
                assert p.grad is None or not p.grad.any(), name
                continue
            assert p.grad is not None, name
            assert rel_err(p.grad, g_ref) < 1e-3, name
    for module in (ref, *heads):
        module.zero_grad()


def test_bfloat16(heads, text_case):
    """bf16 weights and activations; boxes/presence stay float32 and close to the float32 result."""
    half_heads = [copy.deepcopy(module).to(torch.bfloat16) for module in heads]
    with torch.no_grad():
        full = _run(heads, text_case)
        half = _run(half_heads, text_case, torch.bfloat16)
    out, logits, masks, semantic = half
    assert out.boxes.dtype == torch.float32 and out.presence_logits.dtype == torch.float32
    assert out.queries.dtype == logits.dtype == masks.dtype == semantic.dtype == torch.bfloat16
    assert (out.boxes - full[0].boxes).abs().max() < 0.02
    assert rel_err(out.presence_logits, full[0].presence_logits) < 0.05
    assert rel_err(logits, full[1]) < 0.05
    assert rel_err(masks, full[2]) < 0.05


def test_image_features_broadcast_over_prompts(heads, text_case):
    """FPN levels and memory_pos may have batch 1 (one cached image, many prompts)."""
    case = text_case
    decoder, _, mask_decoder = heads
    memory = case.memory[:1].expand(2, -1, -1)
    fpn1 = [f[:1] for f in case.fpn]
    with torch.no_grad():
        a = decoder(memory, case.memory_pos[:1], case.prompt, case.prompt_valid, case.spatial_shape)
        b = decoder(memory, case.memory_pos[:1].expand(2, -1, -1), case.prompt, case.prompt_valid, case.spatial_shape)
        m1 = mask_decoder(a.queries, fpn1, memory, case.prompt, case.prompt_valid)
        m2 = mask_decoder(a.queries, [f.expand(2, -1, -1, -1) for f in fpn1], memory, case.prompt, case.prompt_valid)
    assert torch.equal(a.boxes, b.boxes)
    assert torch.equal(m1[0], m2[0]) and torch.equal(m1[1], m2[1])


def test_bad_inputs(heads, text_case):
    case = text_case
    decoder, scoring, mask_decoder = heads
    with pytest.raises(ValueError, match="spatial_shape"):
        decoder(case.memory, case.memory_pos, case.prompt, case.prompt_valid, (4, 8))
    with pytest.raises(ValueError, match="memory_pos"):
        decoder(case.memory, case.memory_pos[:, :10], case.prompt, case.prompt_valid, case.spatial_shape)
    with pytest.raises(ValueError, match="prompt_valid"):
        decoder(case.memory, case.memory_pos, case.prompt, case.prompt_valid[:, :3], case.spatial_shape)
    with pytest.raises(ValueError, match="prompt must be"):
        decoder(case.memory, case.memory_pos, case.prompt[:1], case.prompt_valid[:1], case.spatial_shape)
    queries = torch.zeros(2, 10, 32)
    with pytest.raises(ValueError, match="prompt_valid"):
        scoring(queries, case.prompt, case.prompt_valid[:, :3])
    with pytest.raises(ValueError, match="share B"):
        scoring(queries[:1], case.prompt, case.prompt_valid)
    with pytest.raises(ValueError, match="last FPN level"):
        mask_decoder(queries, case.fpn[:2], case.memory, case.prompt, case.prompt_valid)
    with pytest.raises(ValueError, match="queries must be"):
        mask_decoder(queries[:, :, :16], case.fpn, case.memory, case.prompt, case.prompt_valid)
    config = Sam3LiteTextConfig.from_dict(tiny_config_dict()).detr_decoder_config
    config.num_layers = 0
    with pytest.raises(ValueError, match="num_layers"):
        DetrDecoder(config)
