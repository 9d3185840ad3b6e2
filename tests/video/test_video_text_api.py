"""``VideoPredictor`` with text prompts: several phrases in one session (one image encoding per frame for all),
click/box objects beside them, streaming with ``step``, settings from the checkpoint and overrides, bad input.

Tiny random ``sam3_video`` checkpoint (LiteText s0 detector); the numbers are checked against transformers in
tests/video/test_video_text.py, this file checks the API around them.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from reference import moving_shapes, save_video_reference, spread_detector_queries, tiny_video_config_dict

import sam3lite
from sam3lite.processing.video import VideoError
from sam3lite.video_predictor import VideoPredictor

NUM_FRAMES = 6
PHRASES = ["person", "red car"]
SETTINGS = {
    "score_threshold_detection": 0.36,
    "new_det_thresh": 0.37,
    "assoc_iou_thresh": 0.13,
    "trk_assoc_iou_thresh": 0.231,
    "max_num_objects": 12,
    "hotstart_delay": 2,
}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    directory = tmp_path_factory.mktemp("sam3_video_api")
    save_video_reference(tiny_video_config_dict("s0"), directory, seed=1, adjust=spread_detector_queries)
    return directory


@pytest.fixture(scope="module")
def vp(checkpoint):
    return VideoPredictor(sam3lite.load(checkpoint))


def count_vision_passes(vp, monkeypatch) -> list[int]:
    calls = [0]
    original = vp.model.get_vision_features

    def counted(*args, **kwargs):
        calls[0] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(vp.model, "get_vision_features", counted)
    monkeypatch.setattr(
        vp.model,
        "get_tracker_features_from_pixels",
        lambda *a, **k: pytest.fail("the tracker encoded a frame again"),
    )
    return calls


def test_phrases_and_clicks_share_one_encoding_per_frame(vp, monkeypatch):
    frames = moving_shapes(NUM_FRAMES)
    session = vp.start(frames, text=PHRASES[0], settings=SETTINGS)
    vp.add_text(session, PHRASES[1])
    vp.add_text(session, PHRASES[1])  # the same phrase twice is one phrase
    assert session.phrases == PHRASES
    first = vp.add_object(session, frame=0, obj_id=7, box=[20, 30, 65, 75])  # the bright square
    assert first.object_ids == [7] and first.phrases == [None]

    calls = count_vision_passes(vp, monkeypatch)
    results = list(vp.propagate(session))
    assert calls[0] == NUM_FRAMES  # one ViT pass per frame serves every phrase and the tracker
    assert [r.frame for r in results] == list(range(NUM_FRAMES))
    found: dict[int, str | None] = {}
    for r in results:
        assert r.masks.shape == (len(r.object_ids), 150, 200) and r.scores.shape == (len(r.object_ids),)
        assert r.object_ids == sorted(r.object_ids) and len(r.phrases) == len(r.object_ids)
        for obj, phrase in zip(r.object_ids, r.phrases, strict=True):
            assert found.setdefault(obj, phrase) == phrase  # an object keeps its phrase
    assert found[7] is None and all(7 in r.object_ids for r in results)
    assert {p for p in found.values() if p} == set(PHRASES), found  # both phrases found objects
    assert all(obj > 7 for obj, p in found.items() if p)  # text objects take ids after the click object's


def test_streaming_step_matches_offline_without_hot_start(vp):
    frames = moving_shapes(NUM_FRAMES)
    settings = {**SETTINGS, "hotstart_delay": 0}
    offline = list(vp.propagate(vp.start(frames, text=PHRASES, settings=settings)))
    stream = vp.start(None, text=PHRASES, settings=settings)
    assert stream.streaming and stream.num_frames == 0
    live = [vp.step(stream, frame) for frame in frames]
    assert [r.object_ids for r in live] == [r.object_ids for r in offline]
    assert live[-1].object_ids, "objects were found"
    # Frame 0 reads no memory: the same. Later frames differ a little: a stream's length is unknown, so
    # object pointers' temporal offsets are scaled by max_object_pointers_in_encoder, not by the length.
    assert torch.equal(live[0].masks, offline[0].masks) and torch.equal(live[0].scores, offline[0].scores)
    for a, b in zip(live, offline, strict=True):
        inter, union = (a.masks & b.masks).sum((1, 2)), (a.masks | b.masks).sum((1, 2))
        assert bool((inter >= 0.9 * union).all()), (a.frame, (inter / union).tolist())
    with pytest.raises(VideoError, match="frames of changing size"):
        vp.step(stream, np.zeros((100, 120, 3), np.uint8))
    with pytest.raises(ValueError, match="stream"):
        next(vp.propagate(stream))


def test_settings_from_checkpoint_and_overrides(checkpoint, tmp_path):
    config = json.loads((checkpoint / "config.json").read_text())
    config.update(new_det_thresh=0.61, hotstart_delay=3)
    copy = tmp_path / "ckpt"
    copy.mkdir()
    (copy / "config.json").write_text(json.dumps(config))
    (copy / "model.safetensors").symlink_to(checkpoint / "model.safetensors")
    vp = VideoPredictor(sam3lite.load(copy))
    session = vp.start(moving_shapes(2), text="person")
    assert session.text.settings.new_det_thresh == 0.61 and session.text.settings.hotstart_delay == 3
    session = vp.start(moving_shapes(2), text="person", settings={"hotstart_delay": 0})
    assert session.text.settings.hotstart_delay == 0 and session.text.settings.new_det_thresh == 0.61


def test_bad_input(vp):
    frames = moving_shapes(3)
    for bad in ("", "   ", [], [""]):
        with pytest.raises(ValueError, match="noun phrase"):
            vp.start(frames, text=bad)
    session = vp.start(frames)
    with pytest.raises(ValueError, match="non-empty noun phrase"):
        vp.add_text(session, None)
    with pytest.raises(ValueError, match="unknown tracking settings.*new_det_thres\\b"):
        vp.start(frames, text="person", settings={"new_det_thres": 0.5})
    with pytest.raises(ValueError, match="new_det_thresh must be a number in \\[0, 1\\]"):
        vp.start(frames, text="person", settings={"new_det_thresh": 2})
    changing = [frames[0], frames[1][:100]]
    session = vp.start(changing, text="person", settings={"hotstart_delay": 0})
    with pytest.raises(VideoError, match="frame 1 is 200x100 .*changing size"):
        list(vp.propagate(session))


def test_a_finished_text_pass_only_continues(vp):
    """A pass keeps only the memories its own direction reads on: running the session again (or backwards)
    would silently differ from a fresh session, so it is refused until ``reset``; continuing is exact."""
    frames = moving_shapes(NUM_FRAMES)
    session = vp.start(frames, text="person", settings={**SETTINGS, "hotstart_delay": 0})
    first = [r.frame for _, r in zip(range(3), vp.propagate(session), strict=False)]
    assert first == [0, 1, 2]
    for kwargs in ({}, {"reverse": True}, {"start": 1}):
        with pytest.raises(ValueError, match="continue it with propagate\\(session, start=3\\)"):
            next(vp.propagate(session, **kwargs))
    assert [r.frame for r in vp.propagate(session, start=3)] == [3, 4, 5]
    vp.reset(session)  # forgets the phrases too
    vp.add_text(session, "person")
    assert [r.frame for r in vp.propagate(session, reverse=True)] == list(range(NUM_FRAMES - 1, -1, -1))
