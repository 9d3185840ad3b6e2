"""``POST /v1/track`` in process (FastAPI's TestClient) on a tiny ``sam3_video`` checkpoint: per-frame RLEs equal
``VideoPredictor``'s, the video limits (frames, duration, frame size, body), and bad requests naming the field."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from reference import save_video_reference, spread_detector_queries, tiny_video_config_dict

import sam3lite
from sam3lite.processing.rle import rle_to_masks
from sam3lite.serve import ServeSettings, create_app
from sam3lite.video_predictor import VideoPredictor

FRAMES = 8


def write_video(path: Path) -> Path:
    """8 frames at 10 fps: a bright rectangle moving right on grey."""
    container = av.open(str(path), "w")
    stream = container.add_stream("libx264", rate=10)
    stream.width, stream.height, stream.pix_fmt = 102, 76, "yuv420p"
    for t in range(FRAMES):
        image = np.full((76, 102, 3), 60, np.uint8)
        image[20:50, 10 + 5 * t : 40 + 5 * t] = 230
        for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return path


THRESHOLDS = {"score_threshold_detection": 0.3, "new_det_thresh": 0.35, "hotstart_delay": 2}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve_track")
    save_video_reference(tiny_video_config_dict("s0"), root / "model", seed=1, adjust=spread_detector_queries)
    return sam3lite.load(root / "model"), write_video(root / "clip.mp4")


def post(client, video_bytes, prompts=("person", "red car"), settings=THRESHOLDS, **extra):
    data = {"prompts": list(prompts), **extra}
    if settings is not None:
        data["settings"] = json.dumps(settings)
    return client.post("/v1/track", files={"video": ("clip.mp4", video_bytes, "video/mp4")}, data=data)


def test_track_equals_video_predictor(setup):
    model, video = setup
    with TestClient(create_app(model, ServeSettings())) as client:
        response = post(client, video.read_bytes())
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["video"]["frames"] == FRAMES and body["prompts"] == ["person", "red car"]
    vp = VideoPredictor(model)
    expected = list(vp.propagate(vp.start(str(video), text=["person", "red car"], settings=THRESHOLDS)))
    assert [f["frame"] for f in body["frames"]] == list(range(FRAMES))
    assert any(f["objects"] for f in body["frames"])
    for got, want in zip(body["frames"], expected, strict=True):
        assert [o["id"] for o in got["objects"]] == want.object_ids
        assert [o["phrase"] for o in got["objects"]] == want.phrases
        if want.object_ids:
            assert torch.equal(rle_to_masks([o["rle"] for o in got["objects"]]), want.masks)


def test_limits_and_bad_requests(setup, tmp_path):
    model, video = setup
    data = video.read_bytes()
    limited = ServeSettings(max_video_frames=FRAMES - 1)
    with TestClient(create_app(model, limited)) as client:
        r = post(client, data)
        assert r.status_code == 413 and "frames exceed the server's limit of 7" in r.json()["error"]["message"]
    with TestClient(create_app(model, ServeSettings(max_video_seconds=0.5))) as client:  # 8 frames at 10 fps
        r = post(client, data)
        assert r.status_code == 413 and "0.8 s exceed" in r.json()["error"]["message"]
    with TestClient(create_app(model, ServeSettings(max_image_pixels=1000))) as client:
        assert post(client, data).status_code == 413
    with TestClient(create_app(model, ServeSettings(max_body_bytes=len(data) // 2))) as client:
        assert post(client, data).status_code == 413
    with TestClient(create_app(model, ServeSettings())) as client:
        cases = [
            (post(client, data, prompts=["  "]), 422, "prompts"),
            (post(client, data, prompts=[]), 422, "prompts"),
            (post(client, b"not a video"), 422, "video"),
            (post(client, data, settings={"new_det_thres": 0.5}), 422, "settings"),
            (post(client, data, settings=[1]), 422, "settings"),
            (post(client, data, extra_field="x"), 422, "extra_field"),
            (client.post("/v1/track", json={"prompts": ["person"]}), 415, "content-type"),
            (client.post("/v1/track", data={"prompts": "person"}, files={"other": ("a", b"x")}), 422, "video"),
        ]
        for response, status, field in cases:
            assert response.status_code == status, response.text
            assert response.json()["error"]["field"] == field, response.text
