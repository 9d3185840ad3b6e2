"""Image part of the tracker (click/box/mask prompts) against transformers' ``Sam3TrackerModel`` loaded
from the same tiny ``sam3_video`` checkpoint (hub layout).

Weights: ``reference.randomize_`` gives every parameter random values (norm weights around 1, random
biases), which already makes the tiny decoder non-degenerate: masks cover 10-50% of the grid and the
logits of different prompts differ by ~10% relative, a thousand times the tolerance. The tests assert
both, so a degenerate init cannot make them pass vacuously.

No-memory embedding: SAM3's interactive predictor adds ``no_memory_embedding`` to the lowest level
of an image read without memory, and so does transformers' video model on a first frame; transformers'
``Sam3TrackerModel(pixel_values=...)`` adds it to the 0.5x neck level it then drops, so it is lost
there. We follow SAM3. The prompt tests therefore feed transformers the image embeddings SAM3 uses
(its own ViT/neck/conv_s0/conv_s1 output plus the no-memory embedding); ``test_pixel_path`` compares
the whole pixel path with that embedding zeroed on both sides.
"""

from __future__ import annotations

import copy

import pytest
import torch
from reference import rel_err

from sam3lite.modeling.tracker import Sam3Tracker, TrackerConfig

TOL = 1e-4
SIZE = 224

CASES = {
    "positive point": dict(points=[[[100.0, 80.0]]], labels=[[1]]),
    "positive and negative points": dict(points=[[[100.0, 80.0], [30.0, 150.0]]], labels=[[1, 0]]),
    "box": dict(boxes=[[40.0, 50.0, 160.0, 190.0]]),
    "box and points": dict(
        boxes=[[40.0, 50.0, 160.0, 190.0]], points=[[[100.0, 120.0], [60.0, 60.0]]], labels=[[1, 0]]
    ),
    "three objects": dict(points=[[[120.0, 100.0]], [[20.0, 200.0]], [[180.0, 30.0]]], labels=[[1], [1], [1]]),
    "three objects with boxes": dict(
        boxes=[[40.0, 50.0, 160.0, 190.0], [0.0, 0.0, 100.0, 100.0], [120.0, 10.0, 220.0, 90.0]],
        points=[[[100.0, 120.0]], [[50.0, 50.0]], [[200.0, 60.0]]],
        labels=[[1], [0], [1]],
    ),
    "padding labels": dict(points=[[[100.0, 80.0], [0.0, 0.0], [5.0, 5.0]]], labels=[[1, -10, -1]]),
}


@pytest.fixture(scope="module")
def hf(hf_image):
    return hf_image


@pytest.fixture(scope="module")
def pixels():
    return torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def features(ours, pixels):
    return ours.features(pixels)


@pytest.fixture(scope="module")
def hf_embeddings(hf, pixels):
    """The image embeddings SAM3 decodes from: conv_s0/conv_s1 levels and the lowest level + no-memory."""
    with torch.no_grad():
        levels = hf.get_image_features(pixels).fpn_hidden_states
    maps = [x.permute(1, 2, 0).reshape(1, -1, *s) for x, s in zip(levels, hf.backbone_feature_sizes, strict=False)]
    maps[-1] = maps[-1] + hf.no_memory_embedding.view(1, -1, 1, 1)
    return maps


def _tensors(case: dict) -> dict:
    out = {k: torch.tensor(v) for k, v in case.items()}
    if "points" in out:
        out["labels"] = out["labels"].long()
    return out


def _hf_inputs(prompt: dict) -> dict:
    inputs = {}
    if "points" in prompt:
        inputs["input_points"] = prompt["points"][None]
        inputs["input_labels"] = prompt["labels"][None]
    if "boxes" in prompt:
        inputs["input_boxes"] = prompt["boxes"][None]
    if "mask_input" in prompt:
        inputs["input_masks"] = prompt["mask_input"]
    return inputs


def _assert_same(ours, ref) -> None:
    assert ours.low_res_masks.shape == ref.pred_masks[0].shape
    assert rel_err(ours.low_res_masks, ref.pred_masks[0]) < TOL
    assert rel_err(ours.iou_scores, ref.iou_scores[0]) < TOL
    assert rel_err(ours.object_score_logits, ref.object_score_logits[0]) < TOL


def _assert_not_degenerate(masks: torch.Tensor) -> None:
    covered = (masks > 0).float().mean(dim=(-1, -2))
    assert bool(((covered > 0.05) & (covered < 0.95)).all()), covered


@pytest.mark.parametrize("multimask", [True, False])
@pytest.mark.parametrize("name", list(CASES))
def test_prompt_parity(ours, hf, features, hf_embeddings, name, multimask):
    prompt = _tensors(CASES[name])
    with torch.no_grad():
        out = ours.tracker.predict_masks(features, multimask_output=multimask, **prompt)
        ref = hf(image_embeddings=hf_embeddings, multimask_output=multimask, **_hf_inputs(prompt))
    _assert_same(out, ref)
    num_objects = len(CASES[name].get("points", CASES[name].get("boxes")))
    assert out.low_res_masks.shape == (num_objects, 3 if multimask else 1, 64, 64)
    assert out.object_pointer.shape == (num_objects, 128)
    _assert_not_degenerate(out.low_res_masks)


def test_prompts_give_different_answers(ours, features):
    """Guards the parity tests against a degenerate init: each prompt changes the logits far beyond TOL."""
    with torch.no_grad():
        answers = [ours.tracker.predict_masks(features, **_tensors(CASES[n])).low_res_masks[:1] for n in CASES]
    for i in range(len(answers)):
        for j in range(i):
            assert rel_err(answers[i], answers[j]) > 100 * TOL, (list(CASES)[i], list(CASES)[j])


@pytest.mark.parametrize("multimask", [True, False])
def test_mask_input_parity(ours, hf, features, hf_embeddings, multimask):
    """Refinement: feed the low-res logits of a first answer back with another click. transformers takes one
    mask per call, so each object is compared to its own reference call; ours runs them as one batch."""
    first = _tensors(CASES["three objects"])
    with torch.no_grad():
        previous = ours.tracker.predict_masks(features, multimask_output=False, **first).low_res_masks
        points = torch.cat([first["points"], torch.tensor([[[60.0, 60.0]], [[30.0, 180.0]], [[150.0, 70.0]]])], 1)
        labels = torch.tensor([[1, 0], [1, 1], [1, 0]])
        out = ours.tracker.predict_masks(features, points, labels, mask_input=previous, multimask_output=multimask)
        for i in range(3):
            prompt = {"points": points[i : i + 1], "labels": labels[i : i + 1], "mask_input": previous[i : i + 1]}
            ref = hf(image_embeddings=hf_embeddings, multimask_output=multimask, **_hf_inputs(prompt))
            assert rel_err(out.low_res_masks[i], ref.pred_masks[0, 0]) < TOL
            assert rel_err(out.iou_scores[i], ref.iou_scores[0, 0]) < TOL
            assert rel_err(out.object_score_logits[i], ref.object_score_logits[0, 0]) < TOL
    without = ours.tracker.predict_masks(features, points, labels, multimask_output=multimask)
    assert rel_err(out.low_res_masks, without.low_res_masks) > 100 * TOL  # the mask input matters


def test_mask_input_of_another_size_is_resized_like_the_reference(ours, hf, features, hf_embeddings):
    mask = (torch.rand(1, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(3)) > 0.5).float() * 8 - 4
    with torch.no_grad():
        out = ours.tracker.predict_masks(features, mask_input=mask)
        ref = hf(image_embeddings=hf_embeddings, input_masks=mask)
    _assert_same(out, ref)


def test_no_prompt_at_all(ours, hf, features, hf_embeddings):
    with torch.no_grad():
        out = ours.tracker.predict_masks(features)
        ref = hf(image_embeddings=hf_embeddings)
    _assert_same(out, ref)


@pytest.mark.parametrize("threshold", [0.0, "median"])
def test_stability_rule_both_branches(tracker_checkpoint, ours, hf, features, hf_embeddings, threshold):
    """One mask asked: the single-mask output when stable, else the best multimask output. Threshold 0 keeps
    every single-mask output; the median of the objects' stability scores mixes both branches in one batch."""
    points = torch.rand(8, 1, 2, generator=torch.Generator().manual_seed(5)) * SIZE
    labels = torch.ones(8, 1, dtype=torch.long)
    with torch.no_grad():
        multi = ours.tracker.predict_masks(features, points, labels, multimask_output=True)
    data = copy.deepcopy(tracker_checkpoint.config["tracker_config"])
    if threshold == "median":
        single = _single_token_masks(ours.tracker, features, points, labels).flatten(1)
        delta = data["mask_decoder_config"]["dynamic_multimask_stability_delta"]
        stability = (single > delta).sum(-1).float() / (single > -delta).sum(-1).float()
        threshold = float(stability.median())
    data["mask_decoder_config"]["dynamic_multimask_stability_thresh"] = threshold
    tracker = Sam3Tracker(TrackerConfig.from_dict(data)).eval()
    tracker.load_state_dict(ours.tracker.state_dict())
    saved = hf.mask_decoder.dynamic_multimask_stability_thresh
    hf.mask_decoder.dynamic_multimask_stability_thresh = threshold
    try:
        with torch.no_grad():
            out = tracker.predict_masks(features, points, labels, multimask_output=False)
            ref = hf(
                image_embeddings=hf_embeddings,
                input_points=points[None],
                input_labels=labels[None],
                multimask_output=False,
            )
    finally:
        hf.mask_decoder.dynamic_multimask_stability_thresh = saved
    _assert_same(out, ref)
    from_multi = (out.iou_scores[:, :1] == multi.iou_scores).any(dim=1)
    if threshold == 0.0:
        assert not bool(from_multi.any())
    else:
        assert 0 < int(from_multi.sum()) < 8


def _single_token_masks(tracker, features, points, labels) -> torch.Tensor:
    """Mask logits of output token 0 (the single-mask output) for each prompt: [B, 4h, 4w]."""
    cfg = copy.deepcopy(tracker.config.to_dict())
    cfg["mask_decoder_config"]["dynamic_multimask_via_stability"] = False
    plain = Sam3Tracker(TrackerConfig.from_dict(cfg)).eval()
    plain.load_state_dict(tracker.state_dict())
    with torch.no_grad():
        return plain.predict_masks(features, points, labels, multimask_output=False).low_res_masks[:, 0]


def test_pixel_path(ours, hf, pixels):
    """ViT -> tracker neck -> conv_s0/s1 -> decoder from pixels, against ``Sam3TrackerModel(pixel_values)``,
    with the no-memory embedding zeroed on both sides (transformers' image model drops it, see above)."""
    prompt = _tensors(CASES["three objects with boxes"])
    saved = (ours.tracker.no_memory_embedding.clone(), hf.no_memory_embedding.clone())
    try:
        with torch.no_grad():
            ours.tracker.no_memory_embedding.zero_()
            hf.no_memory_embedding.zero_()
            out = ours.tracker.predict_masks(ours.features(pixels), **prompt)
            ref = hf(pixel_values=pixels, **_hf_inputs(prompt))
    finally:
        with torch.no_grad():
            ours.tracker.no_memory_embedding.copy_(saved[0])
            hf.no_memory_embedding.copy_(saved[1])
    _assert_same(out, ref)


def test_one_image_is_shared_not_copied(ours, features):
    """B objects on one image: per-image tensors keep batch 1 (broadcast) and answers equal per-object calls."""
    assert features.image_embedding.shape[0] == 1 and features.high_res_features[0].shape[0] == 1
    prompt = _tensors(CASES["three objects with boxes"])
    with torch.no_grad():
        batched = ours.tracker.predict_masks(features, **prompt)
        for i in range(3):
            single = ours.tracker.predict_masks(features, **{k: v[i : i + 1] for k, v in prompt.items()})
            assert rel_err(batched.low_res_masks[i], single.low_res_masks[0]) < 1e-5
            assert rel_err(batched.object_pointer[i], single.object_pointer[0]) < 1e-5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(points=torch.zeros(1, 2)), "labels"),
        (dict(points=torch.zeros(1, 1, 3), labels=torch.ones(1, 1, dtype=torch.long)), "points"),
        (dict(points=torch.zeros(2, 1, 2), labels=torch.ones(2, 2, dtype=torch.long)), "labels"),
        (dict(labels=torch.ones(1, 1, dtype=torch.long)), "labels"),
        (dict(boxes=torch.zeros(1, 2, 4)), "boxes"),
        (dict(mask_input=torch.zeros(1, 64, 64)), "mask_input"),
        (
            dict(boxes=torch.zeros(2, 4), points=torch.zeros(3, 1, 2), labels=torch.ones(3, 1, dtype=torch.long)),
            "number",
        ),
    ],
)
def test_bad_prompt_shapes_are_clear_errors(ours, features, kwargs, message):
    with pytest.raises(ValueError, match=message):
        ours.tracker.predict_masks(features, **kwargs)


def test_bad_neck_levels_are_a_clear_error(ours, pixels):
    with torch.no_grad():
        levels, _ = ours.neck(ours.vit(pixels).permute(0, 3, 1, 2))
    with pytest.raises(ValueError, match="neck_levels"):
        ours.tracker.prepare_image(levels[:2])


def test_box_as_corner_points_equals_box(ours, features):
    """The video path passes a box as two points labelled 2 and 3 (then the padding point): same tokens, same answer."""
    box = torch.tensor([[40.0, 50.0, 160.0, 190.0]])
    with torch.no_grad():
        as_box = ours.tracker.predict_masks(features, boxes=box, multimask_output=False)
        as_points = ours.tracker.predict_masks(
            features, points=box.view(1, 2, 2), labels=torch.tensor([[2, 3]]), multimask_output=False
        )
    assert torch.equal(as_box.low_res_masks, as_points.low_res_masks)
