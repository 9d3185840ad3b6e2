"""COCO AP through pycocotools on cases whose precision-recall curve is known by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from sam3lite.evaluation.coco_ap import evaluate_ap
from sam3lite.evaluation.io import check_predictions, load_gt
from sam3lite.evaluation.report import evaluate, format_report

H = W = 64  # room for "medium" objects (32^2 < area < 96^2 px)


def rect(y0: int, y1: int, x0: int, x1: int) -> dict:
    m = np.zeros((H, W), dtype=np.uint8, order="F")
    m[y0:y1, x0:x1] = 1
    return {"size": [H, W], "counts": mask_utils.encode(m)["counts"].decode("ascii")}


G1, G2, FAR = rect(0, 20, 0, 20), rect(30, 64, 30, 64), rect(0, 5, 50, 60)


def load(tmp_path, data):
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(data))
    return load_gt(path)


@pytest.fixture
def coco_gt(tmp_path):
    data = {
        "images": [{"id": 1, "file_name": "a.jpg", "height": H, "width": W}],
        "annotations": [
            {"image_id": 1, "category_id": 3, "segmentation": G1},
            {"image_id": 1, "category_id": 3, "segmentation": G2},
        ],
        "categories": [{"id": 3, "name": "cat"}],
    }
    return load(tmp_path, data)


def test_half_recall_at_full_precision(coco_gt):
    # One exact hit (score 0.9) and one miss (0.8): precision 1 up to recall 0.5, which is reached at
    # every IoU threshold -> 51 of COCO's 101 recall points have precision 1: AP = 51/101.
    preds = check_predictions(
        [
            {"image_id": 1, "category_id": 3, "segmentation": G1, "score": 0.9},
            {"image_id": 1, "category_id": 3, "segmentation": FAR, "score": 0.8},
        ],
        coco_gt,
    )
    before = json.dumps(coco_gt.coco_dict())
    for iou_type in ("segm", "bbox"):
        ap = evaluate_ap(coco_gt, preds, iou_type)
        assert json.dumps(coco_gt.coco_dict()) == before  # pycocotools' in-place edits stay on a copy
        assert ap["AP"] == pytest.approx(51 / 101, abs=1e-12)
        assert ap["AP50"] == ap["AP75"] == ap["AP"]
        assert ap["AR100"] == pytest.approx(0.5, abs=1e-12)
        # G1 (400 px) is small and found first; G2 (34x34 = 1156 px) is medium and missed; the miss
        # (50 px) is small and scored below the hit; nothing is large.
        assert ap["APs"] == pytest.approx(1.0, abs=1e-12)
        assert ap["APm"] == 0.0
        assert ap["APl"] == -1.0


def test_no_predictions_gives_zero(coco_gt):
    ap = evaluate_ap(coco_gt, [], "segm")
    assert ap["AP"] == 0.0 and ap["AR100"] == 0.0


def test_saco_negatives_count_as_false_positives(tmp_path):
    data = {
        "images": [
            {"id": 1, "file_name": "a.jpg", "height": H, "width": W, "text_input": "red cup"},
            {"id": 2, "file_name": "a.jpg", "height": H, "width": W, "text_input": "zebra"},
        ],
        "annotations": [{"image_id": 1, "category_id": 1, "segmentation": G1}],
        "categories": [{"id": 1, "name": "object"}],
    }
    gt = load(tmp_path, data)
    preds = check_predictions(
        [
            {"image_id": 1, "category_id": 1, "segmentation": G1, "score": 0.8},
            {"image_id": 2, "category_id": 7, "segmentation": G1, "score": 0.9},  # on the negative pair
        ],
        gt,
    )
    # Ranked: FP (0.9), TP (0.8) -> interpolated precision 0.5 at every recall point: AP = 0.5.
    assert evaluate_ap(gt, preds, "segm")["AP"] == pytest.approx(0.5, abs=1e-12)
    assert evaluate_ap(gt, preds, "segm", image_ids=[1])["AP"] == pytest.approx(1.0, abs=1e-12)

    result = evaluate([gt], preds, iou_types=("segm", "bbox"))
    assert result["pairs"] == 2 and result["predictions"] == 2 and result["annotators"] == 1
    assert set(result["cgF1"]) == set(result["AP"]) == {"segm", "bbox"}
    # Pair 1: TP at IoU 1; pair 2: FP. IL: TP 1, FP 1 -> MCC = (0 - 0) / ... = 0.
    assert result["cgF1"]["segm"]["IL_MCC"] == 0.0
    text = format_report(result)
    assert "2 image-phrase pairs (1 annotator), 2 predictions" in text
    assert "AP   [segm]  AP 50.00  AP50 50.00" in text


def test_box_only_data_needs_bbox_iou(tmp_path):
    data = {
        "images": [{"id": 1, "file_name": "a.jpg", "height": H, "width": W}],
        "annotations": [{"image_id": 1, "category_id": 3, "bbox": [0, 0, 20, 20]}],
        "categories": [{"id": 3, "name": "cat"}],
    }
    gt = load(tmp_path, data)
    preds = check_predictions([{"image_id": 1, "category_id": 3, "bbox": [0, 0, 20, 20], "score": 0.6}], gt)
    assert evaluate_ap(gt, preds, "bbox")["AP"] == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ValueError, match="box-only annotations"):
        evaluate_ap(gt, preds, "segm")
    with pytest.raises(ValueError, match="unknown metric or iou type"):
        evaluate([gt], preds, iou_types=("keypoints",))
