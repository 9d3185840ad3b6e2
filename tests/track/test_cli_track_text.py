"""``sam3lite track VIDEO --prompt ...`` (every instance of noun phrases) as a user runs it: outputs (masks.jsonl
with phrases, overlay, ytvis.json, summary), the same masks as the Python API, resume and refusal of a
changed prompt, bad input, and two torchrun ranks over a folder of videos.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import av
import numpy as np
import pytest
import torch
from reference import save_video_reference, spread_detector_queries, tiny_video_config_dict
from test_cli_track import FRAMES, HEIGHT, WIDTH, track, write_video

import sam3lite
from sam3lite.cli import main
from sam3lite.processing.rle import rle_to_masks
from sam3lite.video_predictor import VideoPredictor

PHRASES = ["person", "red car"]
SETTINGS = {"score_threshold_detection": 0.3, "new_det_thresh": 0.35, "hotstart_delay": 2}
SET_ARGS = [a for k, v in SETTINGS.items() for a in ("--set", f"{k}={v}")]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("track_text")
    save_video_reference(tiny_video_config_dict("s0"), root / "model", seed=1, adjust=spread_detector_queries)
    return root / "model", write_video(root / "clip.mp4")


def prompt_args(phrases=PHRASES):
    return [a for p in phrases for a in ("--prompt", p)]


def test_outputs_resume_and_changed_prompt(setup, tmp_path):
    model, video = setup
    out = tmp_path / "out"
    args = [video, "--model", model, "--device", "cpu", *prompt_args(), *SET_ARGS, "--out", out]
    result = track(*args)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in (out / "masks.jsonl").read_text().splitlines()]
    assert [line["frame"] for line in lines] == list(range(FRAMES))
    found = {o["id"]: o["phrase"] for line in lines for o in line["objects"]}
    assert set(found.values()) == set(PHRASES), found

    # The Python API with the same phrases and settings gives the same masks.
    vp = VideoPredictor(sam3lite.load(model))
    api = list(vp.propagate(vp.start(str(video), text=PHRASES, settings=SETTINGS)))
    for line, r in zip(lines, api, strict=True):
        assert [o["id"] for o in line["objects"]] == r.object_ids
        assert [o["phrase"] for o in line["objects"]] == r.phrases
        if r.object_ids:
            assert torch.equal(rle_to_masks([o["rle"] for o in line["objects"]]), r.masks)

    vis = json.loads((out / "ytvis.json").read_text())
    assert vis["categories"] == [{"id": 1, "name": "person"}, {"id": 2, "name": "red car"}]
    assert vis["videos"] == [{"id": 1, "name": "clip.mp4", "length": FRAMES, "height": HEIGHT + 1, "width": WIDTH + 1}]
    assert len(vis["results"]) == len(found)
    for res, (obj, phrase) in zip(vis["results"], sorted(found.items()), strict=True):
        assert res["video_id"] == 1 and res["category_id"] == PHRASES.index(phrase) + 1
        assert len(res["segmentations"]) == FRAMES and 0 < res["score"] <= 1
        for line, rle in zip(lines, res["segmentations"], strict=True):
            mine = [o["rle"] for o in line["objects"] if o["id"] == obj]
            assert rle == (mine[0] if mine else None)
    with av.open(str(out / "overlay.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == FRAMES
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["phrases"] == PHRASES and summary["events"]["births"] == len(found)
    assert summary["phrases"] == {str(o): p for o, p in sorted(found.items())}

    again = track(*args)
    assert again.returncode == 0 and "skipped" in again.stdout
    changed = track(video, "--model", model, "--device", "cpu", "--prompt", "person", *SET_ARGS, "--out", out)
    assert changed.returncode == 2 and "other settings (phrases)" in changed.stderr
    assert json.loads((out / "summary.json").read_text()) == summary  # nothing overwritten


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--prompt", "  "], "--prompt must be a noun phrase"),
        (["--prompt", "person", "--set", "new_det_thresh"], "expected NAME=VALUE"),
        (["--prompt", "person", "--set", "new_det_thres=0.5"], "unknown tracking settings ['new_det_thres']"),
        (["--prompt", "person", "--set", "new_det_thresh=high"], "must be a number"),
        (["--set", "new_det_thresh=0.5", "--object", "1:0:5,5"], "--set changes detect-and-track settings"),
    ],
)
def test_bad_prompts_and_settings(setup, tmp_path, capsys, extra, message):
    model, video = setup
    code = main(["track", str(video), "--model", str(model), "--device", "cpu", *extra, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err, err
    assert not (tmp_path / "o").exists()


def test_frames_of_changing_size(setup, tmp_path, capsys):
    model, _ = setup
    folder = tmp_path / "frames"
    folder.mkdir()
    from PIL import Image

    for t, (h, w) in enumerate([(60, 80), (60, 80), (50, 80)]):
        Image.fromarray(np.full((h, w, 3), 40 * t, np.uint8)).save(folder / f"{t:03d}.png")
    out = tmp_path / "o"
    code = main(
        ["track", str(folder), "--model", str(model), "--device", "cpu", "--prompt", "person", "--out", str(out)]
    )
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # after the progress bar
    assert code == 2
    assert (
        last == f"sam3lite track: error: {folder}: frame 2 is 80x50 but the video's frames are 80x60; frames of "
        "changing size are not supported"
    ), err
    assert not (out / "masks.jsonl").exists() and not (out / "summary.json").exists()


def test_two_ranks_share_a_folder_of_videos(setup, tmp_path):
    model, video = setup
    videos = tmp_path / "videos"
    videos.mkdir()
    for name, frames in (("a", 4), ("b", 3), ("c", 5)):
        write_video(videos / f"{name}.mp4", frames)
    out = tmp_path / "out"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    proc = subprocess.run(
        [*launcher, "-m", "sam3lite", "track", str(videos), "--model", str(model), "--device", "cpu",
         *prompt_args(), *SET_ARGS, "--no-overlay", "--out", str(out)],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name, frames in (("a", 4), ("b", 3), ("c", 5)):
        summary = json.loads((out / name / "summary.json").read_text())
        assert summary["frames"] == frames
    merged = json.loads((out / "ytvis.json").read_text())
    assert [v["name"] for v in merged["videos"]] == ["a.mp4", "b.mp4", "c.mp4"]
    assert [v["id"] for v in merged["videos"]] == [1, 2, 3]
    assert {r["video_id"] for r in merged["results"]} <= {1, 2, 3} and merged["results"]
    # Rank 0 reports every video once, whichever rank tracked it.
    assert sorted(line.split(":")[0] for line in proc.stdout.splitlines()) == [str(videos / f"{n}.mp4") for n in "abc"]


def test_shard_split_over_videos():
    from sam3lite.segment.inputs import shard

    pending = [0, 2, 3, 5, 6]
    parts = [shard(pending, r, 2) for r in range(2)]
    assert parts == [[0, 3, 6], [2, 5]] and sorted(parts[0] + parts[1]) == pending
