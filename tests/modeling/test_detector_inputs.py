"""Bad input to the model raises a ValueError naming the argument."""

from __future__ import annotations

import pytest
import torch
from reference import text_inputs, tiny_config_dict

import sam3lite


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return sam3lite.Sam3LiteTextModel(sam3lite.Sam3LiteTextConfig.from_dict(tiny_config_dict("s0"))).eval()


def _call(model, **kwargs):
    ids, mask = text_inputs(1, lengths=[5])
    pixels = torch.randn(1, 3, 112, 112, generator=torch.Generator().manual_seed(0))
    inputs = {"pixel_values": pixels, "input_ids": ids, "attention_mask": mask, **kwargs}
    with torch.no_grad():
        return model(**inputs)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"pixel_values": torch.randn(3, 112, 112)}, "pixel_values"),
        ({"pixel_values": torch.randn(1, 3, 100, 112)}, "pixel_values"),
        ({"pixel_values": torch.zeros(1, 3, 112, 112, dtype=torch.uint8)}, "pixel_values"),
        ({"input_ids": torch.zeros(5, dtype=torch.long)}, "input_ids"),
        ({"input_ids": torch.zeros(1, 32)}, "input_ids"),
        ({"input_ids": torch.full((1, 32), 10**6)}, "input_ids"),
        ({"attention_mask": torch.ones(1, 7)}, "attention_mask"),
        ({"input_boxes": torch.rand(1, 2)}, "input_boxes"),
        ({"input_boxes": torch.rand(1, 2, 3)}, "input_boxes"),
        ({"input_boxes": torch.tensor([[[0.5, 0.5, 1.5, 0.2]]])}, "input_boxes"),
        ({"input_boxes": torch.tensor([[[-0.1, 0.5, 0.2, 0.2]]])}, "input_boxes"),
        ({"input_boxes": torch.tensor([[[float("nan"), 0.5, 0.2, 0.2]]])}, "input_boxes"),
        ({"input_boxes": torch.rand(1, 2, 4), "input_boxes_labels": torch.ones(1, 3)}, "input_boxes_labels"),
        ({"input_boxes": torch.rand(1, 1, 4), "input_boxes_labels": torch.tensor([[2]])}, "input_boxes_labels"),
        ({"pixel_values": torch.randn(2, 3, 112, 112), "input_boxes": torch.rand(3, 1, 4)}, "batch"),
    ],
)
def test_bad_input_names_the_argument(model, kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        _call(model, **kwargs)


def test_mismatched_image_and_prompt_batches(model):
    ids, mask = text_inputs(3, lengths=[4, 5, 6])
    with pytest.raises(ValueError, match="batch"), torch.no_grad():
        model(pixel_values=torch.randn(2, 3, 112, 112), input_ids=ids, attention_mask=mask)


def test_exactly_one_source_per_modality(model):
    ids, mask = text_inputs(1, lengths=[4])
    with pytest.raises(ValueError, match="pixel_values or vision_embeds"):
        model(input_ids=ids, attention_mask=mask)
    with pytest.raises(ValueError, match="input_ids or text_embeds"):
        model(pixel_values=torch.randn(1, 3, 112, 112))
    with pytest.raises(ValueError, match="text_embeds"), torch.no_grad():
        model(pixel_values=torch.randn(1, 3, 112, 112), text_embeds=torch.randn(1, 32, 7))


def test_padded_boxes_may_hold_any_value(model):
    """Padding entries (label -10) are ignored, whatever their coordinates."""
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2], [-5.0, 9.0, 0.0, 0.0]]])
    labels = torch.tensor([[1, -10]])
    out = _call(model, input_boxes=boxes, input_boxes_labels=labels)
    ref = _call(model, input_boxes=boxes[:, :1], input_boxes_labels=labels[:, :1])
    torch.testing.assert_close(out.pred_logits, ref.pred_logits)
