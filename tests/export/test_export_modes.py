"""Exports of a model in ``original`` text mode and with SAM3's tracker.

One tiny tracker-sized checkpoint (LiteText S0 student + tracker), loaded in ``original`` text mode and
exported once: the manifest carries the text mode (pad id 0, the position table's context length,
``ids != 0`` padding), ``OnnxPredictor`` tokenizes as ``Predictor`` does in that mode and returns its
detections, and the image encoder also outputs the ViT tokens the tracker's neck reads.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from reference import rel_err, save_video_reference, tiny_video_config_dict

import sam3lite
from sam3lite.export import to_onnx
from sam3lite.onnx import ManifestError, OnnxPredictor

TOL = 1e-4
IMAGE = np.random.default_rng(3).integers(0, 256, (150, 203, 3), dtype=np.uint8)
# A "!" (id 0 in original mode's padding) and HTML entities: original mode cleans and masks differently.
PROMPTS = ["cat", "fish &amp; chips", "a dog!", "yellow school bus"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(the PyTorch model in original text mode, with a tracker; its export folder)."""
    root = tmp_path_factory.mktemp("onnx_modes")
    save_video_reference(tiny_video_config_dict("s0"), root / "ckpt", seed=4)
    model = sam3lite.load(root / "ckpt", text_mode="original")
    assert model.has_tracker and model.text_mode == "original"
    to_onnx(model, root / "export")
    return model, root / "export"


@pytest.fixture(scope="module")
def predictors(exported):
    model, out = exported
    onnx_predictor = OnnxPredictor(out, providers=["CPUExecutionProvider"])
    torch_predictor = sam3lite.Predictor(model)
    for predictor in (onnx_predictor, torch_predictor):
        predictor.set_image(IMAGE)
    return onnx_predictor, torch_predictor


def test_manifest_carries_the_text_mode(exported):
    model, out = exported
    text = json.loads((out / "sam3lite_onnx.json").read_text())["text"]
    assert text["text_mode"] == "original" and text["pad_id"] == 0
    assert text["context_length"] == model.config.text_context_length == 16  # the position table, not 32
    assert "!= 0" in text["attention_mask"] and "unescape" in text["cleaning"]


def test_tokens_and_text_features_equal_pytorch(exported, predictors):
    model, _ = exported
    onnx_predictor, torch_predictor = predictors
    tokens, mask = onnx_predictor.text_features(PROMPTS)
    ids, expected_mask = torch_predictor.processor.tokenizer(PROMPTS)
    assert (ids == 0).any() and np.array_equal(mask, expected_mask.numpy())  # padding 0, mask ids != 0
    with torch.inference_mode():
        expected = model.get_text_features(ids, expected_mask).pooler_output
    assert rel_err(torch.from_numpy(tokens), expected) < TOL


def test_results_equal_the_pytorch_predictor(predictors):
    onnx_predictor, torch_predictor = predictors
    ours_all = onnx_predictor.predict(text=PROMPTS, threshold=0.0)
    for ours, theirs in zip(ours_all, torch_predictor.predict(text=PROMPTS, threshold=0.0), strict=True):
        assert ours.prompt == theirs.prompt and len(ours) == len(theirs) > 0
        np.testing.assert_allclose(ours.scores, theirs.scores.numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(ours.boxes, theirs.boxes.numpy(), rtol=1e-4, atol=1e-3)


def test_image_encoder_outputs_the_vit_tokens_for_the_tracker(exported, predictors):
    model, out = exported
    onnx_predictor, torch_predictor = predictors
    outputs = json.loads((out / "sam3lite_onnx.json").read_text())["graphs"]["image_encoder"]["outputs"]
    assert [o["name"] for o in outputs] == ["fpn_0", "fpn_1", "fpn_2", "vit_output"]
    grid = model.config.vision_config.backbone_config.grid_size
    width = model.config.vision_config.backbone_config.hidden_size
    assert outputs[3]["shape"] == ["batch", grid * grid, width]
    features = onnx_predictor.image_features
    vision = torch_predictor._vision
    assert rel_err(torch.from_numpy(features["vit_output"]), vision.last_hidden_state) < TOL
    # The tracker's neck on the exported ViT tokens gives the features Predictor's tracker uses.
    tokens = torch.from_numpy(features["vit_output"])
    with torch.inference_mode():
        ours = model.get_tracker_features(type(vision)(vision.fpn_hidden_states, vision.fpn_position_encoding, tokens))
        theirs = torch_predictor.tracker_features()
    assert rel_err(ours.image_embedding, theirs.image_embedding) < TOL
    assert rel_err(ours.high_res_features[0], theirs.high_res_features[0]) < TOL


def test_a_manifest_whose_pad_id_contradicts_its_text_mode_is_refused(exported, tmp_path):
    _, out = exported
    for path in out.iterdir():
        (tmp_path / path.name).symlink_to(path)
    data = json.loads((out / "sam3lite_onnx.json").read_text())
    data["text"]["pad_id"] = 49407
    (tmp_path / "sam3lite_onnx.json").unlink()
    (tmp_path / "sam3lite_onnx.json").write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="pad_id 49407 does not match text mode 'original'"):
        OnnxPredictor(tmp_path)
