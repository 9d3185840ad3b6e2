"""Running a predictor over a dataset: grouping, COCO results, resuming; then the real tiny model."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import PIL.Image
import pytest
import torch
from reference import save_reference, tiny_config_dict

from sam3lite.cli import main
from sam3lite.evaluation.cgf1 import eval_image_ids
from sam3lite.evaluation.io import load_gts
from sam3lite.evaluation.runner import RunSettings, job_image_ids, part_path, plan_jobs, run_dataset
from sam3lite.processing.rle import masks_to_rle

H, W = 12, 16


@dataclass
class FakeResult:
    prompt: str
    masks: torch.Tensor
    boxes: torch.Tensor
    scores: torch.Tensor

    def to_rle(self) -> list[dict]:
        return masks_to_rle(self.masks)


class FakePredictor:
    """Same API as sam3lite.Predictor: prompt "dog" -> one box-shaped instance, anything else none."""

    def __init__(self) -> None:
        self.images: list[tuple[int, int]] = []
        self.prompts: list[str] = []

    def set_image(self, image: PIL.Image.Image) -> None:
        self.images.append(image.size)
        self.size = (image.size[1], image.size[0])

    def predict(self, text: list[str], threshold: float, mask_threshold: float) -> list[FakeResult]:
        self.prompts.extend(text)
        out = []
        for prompt in text:
            masks = torch.zeros(0, *self.size, dtype=torch.bool)
            boxes, scores = torch.zeros(0, 4), torch.zeros(0)
            if prompt == "dog":
                masks = torch.zeros(1, *self.size, dtype=torch.bool)
                masks[0, 2:6, 3:9] = True
                boxes, scores = torch.tensor([[3.0, 2.0, 9.0, 6.0]]), torch.tensor([0.75])
            out.append(FakeResult(prompt, masks, boxes, scores))
        return out


class Exploding(FakePredictor):
    def set_image(self, image) -> None:
        raise AssertionError("should have resumed from the parts")


@pytest.fixture
def dataset(tmp_path):
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("a.png", "sub/b.png"):
        PIL.Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(images / name)
    mask = np.zeros((H, W), dtype=np.uint8)
    mask[2:6, 3:9] = 1
    dog = masks_to_rle(mask)[0]
    pair = {"height": H, "width": W}
    gt = {
        "images": [
            {"id": 10, "file_name": "a.png", "text_input": "dog", **pair},
            {"id": 11, "file_name": "a.png", "text_input": "cat", **pair},
            {"id": 12, "file_name": "sub/b.png", "text_input": "dog", **pair},
            {"id": 13, "file_name": "sub/b.png", "text_input": "bird", "is_instance_exhaustive": 0, **pair},
        ],
        "annotations": [{"image_id": 10, "segmentation": dog, "category_id": 1}],
        "categories": [{"id": 1, "name": "object"}],
    }
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(gt))
    return gt_path, images


def test_jobs_group_pairs_by_file(dataset):
    gt_path, _ = dataset
    gts = load_gts([gt_path])
    jobs = plan_jobs(gts[0], eval_image_ids(gts))  # pair 13 is not exhaustive: not run
    assert [(j.file_name, j.prompts) for j in jobs] == [("a.png", ["dog", "cat"]), ("sub/b.png", ["dog"])]
    assert job_image_ids(jobs) == [10, 11, 12]


def test_run_writes_coco_results_and_resumes(dataset, tmp_path):
    gt_path, images = dataset
    gts = load_gts([gt_path])
    jobs = plan_jobs(gts[0], eval_image_ids(gts))
    out, settings = tmp_path / "out", RunSettings(model="fake", score_floor=0.05)
    fake = FakePredictor()
    preds = run_dataset(fake, jobs, images, out, settings, progress=False)
    assert fake.images == [(W, H), (W, H)] and fake.prompts == ["dog", "cat", "dog"]  # one encode per file
    expected_box = [3.0, 2.0, 6.0, 4.0]  # xyxy (3, 2, 9, 6) -> xywh
    assert [(p["image_id"], p["category_id"], p["bbox"], p["score"]) for p in preds] == [
        (10, 1, expected_box, 0.75),
        (12, 1, expected_box, 0.75),
    ]
    assert preds[0]["segmentation"]["size"] == [H, W] and isinstance(preds[0]["segmentation"]["counts"], str)
    assert json.loads((out / "run.json").read_text()) == {"model": "fake", "score_floor": 0.05, "mask_threshold": 0.5}

    # A rerun reads every image from its part file; a lost part is recomputed alone.
    assert run_dataset(Exploding(), jobs, images, out, settings, progress=False) == preds
    part_path(out, "sub/b.png").unlink()
    again = FakePredictor()
    assert run_dataset(again, jobs, images, out, settings, progress=False) == preds
    assert again.prompts == ["dog"]

    with pytest.raises(ValueError, match="use another --out"):
        run_dataset(FakePredictor(), jobs, images, out, RunSettings(model="other"), progress=False)


def test_image_problems_are_reported(dataset, tmp_path):
    gt_path, images = dataset
    gts = load_gts([gt_path])
    jobs = plan_jobs(gts[0], [10])
    PIL.Image.new("RGB", (W + 1, H)).save(images / "a.png")
    with pytest.raises(ValueError, match=r"a.png is 17x12, the ground truth says 16x12"):
        run_dataset(FakePredictor(), jobs, images, tmp_path / "o1", RunSettings("fake"), progress=False)
    (images / "a.png").unlink()
    with pytest.raises(FileNotFoundError, match="image not found"):
        run_dataset(FakePredictor(), jobs, images, tmp_path / "o2", RunSettings("fake"), progress=False)


def test_cli_runs_the_tiny_model_end_to_end(dataset, tmp_path, capsys):
    gt_path, images = dataset
    checkpoint = tmp_path / "tiny"
    save_reference(tiny_config_dict("s0"), checkpoint, seed=3)
    out = tmp_path / "run"
    argv = [
        "eval",
        "--model",
        str(checkpoint),
        "--images",
        str(images),
        "--gt",
        str(gt_path),
        "--out",
        str(out),
        "--score-floor",
        "0",
        "--no-progress",
        "--json",
    ]
    assert main(argv) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["pairs"] == 3 and set(metrics["cgF1"]) == {"segm"} and set(metrics["AP"]) == {"segm"}
    preds = json.loads((out / "predictions.json").read_text())
    assert json.loads((out / "metrics.json").read_text()) == metrics

    # Every pair gets the tiny model's 10 queries (floor 0), equal to a direct Predictor call.
    import sam3lite

    predictor = sam3lite.Predictor(sam3lite.load(checkpoint))
    predictor.set_image(PIL.Image.open(images / "a.png"))
    direct = predictor.predict(text=["dog"], threshold=0.0, mask_threshold=0.5)[0]
    ours = [p for p in preds if p["image_id"] == 10]
    assert [p["segmentation"] for p in ours] == direct.to_rle()
    assert [p["score"] for p in ours] == pytest.approx(direct.scores.tolist(), abs=1e-6)
    assert len(preds) == 30 and {p["image_id"] for p in preds} == {10, 11, 12}
    assert set(preds[0]) == {"image_id", "category_id", "segmentation", "bbox", "score"}

    # Rerunning finds every part: same predictions, and metrics can also come from the file.
    assert main(argv) == 0
    capsys.readouterr()
    assert json.loads((out / "predictions.json").read_text()) == preds
    assert main(["eval", "--gt", str(gt_path), "--predictions", str(out / "predictions.json"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == metrics
