"""``sam3lite segment --point/--object-box``: one object, given by clicks and/or a box, segmented in every
image with SAM3's tracker and written like a text prompt's detections (category "object")."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from reference import save_reference, save_video_reference, tiny_config_dict, tiny_video_config_dict
from test_cli_segment import run_cli

import sam3lite
from sam3lite.cli import main
from sam3lite.processing.rle import rle_to_masks

HEIGHT, WIDTH = 150, 203


@pytest.fixture(scope="module")
def video_dir(tmp_path_factory):
    """A tiny facebook/sam3-layout checkpoint: detector and tracker."""
    directory = tmp_path_factory.mktemp("sam3_video")
    save_video_reference(tiny_video_config_dict("sam3"), directory, seed=0)
    return directory


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "photo.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)).save(path)
    return path


def expected(directory, image, **prompt):
    """What ``Predictor.predict_object`` says about the same prompt (best mask, its IoU score)."""
    predictor = sam3lite.Predictor(sam3lite.load(directory, dtype=torch.float32))
    predictor.set_image(str(image))
    return predictor.predict_object(**prompt)


def read_record(out):
    return json.loads((out / "photo.json").read_text())


def test_points_and_text_in_one_run(video_dir, image, tmp_path):
    out = tmp_path / "out"
    proc = run_cli(
        "segment", str(image), "--prompt", "ear", "--point", "60,50", "--point", "150,120,0",
        "--model", str(video_dir), "--dtype", "float32", "--threshold", "0", "--out", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    want = expected(video_dir, image, points=[[60, 50], [150, 120]], point_labels=[1, 0], multimask_output=False)
    record = read_record(out)
    objects = [d for d in record["detections"] if d["prompt"] == "object"]
    texts = [d for d in record["detections"] if d["prompt"] == "ear"]
    assert texts and all(d["category_id"] == 1 for d in texts)
    assert want.object_score_logit > 0  # the tiny model sees an object here: the test checks a detection
    (found,) = objects
    assert found["category_id"] == 2
    assert found["score"] == pytest.approx(float(want.iou_scores[want.best]), abs=1e-5)
    mask = torch.as_tensor(rle_to_masks([found["mask"]])[0], dtype=torch.bool)
    assert torch.equal(mask, want.masks[want.best])
    ys, xs = torch.nonzero(mask, as_tuple=True)
    assert found["box"] == pytest.approx([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    images = json.loads((out / "images.json").read_text())
    assert {c["name"]: c["id"] for c in images["categories"]} == {"ear": 1, "object": 2}
    results = json.loads((out / "results.json").read_text())
    assert sum(r["category_id"] == 2 for r in results) == len(objects)
    settings = json.loads((out / "run.json").read_text())["settings"]
    assert settings["object"] == {"points": [[60.0, 50.0], [150.0, 120.0]], "point_labels": [1, 0], "box": None}


def test_object_box_alone_single_click_multimask(video_dir, image, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    args = ["segment", str(image), "--model", str(video_dir), "--dtype", "float32", "--no-progress"]
    assert main([*args, "--object-box", "20,30,120,140", "--out", "box"]) == 0
    want = expected(video_dir, image, box=[20, 30, 120, 140], multimask_output=False)
    detections = read_record(tmp_path / "box")["detections"]
    assert want.object_score_logit > 0
    assert [d["prompt"] for d in detections] == ["object"]
    assert json.loads((tmp_path / "box" / "images.json").read_text())["categories"] == [{"id": 1, "name": "object"}]

    # One click is ambiguous: three candidates, the best kept.
    assert main([*args, "--point", "100,70", "--out", "click"]) == 0
    want = expected(video_dir, image, points=[[100, 70]], point_labels=[1], multimask_output=True)
    assert len(want) == 3
    detections = read_record(tmp_path / "click")["detections"]
    assert want.object_score_logit > 0 and want.best != 0  # the best of three, not simply the first
    mask = torch.as_tensor(rle_to_masks([detections[0]["mask"]])[0], dtype=torch.bool)
    assert torch.equal(mask, want.masks[want.best])

    # A rerun with another click is refused, naming the option.
    assert main([*args, "--point", "101,70", "--out", "click"]) == 2


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--point", "500,20"], "--point 500,20 lies outside image"),
        (["--point", "5"], "malformed --point '5'"),
        (["--point", "5,6,2"], "LABEL must be 1 (object) or 0"),
        (["--point", "5,6,0"], "every click is a background click"),
        (["--object-box", "30,30,10,50"], "malformed --object-box"),
        (["--object-box", "300,200,400,300"], "--object-box 300,200,400,300 lies outside image"),
        (["--point", "5,6", "--prompt", "object"], "clashes with the name"),
    ],
)
def test_bad_object_prompts_are_usage_errors(video_dir, image, tmp_path, capsys, extra, message):
    code = main(["segment", str(image), "--model", str(video_dir), *extra, "--out", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()  # nothing written


def test_a_detector_without_tracker_says_how_to_add_one(image, tmp_path, capsys):
    detector = tmp_path / "s0"
    save_reference(tiny_config_dict("s0"), detector, seed=1)
    code = main(["segment", str(image), "--model", str(detector), "--point", "5,6", "--out", str(tmp_path / "o")])
    assert code == 2
    assert "add --tracker sam3" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_litetext_model_with_a_tracker_from_another_file(video_dir, image, tmp_path):
    detector = tmp_path / "s0"
    save_reference(tiny_video_config_dict("s0")["detector_config"], detector, seed=11)  # sized like the tracker
    out = tmp_path / "o"
    args = ["segment", str(image), "--model", str(detector), "--tracker", str(video_dir), "--point", "60,50"]
    assert main([*args, "--dtype", "float32", "--out", str(out)]) == 0
    combined = sam3lite.load(detector, tracker=video_dir, dtype=torch.float32)
    predictor = sam3lite.Predictor(combined)
    predictor.set_image(str(image))
    want = predictor.predict_object(points=[[60, 50]], point_labels=[1])
    assert want.object_score_logit > 0
    (found,) = read_record(out)["detections"]
    assert found["score"] == pytest.approx(float(want.iou_scores[want.best]), abs=1e-5)
    tracker = json.loads((out / "run.json").read_text())["settings"]["tracker"]
    assert tracker is not None  # the tracker's weights are part of what made the outputs
