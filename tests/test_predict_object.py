"""``Predictor.predict_object``: clicks, object boxes and masks through SAM3's tracker head, on the image
encoding ``set_image`` made, against transformers' ``Sam3TrackerModel`` + ``Sam3TrackerProcessor`` on
the same files (tiny ``sam3_video`` checkpoints in facebook/sam3's hub layout).

transformers' ``Sam3TrackerModel(pixel_values=...)`` drops SAM3's no-memory embedding (see
tests/modeling/tracker/test_tracker_image_parity.py), so the reference is fed the image embeddings SAM3
decodes from: its own ViT / neck output with that embedding added.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from reference import rel_err, save_reference, save_video_reference, text_inputs, tiny_video_config_dict

import sam3lite

TOL = 1e-4
IMAGE = np.random.default_rng(0).integers(0, 256, (150, 203, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def video_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("sam3_video")
    save_video_reference(tiny_video_config_dict("sam3"), directory, seed=0)
    return directory


@pytest.fixture(scope="module")
def predictor(video_dir):
    predictor = sam3lite.Predictor(sam3lite.load(video_dir))
    predictor.set_image(IMAGE)
    return predictor


def reference(directory):
    """(transformers Sam3TrackerModel, its processor at the tiny image size)."""
    from transformers import Sam3ImageProcessor, Sam3TrackerModel, Sam3TrackerProcessor

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = Sam3TrackerModel.from_pretrained(directory).eval()
    return model, Sam3TrackerProcessor(Sam3ImageProcessor(size={"height": 224, "width": 224}), target_size=224)


@pytest.fixture(scope="module")
def hf(video_dir):
    return reference(video_dir)


def run_reference(hf, image, multimask=True, **prompt):
    """The reference pipeline on one image: processor -> model on SAM3's embeddings -> post_process_masks."""
    model, processor = hf
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        inputs = processor(images=image, return_tensors="pt", **{k: v for k, v in prompt.items() if k != "input_masks"})
    with torch.no_grad():
        levels = model.get_image_features(inputs["pixel_values"]).fpn_hidden_states
        maps = [
            x.permute(1, 2, 0).reshape(1, -1, *s) for x, s in zip(levels, model.backbone_feature_sizes, strict=False)
        ]
        maps[-1] = maps[-1] + model.no_memory_embedding.view(1, -1, 1, 1)
        extra = {"input_masks": prompt["input_masks"]} if "input_masks" in prompt else {}
        keys = ("input_points", "input_labels", "input_boxes")
        out = model(
            image_embeddings=maps, multimask_output=multimask, **{k: inputs[k] for k in keys if k in inputs}, **extra
        )
    masks = processor.post_process_masks(out.pred_masks, inputs["original_sizes"])[0]
    return out, masks


def assert_same(ours, out, masks, index=0):
    assert rel_err(ours.low_res_logits, out.pred_masks[0, index]) < TOL
    assert rel_err(ours.iou_scores, out.iou_scores[0, index]) < TOL
    assert abs(ours.object_score_logit - float(out.object_score_logits[0, index])) <= TOL * max(
        1.0, abs(ours.object_score_logit)
    )
    agree = (ours.masks == masks[index]).float().mean().item()
    assert agree > 0.999, agree
    covered = ours.masks.float().mean().item()
    assert 0.01 < covered < 0.99  # not a degenerate answer


CASES = {
    "positive point": dict(points=[[120, 40]], point_labels=[1]),
    "positive and negative points": dict(points=[[120, 40], [20, 130]], point_labels=[1, 0]),
    "box": dict(box=[30, 20, 170, 120]),
    "box and points": dict(box=[30, 20, 170, 120], points=[[90, 70], [40, 30]], point_labels=[1, 0]),
}


def hf_prompt(case: dict) -> dict:
    out = {}
    if "points" in case:
        out["input_points"] = [[[list(map(float, p)) for p in case["points"]]]]
        out["input_labels"] = [[case["point_labels"]]]
    if "box" in case:
        out["input_boxes"] = [[list(map(float, case["box"]))]]
    return out


@pytest.mark.parametrize("multimask", [True, False])
@pytest.mark.parametrize("name", list(CASES))
def test_matches_the_reference_pipeline(predictor, hf, name, multimask):
    ours = predictor.predict_object(**CASES[name], multimask_output=multimask)
    assert ours.masks.shape == (3 if multimask else 1, 150, 203) and ours.masks.dtype == torch.bool
    assert_same(ours, *run_reference(hf, IMAGE, multimask, **hf_prompt(CASES[name])))


def test_several_objects_in_one_call_equal_one_call_each(predictor, hf):
    cases = [CASES["positive point"], CASES["box"], dict(points=[[60, 100]], point_labels=[1])]
    batched = predictor.predict_object(
        points=[[[120, 40]], [[60, 100]]], point_labels=[[1], [1]], multimask_output=False
    )
    assert isinstance(batched, list) and len(batched) == 2
    for ours, case in zip(batched, [cases[0], cases[2]], strict=True):
        assert_same(ours, *run_reference(hf, IMAGE, False, **hf_prompt(case)))
    boxes = predictor.predict_object(box=[[30, 20, 170, 120], [100, 60, 200, 140]])
    single = predictor.predict_object(box=[100, 60, 200, 140])
    assert torch.allclose(boxes[1].low_res_logits, single.low_res_logits, atol=1e-5)
    ragged = predictor.predict_object(points=[[[120, 40]], [[120, 40], [20, 130]]], point_labels=[[1], [1, 0]])
    two = predictor.predict_object(**CASES["positive and negative points"])
    assert torch.allclose(ragged[1].low_res_logits, two.low_res_logits, atol=1e-5)


def test_mask_input_refines(predictor, hf):
    first = predictor.predict_object(points=[[120, 40]], point_labels=[1])
    mask = first.low_res_logits[first.best]
    ours = predictor.predict_object(points=[[120, 40], [20, 130]], point_labels=[1, 0], mask_input=mask)
    prompt = {**hf_prompt(CASES["positive and negative points"]), "input_masks": mask[None, None]}
    assert_same(ours, *run_reference(hf, IMAGE, True, **prompt))
    without = predictor.predict_object(points=[[120, 40], [20, 130]], point_labels=[1, 0])
    assert rel_err(ours.low_res_logits, without.low_res_logits) > 1e-2


def test_text_and_clicks_share_one_image_encoding(video_dir):
    model = sam3lite.load(video_dir)
    calls = []
    model.vision_encoder.backbone.register_forward_hook(lambda *args: calls.append(1))
    predictor = sam3lite.Predictor(model)
    predictor.set_image(IMAGE)
    predictor.predict(text=["ear", "dog"], threshold=0.0)
    for x in (20, 60, 100):
        predictor.predict_object(points=[[x, 50]], point_labels=[1])
    assert len(calls) == 1


def test_litetext_detector_with_sam3_tracker(tmp_path):
    """``load(litetext, tracker=sam3)``: the LiteText detector's ViT feeds SAM3's tracker. The reference is
    transformers fed the same weights: SAM3's file with its ViT replaced by the LiteText one."""
    from safetensors.torch import load_file, save_file

    config = tiny_video_config_dict("s0")
    lite = save_reference(config["detector_config"], tmp_path / "lite", seed=11)
    save_video_reference(tiny_video_config_dict("sam3"), tmp_path / "sam3", seed=12)
    model = sam3lite.load(tmp_path / "lite", tracker=tmp_path / "sam3")
    assert model.has_tracker and model.config.model_type == "sam3_lite_text"
    # detector: unchanged LiteText outputs
    ids, mask = text_inputs(1, lengths=[5])
    pixels = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert rel_err(model(pixel_values=pixels, input_ids=ids, attention_mask=mask).pred_logits,
                       lite(pixel_values=pixels, input_ids=ids, attention_mask=mask).pred_logits) < TOL  # fmt: skip
    # tracker: against transformers on SAM3's file with the LiteText ViT
    state = load_file(str(tmp_path / "sam3" / "model.safetensors"))
    for key, value in lite.state_dict().items():
        if key.startswith("vision_encoder.backbone."):
            state["detector_model." + key] = value.contiguous()
    (tmp_path / "combined").mkdir()
    save_file(state, str(tmp_path / "combined" / "model.safetensors"))
    (tmp_path / "combined" / "config.json").write_text((tmp_path / "sam3" / "config.json").read_text())
    predictor = sam3lite.Predictor(model)
    predictor.set_image(IMAGE)
    ours = predictor.predict_object(**CASES["box and points"])
    assert_same(
        ours, *run_reference(reference(tmp_path / "combined"), IMAGE, True, **hf_prompt(CASES["box and points"]))
    )
    # saved in facebook/sam3's layout; transformers and sam3lite read it back
    model.save_pretrained(tmp_path / "saved")
    again = sam3lite.Predictor(sam3lite.load(tmp_path / "saved"))
    again.set_image(IMAGE)
    assert torch.equal(again.predict_object(**CASES["box and points"]).low_res_logits, ours.low_res_logits)
    from transformers import Sam3VideoModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, info = Sam3VideoModel.from_pretrained(tmp_path / "saved", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]


def test_tracker_false_loads_the_detector_only(video_dir):
    model = sam3lite.load(video_dir, tracker=False)
    assert not model.has_tracker


def test_a_model_without_tracker_says_how_to_add_one(tmp_path):
    save_reference(tiny_video_config_dict("s0")["detector_config"], tmp_path, seed=1)
    predictor = sam3lite.Predictor(sam3lite.load(tmp_path))
    predictor.set_image(IMAGE)
    with pytest.raises(ValueError, match="tracker='sam3'"):
        predictor.predict_object(points=[[10, 10]], point_labels=[1])
    with pytest.raises(sam3lite.CheckpointError, match="holds no SAM3 tracker"):
        sam3lite.load(tmp_path, tracker=tmp_path)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(points=[[300, 10]], point_labels=[1]), "points must lie inside"),
        (dict(points=[[-1, 10]], point_labels=[1]), "points must lie inside"),
        (dict(points=[[10, 10]], point_labels=[2]), "point_labels must be 1"),
        (dict(points=[[10, 10]]), "points and point_labels go together"),
        (dict(point_labels=[1]), "points and point_labels go together"),
        (dict(points=[[10, 10], [20, 20]], point_labels=[1]), "one label per point"),
        (dict(points=[10, 10], point_labels=[1]), "points must be"),
        (dict(box=[100, 50, 40, 120]), "x1 > x0"),
        (dict(box=[10, 10, 20]), "box must be"),
        (dict(box=[300, 200, 400, 300]), "outside"),
        (dict(mask_input=np.zeros((10, 10))), "mask_input must be 64x64"),
        (dict(points=[[[10, 10]], [[20, 20]]], point_labels=[[1], [1]], box=[[0, 0, 5, 5]]), "different numbers"),
        (dict(points=[[float("nan"), 10]], point_labels=[1]), "NaN"),
        ({}, "needs points"),
    ],
)
def test_bad_input_names_the_argument(predictor, kwargs, match):
    with pytest.raises(ValueError, match=match):
        predictor.predict_object(**kwargs)


def test_needs_an_image_first(video_dir):
    with pytest.raises(RuntimeError, match="set_image"):
        sam3lite.Predictor(sam3lite.load(video_dir)).predict_object(points=[[1, 1]], point_labels=[1])


def test_result_repr_and_rle(predictor):
    result = predictor.predict_object(points=[[120, 40]], point_labels=[1])
    text = repr(result)
    assert "3 masks of 150x203" in text and "tensor" not in text
    rles = result.to_rle()
    assert len(rles) == 3 and rles[0]["size"] == [150, 203]
