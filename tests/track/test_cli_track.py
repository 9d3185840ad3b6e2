"""``sam3lite track`` as a user runs it (subprocess): outputs, resume, refusals, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from reference import save_video_reference, tiny_video_config_dict

import sam3lite
from sam3lite.processing.rle import rle_to_masks
from sam3lite.video_predictor import VideoPredictor

HEIGHT, WIDTH, FRAMES = 75, 101, 8  # odd sizes on purpose


def write_video(path: Path, frames: int = FRAMES) -> Path:
    container = av.open(str(path), "w")
    stream = container.add_stream("libx264", rate=10)
    stream.width, stream.height, stream.pix_fmt = WIDTH + 1, HEIGHT + 1, "yuv420p"
    for t in range(frames):
        image = np.full((HEIGHT + 1, WIDTH + 1, 3), 60, np.uint8)
        image[20:50, 10 + 5 * t : 40 + 5 * t] = 230
        for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("track")
    save_video_reference(tiny_video_config_dict("s0"), root / "model", seed=0)
    return root / "model", write_video(root / "clip.mp4")


def track(*args, cwd=None):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run(
        [sys.executable, "-m", "sam3lite", "track", *map(str, args)], capture_output=True, text=True, env=env,
        cwd=cwd, timeout=600,
    )  # fmt: skip


def test_outputs_and_resume(setup, tmp_path):
    model, video = setup
    out = tmp_path / "out"
    args = [
        video,
        "--model",
        model,
        "--device",
        "cpu",
        "--object",
        "1:2:25,35",
        "--object-box",
        "2:0:5,15,45,55",
        "--out",
        out,
    ]
    result = track(*args)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in (out / "masks.jsonl").read_text().splitlines()]
    assert [line["frame"] for line in lines] == list(range(FRAMES))  # frames before object 1's prompt too
    assert [o["id"] for o in lines[0]["objects"]] == [2, 1]  # prompted on frame 0 first, then frame 2
    masks = rle_to_masks([o["rle"] for o in lines[5]["objects"]])
    assert masks.shape == (2, HEIGHT + 1, WIDTH + 1)
    with av.open(str(out / "overlay.mp4")) as container:
        decoded = [f for f in container.decode(video=0)]
    assert len(decoded) == FRAMES and decoded[0].width % 2 == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == FRAMES and summary["objects"] == [1, 2]
    # The same masks as the Python API with the same prompts.
    vp = VideoPredictor(sam3lite.load(model))
    session = vp.start(str(video))
    vp.add_object(session, 0, 2, box=[5, 15, 45, 55])
    vp.add_object(session, 2, 1, points=[[25, 35]], point_labels=[1])
    forward = {r.frame: r for r in vp.propagate(session)}
    assert torch.equal(rle_to_masks([o["rle"] for o in lines[5]["objects"]]), forward[5].masks)
    again = track(*args)
    assert again.returncode == 0 and "skipped" in again.stdout
    changed = track(*args[:-4], "--object", "1:2:30,35", "--out", out)
    assert changed.returncode == 2 and "other settings (prompts)" in changed.stderr


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--object", "1:40:10,10"], "frame 40 is past the end"),
        (["--object", "1:0:500,10"], "outside"),
        (["--object", "1:0:10"], "expected 2 or 3 numbers"),
        (["--object-box", "1:0:40,10,20,30"], "x1 > x0"),
        ([], "nothing to track"),
    ],
)
def test_bad_prompts_write_nothing(setup, tmp_path, extra, message):
    model, video = setup
    result = track(video, "--model", model, "--device", "cpu", *extra, "--out", tmp_path / "out")
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_bad_videos(setup, tmp_path):
    model, _ = setup
    (tmp_path / "broken.mp4").write_bytes(b"not a video at all")
    empty = tmp_path / "frames"
    empty.mkdir()
    for video, message in ((tmp_path / "broken.mp4", "not a readable video"), (empty, "no frame images"),
                           (tmp_path / "missing.mp4", "no such video")):  # fmt: skip
        result = track(video, "--model", model, "--device", "cpu", "--object", "1:0:5,5", "--out", tmp_path / "o")
        assert result.returncode == 2 and message in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "o").exists()


def test_folder_not_ours_is_refused(setup, tmp_path):
    model, video = setup
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    result = track(video, "--model", model, "--device", "cpu", "--object", "1:0:5,5", "--out", out)
    assert result.returncode == 2 and "did not write" in result.stderr
    assert (out / "notes.txt").read_text() == "keep me" and not (out / "masks.jsonl").exists()
