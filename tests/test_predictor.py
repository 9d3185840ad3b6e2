"""Predictor: cached image, many prompts, results equal to the transformers pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from oracles import reference_pipeline
from reference import save_reference, tiny_config_dict

import sam3lite
from sam3lite import Predictor, Processor
from sam3lite.processing.rle import rle_to_masks

PROMPTS = ["ear", "yellow school bus", "a person riding a horse on the beach", "cat"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny")
    ref = save_reference(tiny_config_dict("s0"), directory, seed=11)
    model = sam3lite.load(directory)
    image = np.random.default_rng(0).integers(0, 256, (150, 203, 3), dtype=np.uint8)
    return ref, model, image


@pytest.fixture()
def predictor(setup):
    _, model, image = setup
    pred = Predictor(model, Processor(image_size=112))
    pred.set_image(image)
    return pred


def _assert_matches(ours, theirs):
    assert len(ours) == len(theirs["scores"]) > 0
    torch.testing.assert_close(ours.scores, theirs["scores"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours.boxes, theirs["boxes"], rtol=1e-4, atol=1e-3)
    # masks: a pixel may flip where the probability sits at the threshold within float error
    disagree = (ours.masks != theirs["masks"].bool()).float().mean().item()
    assert disagree < 1e-3


@pytest.mark.parametrize("prompt", PROMPTS[:2])
def test_matches_transformers_pipeline(setup, predictor, prompt):
    ref, _, image = setup
    threshold = 0.2
    ours = predictor.predict(text=prompt, threshold=threshold)
    assert ours.masks.shape[1:] == (150, 203) and ours.masks.dtype == torch.bool
    _assert_matches(ours, reference_pipeline(ref, image, prompt, threshold))


def test_text_and_boxes_match_transformers_pipeline(setup, predictor):
    ref, _, image = setup
    boxes = [[20.0, 30.0, 120.0, 140.0]]
    ours = predictor.predict(text="dog", boxes=boxes, threshold=0.2)
    _assert_matches(ours, reference_pipeline(ref, image, "dog", 0.2, boxes=boxes))


def test_batched_prompts_equal_single_calls(predictor):
    batched = predictor.predict(text=PROMPTS, threshold=0.1)
    assert [r.prompt for r in batched] == PROMPTS
    for result in batched:
        single = predictor.predict(text=result.prompt, threshold=0.1)
        assert len(single) == len(result)
        torch.testing.assert_close(single.scores, result.scores, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(single.boxes, result.boxes, rtol=1e-5, atol=1e-4)
        assert (single.masks != result.masks).float().mean() < 1e-3


def test_small_prompt_batches_give_the_same_results(setup):
    _, model, image = setup
    one_at_a_time = Predictor(model, Processor(image_size=112), prompt_batch_size=1)
    one_at_a_time.set_image(image)
    together = Predictor(model, Processor(image_size=112), prompt_batch_size=16)
    together.set_image(image)
    singles = one_at_a_time.predict(text=PROMPTS, threshold=0.1)
    for a, b in zip(singles, together.predict(text=PROMPTS, threshold=0.1), strict=True):
        torch.testing.assert_close(a.scores, b.scores, rtol=1e-5, atol=1e-6)
    # Default: one prompt per head pass on the CPU (no faster batched there, and lighter).
    assert Predictor(model).prompt_batch_size == 1


def test_boxes_only_prompt(predictor):
    result = predictor.predict(boxes=[[10, 10, 80, 90], [100, 20, 190, 140]], box_labels=[1, 0], threshold=0.0)
    assert result.prompt == "visual"
    assert len(result) == 10  # every query of the tiny model clears threshold 0


def test_text_cache_is_bounded_and_reused(setup):
    _, model, image = setup
    pred = Predictor(model, Processor(image_size=112), text_cache_size=2)
    pred.set_image(image)
    first = pred.predict(text=PROMPTS, threshold=0.1)
    assert len(pred._text_cache) == 2
    assert list(pred._text_cache) == PROMPTS[-2:]
    again = pred.predict(text=PROMPTS[-1], threshold=0.1)
    torch.testing.assert_close(again.scores, first[-1].scores)
    uncached = Predictor(model, Processor(image_size=112), text_cache_size=0)
    uncached.set_image(image)
    torch.testing.assert_close(uncached.predict(text="cat", threshold=0.1).scores, again.scores)
    assert len(uncached._text_cache) == 0


def test_result_conversions(predictor):
    result = predictor.predict(text="ear", threshold=0.1)
    rles = result.to_rle()
    assert len(rles) == len(result) and isinstance(rles[0]["counts"], str)
    assert torch.equal(rle_to_masks(rles), result.masks)
    arrays = result.to_dict()
    assert isinstance(arrays["masks"], np.ndarray) and arrays["prompt"] == "ear"
    assert isinstance(result.to_dict("torch")["scores"], torch.Tensor)


def test_result_repr_shows_shapes_and_counts(predictor):
    result = predictor.predict(text="ear", threshold=0.0)  # every query kept
    text = repr(result)
    height, width = result.image_size
    assert text.startswith("PromptResult(prompt='ear', instances=") and f"instances={len(result)}," in text
    assert f"masks=bool[{len(result)}, {height}, {width}]" in text and f"boxes=float32[{len(result)}, 4]" in text
    assert "tensor(" not in text and "True" not in text and len(text) < 300
    assert f"{float(result.scores[0]):.2f}" in text and text.endswith(", ...])")


def test_set_image_from_path(setup, tmp_path):
    from PIL import Image

    _, model, image = setup
    Image.fromarray(image).save(tmp_path / "img.png")
    pred = Predictor(model, Processor(image_size=112))
    pred.set_image(tmp_path / "img.png")
    assert pred.image_size == (150, 203)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({}, "text, boxes"),
        ({"text": ""}, "text"),
        ({"text": []}, "text"),
        ({"text": ["cat", "  "]}, r"text\[1\]"),
        ({"text": "cat", "threshold": 1.5}, "threshold"),
        ({"text": "cat", "mask_threshold": -0.1}, "mask_threshold"),
        ({"text": "cat", "boxes": [[1, 2, 3]]}, "input_boxes"),
        ({"text": "cat", "boxes": [[10, 10, 5, 20]]}, "input_boxes"),
        ({"text": "cat", "box_labels": [1]}, "box_labels"),
    ],
)
def test_bad_prompts_raise(predictor, kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        predictor.predict(**kwargs)


def test_predict_before_set_image(setup):
    _, model, _ = setup
    with pytest.raises(RuntimeError, match="set_image"):
        Predictor(model, Processor(image_size=112)).predict(text="cat")


def test_prompt_with_nothing_kept_skips_the_mask_head(setup, predictor, monkeypatch):
    _, model, _ = setup
    calls = []
    original = type(model.mask_decoder).forward
    monkeypatch.setattr(type(model.mask_decoder), "forward", lambda *a, **k: calls.append(1) or original(*a, **k))
    kept = predictor.predict(text=PROMPTS[:2], threshold=0.0)
    assert len(calls) == 2 and all(len(r) > 0 for r in kept)
    calls.clear()
    none = predictor.predict(text=PROMPTS[:2], threshold=1.0)
    assert calls == []
    for result in none:
        assert len(result) == 0 and result.masks.shape == (0, 150, 203) and result.masks.dtype == torch.bool
        assert result.boxes.shape == (0, 4) and result.scores.shape == (0,)
