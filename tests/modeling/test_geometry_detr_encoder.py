"""Parity of the box-prompt encoder and the DETR encoder with the transformers reference."""

from __future__ import annotations

import copy

import pytest
import torch
from reference import hf_model, rel_err, tiny_config_dict

from sam3lite.modeling.config import Sam3LiteTextConfig
from sam3lite.modeling.detr_encoder import DetrEncoder, EncoderOutput, concat_prompts
from sam3lite.modeling.geometry import GeometryEncoder
from sam3lite.modeling.position import encode_grid

TOL = 1e-4


@pytest.fixture(scope="module")
def setup():
    config = tiny_config_dict()
    ref = hf_model(config)
    cfg = Sam3LiteTextConfig.from_dict(config)
    geometry = GeometryEncoder(cfg.geometry_encoder_config).eval()
    geometry.load_state_dict(ref.geometry_encoder.state_dict(), strict=True)
    detr = DetrEncoder(cfg.detr_encoder_config).eval()
    detr.load_state_dict(ref.detr_encoder.state_dict(), strict=True)
    with torch.no_grad():
        vision = ref.vision_encoder(torch.randn(2, 3, 112, 112, generator=torch.Generator().manual_seed(1)))
    # What the reference model hands its heads: every FPN level but the 0.5x one.
    feats = tuple(vision.fpn_hidden_states[:-1])
    pos = tuple(vision.fpn_position_encoding[:-1])
    return ref, geometry, detr, feats, pos


def random_boxes(batch: int, num: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    centre = 0.2 + 0.6 * torch.rand(batch, num, 2, generator=gen)
    size = 0.05 + 0.5 * torch.rand(batch, num, 2, generator=gen)
    return torch.cat((centre, size), dim=-1)


def ref_geometry(ref, boxes, labels, feats, pos):
    """The reference model's own preprocessing: -10 marks padding, whose label then becomes 0."""
    with torch.no_grad():
        out = ref.geometry_encoder(
            box_embeddings=boxes,
            box_mask=labels != -10,
            box_labels=torch.where(labels == -10, 0, labels),
            img_feats=feats,
            img_pos_embeds=pos,
        )
    return out.last_hidden_state, out.attention_mask


@pytest.mark.parametrize(
    "labels",
    [
        [[1, 1, 1], [1, 1, 1]],  # positive
        [[0, 0, 0], [0, 1, 0]],  # negative (and mixed)
        [[1, 0, -10], [1, -10, -10]],  # padded, different counts per image
        [[-10, -10, -10], [1, 1, 0]],  # an image with no box at all: only CLS
    ],
)
def test_geometry_matches_reference(setup, labels):
    ref, geometry, _, feats, pos = setup
    labels = torch.tensor(labels)
    boxes = random_boxes(2, 3)
    want, want_valid = ref_geometry(ref, boxes, labels, feats, pos)
    with torch.no_grad():
        got, got_valid = geometry(boxes, labels, labels != -10, feats[-1], pos[-1])
        got_default, _ = geometry(boxes, labels, None, feats[-1], pos[-1])  # None: -10 marks padding
    assert got.shape == (2, 4, 32) and got_valid.dtype == torch.bool
    assert torch.equal(got_valid, want_valid)
    assert rel_err(got, want) < TOL
    assert torch.equal(got_default, got)
    # The CLS token sits right after the valid boxes.
    assert got_valid.sum(1).tolist() == [int((labels[i] != -10).sum()) + 1 for i in range(2)]


def test_geometry_padding_anywhere_equals_right_padding(setup):
    ref, geometry, _, feats, pos = setup
    boxes = random_boxes(2, 4, seed=3)
    labels = torch.tensor([[-10, 1, -10, 0], [1, -10, 0, 1]])
    order = torch.argsort((labels == -10).to(torch.uint8), dim=1, stable=True)
    compact_boxes = boxes.gather(1, order[..., None].expand(-1, -1, 4))
    compact_labels = labels.gather(1, order)
    want, want_valid = ref_geometry(ref, compact_boxes, compact_labels, feats, pos)
    with torch.no_grad():
        got, got_valid = geometry(boxes, labels, labels != -10, feats[-1], pos[-1])
    assert torch.equal(got_valid, want_valid)
    assert rel_err(got[got_valid], want[want_valid]) < TOL


def test_geometry_shared_image_and_grid_position(setup):
    _, geometry, _, feats, pos = setup
    boxes = random_boxes(3, 2, seed=5)
    labels = torch.tensor([[1, 0], [1, -10], [0, 1]])
    feat1, pos1 = feats[-1][:1], pos[-1][:1]
    grid = encode_grid(8, 8, 16)  # [C, h, w], what the vision encoder computes
    assert torch.allclose(grid, pos1[0], atol=1e-6)
    with torch.no_grad():
        want, _ = geometry(boxes, labels, None, feat1.expand(3, -1, -1, -1).contiguous(), pos1.expand(3, -1, -1, -1))
        shared, _ = geometry(boxes, labels, None, feat1, pos1)
        shared_grid, _ = geometry(boxes, labels, None, feat1, grid)
    assert rel_err(shared, want) < 1e-6
    assert rel_err(shared_grid, want) < 1e-5


def test_geometry_bfloat16(setup):
    _, geometry, _, feats, pos = setup
    boxes = random_boxes(2, 3, seed=7)
    labels = torch.tensor([[1, 0, -10], [1, 1, 1]])
    with torch.no_grad():
        want, _ = geometry(boxes, labels, None, feats[-1], pos[-1])
        bf16 = copy.deepcopy(geometry).to(torch.bfloat16)
        got, valid = bf16(boxes, labels, None, feats[-1].bfloat16(), pos[-1].bfloat16())
    assert got.dtype == torch.bfloat16
    assert rel_err(got[valid].float(), want[valid]) < 0.1


def text_prompt(batch: int = 2, length: int = 6, lengths=(3, 6), seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    text = torch.randn(batch, length, 32, generator=gen)
    valid = torch.arange(length)[None] < torch.tensor(lengths)[:, None]
    return text, valid


def ref_detr(ref, feats, pos, prompt, valid):
    with torch.no_grad():
        return ref.detr_encoder(
            vision_features=[feats[-1]], text_features=prompt, vision_pos_embeds=[pos[-1]], text_mask=valid
        )


def check_detr(got: EncoderOutput, want, prompt):
    assert got.memory.shape == (2, 64, 32) and got.spatial_shape == (8, 8)
    assert rel_err(got.memory, want.last_hidden_state) < TOL
    assert torch.equal(got.memory_pos, want.pos_embeds_flattened)
    assert got.prompt is prompt and torch.equal(want.text_features, prompt)
    assert want.spatial_shapes.tolist() == [list(got.spatial_shape)]


@pytest.mark.parametrize("lengths", [(3, 6), (6, 6), None])
def test_detr_encoder_text_prompt(setup, lengths):
    ref, _, detr, feats, pos = setup
    text, valid = text_prompt(lengths=lengths or (6, 6))
    valid = None if lengths is None else valid
    want = ref_detr(ref, feats, pos, text, valid)
    with torch.no_grad():
        got = detr(feats[-1], pos[-1], text, valid)
    check_detr(got, want, text)


def test_detr_encoder_text_and_geometry_prompt(setup):
    ref, geometry, detr, feats, pos = setup
    text, text_valid = text_prompt(lengths=(2, 5))
    boxes = random_boxes(2, 3, seed=11)
    labels = torch.tensor([[1, -10, -10], [1, 0, 1]])
    geo_ref, geo_ref_valid = ref_geometry(ref, boxes, labels, feats, pos)
    # The reference model's concatenation: plain cat of tokens and of masks.
    want = ref_detr(ref, feats, pos, torch.cat((text, geo_ref), 1), torch.cat((text_valid, geo_ref_valid), 1))
    with torch.no_grad():
        geo, geo_valid = geometry(boxes, labels, None, feats[-1], pos[-1])
        prompt, valid = concat_prompts(text, text_valid, geo, geo_valid)
        got = detr(feats[-1], pos[-1], prompt, valid)
    assert valid.shape == (2, 10)
    assert torch.equal(valid, torch.cat((text_valid, geo_ref_valid), 1))
    assert rel_err(got.memory, want.last_hidden_state) < TOL
    assert torch.equal(got.memory_pos, want.pos_embeds_flattened)


def test_detr_encoder_shared_image(setup):
    _, _, detr, feats, pos = setup
    text, valid = text_prompt()
    with torch.no_grad():
        want = detr(feats[-1][:1].expand(2, -1, -1, -1), pos[-1][:1].expand(2, -1, -1, -1), text, valid)
        got = detr(feats[-1][:1], encode_grid(8, 8, 16), text, valid)
        got_batch1_pos = detr(feats[-1][:1], pos[-1][:1], text, valid)
    assert rel_err(got.memory, want.memory) < 1e-5
    assert rel_err(got_batch1_pos.memory, want.memory) < 1e-5
    assert got.memory_pos.shape == got_batch1_pos.memory_pos.shape == (2, 64, 32)


def test_geometry_no_boxes(setup):
    _, geometry, _, feats, pos = setup
    with torch.no_grad():
        tokens, valid = geometry(torch.zeros(2, 0, 4), torch.zeros(2, 0, dtype=torch.long), None, feats[-1], pos[-1])
    assert tokens.shape == (2, 1, 32) and valid.all()


def test_concat_prompts_shared_text():
    text, text_valid = text_prompt(batch=1, lengths=(4,))
    geo = torch.randn(3, 2, 32)
    prompt, valid = concat_prompts(text, text_valid, geo, None)
    assert prompt.shape == (3, 8, 32) and valid.shape == (3, 8)
    assert valid[:, :6].eq(text_valid).all() and valid[:, 6:].all()
    assert concat_prompts(text, None, geo, None)[1] is None
    with pytest.raises(ValueError, match="text batch"):
        concat_prompts(torch.randn(2, 6, 32), None, geo, None)


def test_geometry_bad_inputs(setup):
    _, geometry, _, feats, pos = setup
    f, p = feats[-1], pos[-1]
    boxes, labels = random_boxes(2, 3), torch.ones(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="boxes"):
        geometry(boxes[..., :3], labels, None, f, p)
    with pytest.raises(ValueError, match="boxes"):
        geometry(boxes[0], labels, None, f, p)
    with pytest.raises(ValueError, match="box_labels"):
        geometry(boxes, labels[:, :2], None, f, p)
    with pytest.raises(ValueError, match="box_labels"):
        geometry(boxes, labels.float(), None, f, p)
    with pytest.raises(ValueError, match="box_labels"):
        geometry(boxes, labels * 2, None, f, p)
    with pytest.raises(ValueError, match="box_valid"):
        geometry(boxes, labels, torch.ones(2, 2, dtype=torch.bool), f, p)
    with pytest.raises(ValueError, match="features"):
        geometry(boxes, labels, None, f[:, :16], p)
    with pytest.raises(ValueError, match="position"):
        geometry(boxes, labels, None, f, p[..., :4])
    # Invalid boxes may carry any label.
    geometry(
        boxes, torch.tensor([[1, 5, 7], [0, -3, 1]]), torch.tensor([[True, False, False], [True, False, True]]), f, p
    )


def test_detr_encoder_bad_inputs(setup):
    _, _, detr, feats, pos = setup
    f, p = feats[-1], pos[-1]
    text, valid = text_prompt()
    with pytest.raises(ValueError, match="prompt"):
        detr(f, p, text[..., :16], valid)
    with pytest.raises(ValueError, match="prompt_valid"):
        detr(f, p, text, valid[:, :3])
    with pytest.raises(ValueError, match="features"):
        detr(torch.cat((f, f)), p, text, valid)
    with pytest.raises(ValueError, match="position"):
        detr(f, p[:, :, :4], text, valid)
