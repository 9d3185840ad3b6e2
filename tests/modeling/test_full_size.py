"""The full-size S0 detector (real dimensions, random weights) against the reference."""

from __future__ import annotations

import torch
from reference import randomize_, rel_err, text_inputs

import sam3lite
from sam3lite.checkpoints import load_state_dict_strict, skip_weight_init

S0_TEXT = {"num_hidden_layers": 6, "max_position_embeddings": 16, "use_repmixer_blocks": True}


def test_full_size_s0_matches_reference():
    from transformers import Sam3LiteTextConfig, Sam3LiteTextModel

    torch.manual_seed(0)
    ref = randomize_(Sam3LiteTextModel(Sam3LiteTextConfig(text_config=S0_TEXT)), seed=0).eval()
    config = sam3lite.Sam3LiteTextConfig.from_dict(ref.config.to_dict())
    assert config.to_dict()["text_config"]["num_hidden_layers"] == 6
    with skip_weight_init():
        ours = sam3lite.Sam3LiteTextModel(config)
    load_state_dict_strict(ours, ref.state_dict())
    ours.eval()

    pixels = torch.randn(1, 3, 1008, 1008, generator=torch.Generator().manual_seed(0))
    ids, mask = text_inputs(1, lengths=[7])
    boxes = torch.tensor([[[0.4, 0.5, 0.3, 0.2]]])
    with torch.no_grad():
        expected = ref(pixel_values=pixels, input_ids=ids, attention_mask=mask, input_boxes=boxes)
        got = ours(pixel_values=pixels, input_ids=ids, attention_mask=mask, input_boxes=boxes)
    assert got.pred_masks.shape == (1, 200, 288, 288)
    for name in ("pred_masks", "pred_boxes", "pred_logits", "presence_logits", "semantic_seg"):
        err = rel_err(getattr(got, name), getattr(expected, name))
        assert err < 1e-4, f"{name}: {err:.2e}"
