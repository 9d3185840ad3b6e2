"""SAM3's tracker in original ``.pt`` files (facebookresearch/sam3's sam3.pt, EfficientSAM3 LiteText files):
``tracker.*`` and ``sam2_convs.*`` are converted on load. The files are made from a tiny transformers
``Sam3VideoModel``: its detector through original_layout.to_original, its tracker through the hand-written
inverse in original_tracker_layout; the same model saved in the ``sam3_video`` layout is the reference."""

from __future__ import annotations

import copy
import json
import warnings

import numpy as np
import pytest
import torch
from original_layout import to_original
from original_tracker_layout import tracker_to_original
from reference import hf_video_model, rel_err, save_reference, tiny_video_config_dict

import sam3lite
from sam3lite.checkpoints import CheckpointError, read_contents
from sam3lite.checkpoints.convert import convert_original_state_dict
from sam3lite.checkpoints.convert_tracker import convert_original_tracker
from sam3lite.modeling.config import Sam3LiteTextConfig
from sam3lite.modeling.tracker import Sam3Tracker
from sam3lite.modeling.tracker.config import TrackerConfig
from sam3lite.modeling.vision import VisionNeck

IMAGE = np.random.default_rng(1).integers(0, 256, (150, 203, 3), dtype=np.uint8)
PROMPTS = [
    dict(points=[[120, 40]], point_labels=[1]),
    dict(box=[30, 20, 170, 120], points=[[90, 70], [40, 30]], point_labels=[1, 0], multimask_output=False),
]


def _reference(config: dict, seed: int):
    """A transformers Sam3VideoModel whose two random-Fourier copies are one matrix, as in facebook/sam3's
    hub file (transformers' converter writes the original's single matrix to both)."""
    model = hf_video_model(config, seed)
    tracker = model.tracker_model
    with torch.no_grad():
        tracker.shared_image_embedding.positional_embedding.copy_(
            tracker.prompt_encoder.shared_embedding.positional_embedding
        )
    return model


def _original(model) -> dict[str, torch.Tensor]:
    """The model's state dict as an original file holds it: detector in SAM3's names, tracker, sam2_convs."""
    state = model.state_dict()
    detector = {k.removeprefix("detector_model."): v for k, v in state.items() if k.startswith("detector_model.")}
    return {**to_original(detector, "s0"), **tracker_to_original(state)}


def _write_pt(directory, original, config: dict | None):
    directory.mkdir(parents=True, exist_ok=True)
    torch.save({"model": original}, directory / "model.pt")
    if config is not None:
        (directory / "config.json").write_text(json.dumps(config))
    return directory / "model.pt"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """(reference model, its sam3_video directory, the original .pt with a sam3_video config.json beside it)."""
    root = tmp_path_factory.mktemp("original_tracker")
    config = tiny_video_config_dict("s0")
    ref = _reference(config, seed=4)
    ref.save_pretrained(root / "hf")
    pt = _write_pt(root / "pt", _original(ref), json.loads((root / "hf" / "config.json").read_text()))
    return ref, root / "hf", pt


def _answers(model) -> list:
    predictor = sam3lite.Predictor(model)
    predictor.set_image(IMAGE)
    return [predictor.predict_object(**prompt) for prompt in PROMPTS]


def _assert_same_answers(ours, theirs):
    for a, b in zip(_answers(ours), _answers(theirs), strict=True):
        assert b.low_res_logits.std() > 0  # a non-constant answer
        assert rel_err(a.low_res_logits, b.low_res_logits) < 1e-6
        assert rel_err(a.iou_scores, b.iou_scores) < 1e-6
        assert abs(a.object_score_logit - b.object_score_logit) < 1e-5
        assert torch.equal(a.masks, b.masks)


def test_tracker_tensors_equal_the_reference(files):
    ref, _, pt = files
    model = sam3lite.load(pt)
    assert model.has_tracker
    expected = {k.replace("tracker_model.tracker_model.", "tracker_model.", 1): v for k, v in ref.state_dict().items()}
    for prefix, module in (("tracker_model.", model.tracker_model), ("tracker_neck.", model.tracker_neck)):
        state = module.state_dict()
        assert set(state) == {k.removeprefix(prefix) for k in expected if k.startswith(prefix)}
        for key, tensor in state.items():
            assert torch.equal(tensor, expected[prefix + key]), key
    assert model.video_config.low_res_mask_size == 64  # the sibling sam3_video config's settings are kept


def test_predict_object_equals_the_hf_files(files):
    _, hf_dir, pt = files
    _assert_same_answers(sam3lite.load(pt), sam3lite.load(hf_dir))


def test_litetext_detector_with_the_tracker_of_an_original_file(files, tmp_path):
    _, hf_dir, pt = files
    save_reference(tiny_video_config_dict("s0")["detector_config"], tmp_path / "lite", seed=9)
    model = sam3lite.load(tmp_path / "lite", tracker=pt)
    assert model.has_tracker
    _assert_same_answers(model, sam3lite.load(tmp_path / "lite", tracker=hf_dir))


def test_config_inferred_from_shapes(tmp_path):
    """Without a tracker_config beside the file the tracker's numbers come from shapes and the rest from the
    full-size defaults; a tracker built with those defaults (8 decoder heads, 1 memory head) is exact."""
    config = tiny_video_config_dict("s0")
    config["tracker_config"]["mask_decoder_config"]["num_attention_heads"] = 8
    ref = _reference(config, seed=6)
    ref.save_pretrained(tmp_path / "hf")
    pt = _write_pt(tmp_path / "pt", _original(ref), config["detector_config"])  # a detector-only config.json
    contents = read_contents(pt)
    assert TrackerConfig.from_dict(contents.tracker_config) == TrackerConfig.from_dict(config["tracker_config"])
    assert contents.video_config is None
    _assert_same_answers(sam3lite.load(pt), sam3lite.load(tmp_path / "hf"))


def test_full_size_shapes_give_the_full_size_config():
    """The released trackers: shapes of a full-size SAM3 tracker (meta tensors) infer exactly SAM3's config;
    309 tracker + 22 neck tensors, as EfficientSAM3 counts them (stage3/experiment.md: 359 with the 28 of
    the segmentation head)."""
    detector = Sam3LiteTextConfig()
    with torch.device("meta"):
        tracker, neck = Sam3Tracker(TrackerConfig()), VisionNeck(detector.vision_config)
    state = {f"tracker_model.{k}": v for k, v in tracker.state_dict().items()}
    state |= {f"tracker_neck.{k}": v for k, v in neck.state_dict().items()}
    state["tracker_model.shared_image_embedding.positional_embedding"] = state[
        "tracker_model.prompt_encoder.shared_embedding.positional_embedding"
    ]
    original = tracker_to_original(state)
    parts = {p: {k: v for k, v in original.items() if k.startswith(p)} for p in ("tracker.", "detector.")}
    assert (len(parts["tracker."]), len(parts["detector."])) == (309, 22)
    converted = convert_original_tracker(parts["tracker."], parts["detector."], detector)
    assert converted.config == TrackerConfig().to_dict()
    assert set(converted.tracker) == set(tracker.state_dict()) and set(converted.neck) == set(neck.state_dict())


def test_an_unknown_tracker_key_is_named(files, tmp_path):
    ref, _, pt = files
    original = torch.load(pt, weights_only=True)["model"]
    original["tracker.sam_mask_decoder.bogus_head.weight"] = torch.zeros(3)
    bad = _write_pt(tmp_path / "bad", original, json.loads((pt.parent / "config.json").read_text()))
    with pytest.raises(CheckpointError, match=r"tracker\.sam_mask_decoder\.bogus_head\.weight.*tracker=False"):
        sam3lite.load(bad)
    with pytest.raises(CheckpointError, match=r"tracker\.sam_mask_decoder\.bogus_head\.weight"):
        sam3lite.load(pt, tracker=bad)
    with pytest.warns(UserWarning, match=r"not loaded: tracker: 280 tensors, not converted"):
        model = sam3lite.load(bad, tracker=False)
    assert not model.has_tracker


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda sd: sd.pop("tracker.no_obj_ptr"), r"missing: tracker_model\.no_object_pointer"),
        (
            lambda sd: sd.__setitem__("tracker.maskmem_tpos_enc", torch.zeros(5, 1, 1, 64)),
            r"tracker_model\.memory_temporal_positional_encoding \(from tracker\.maskmem_tpos_enc\): "
            r"file \(5, 1, 1, 64\)",
        ),
        (lambda sd: [sd.pop(k) for k in list(sd) if ".sam2_convs." in k], "not the tracker's FPN neck"),
    ],
    ids=["missing", "shape", "no-neck"],
)
def test_a_tracker_that_does_not_fit_is_named(files, tmp_path, change, match):
    _, _, pt = files
    original = torch.load(pt, weights_only=True)["model"]
    change(original)
    bad = _write_pt(tmp_path / "bad", original, json.loads((pt.parent / "config.json").read_text()))
    with pytest.raises(CheckpointError, match=match):
        sam3lite.load(bad)


def test_detector_conversion_leaves_the_tracker_out(files):
    ref, _, _ = files
    original = _original(ref)
    with_tracker = convert_original_state_dict(original)
    detector_only = {k: v for k, v in original.items() if not k.startswith("tracker.") and ".sam2_convs." not in k}
    assert set(with_tracker) == set(convert_original_state_dict(detector_only))


def test_info_reports_the_converted_tracker(files, tmp_path, capsys):
    from sam3lite.cli import main

    ref, _, pt = files
    assert main(["info", str(pt), "--json"]) == 0
    tracker = json.loads(capsys.readouterr().out)["checkpoint"]["tracker"]
    expected = sum(v.numel() for k, v in ref.state_dict().items() if k.startswith(("tracker_model.", "tracker_neck.")))
    assert tracker["present"] and tracker["used"] and tracker["parameters"] == expected
    original = copy.copy(torch.load(pt, weights_only=True)["model"])
    original.pop("tracker.no_obj_ptr")
    bad = _write_pt(tmp_path / "bad", original, None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["info", str(bad)]) == 0
    out = capsys.readouterr().out
    assert "tracker     present but not loadable" in out
    assert "not loaded  tracker: 278 tensors, not converted" in out and "tracker_model.no_object_pointer" in out
