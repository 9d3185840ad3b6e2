"""cgF1 on hand-built cases: rectangles on a 10x10 canvas whose IoUs are simple fractions."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from sam3lite.evaluation.cgf1 import PairScore, evaluate_cgf1, pick_oracle, score_pair, summarize
from sam3lite.evaluation.io import check_predictions, load_gts

H = W = 10


def rect(y0: int, y1: int, x0: int, x1: int) -> dict:
    """RLE of rows y0..y1-1, columns x0..x1-1."""
    m = np.zeros((H, W), dtype=np.uint8, order="F")
    m[y0:y1, x0:x1] = 1
    rle = mask_utils.encode(m)
    return {"size": [H, W], "counts": rle["counts"].decode("ascii")}


def saco_gt(pairs: dict[int, list[dict]], crowd: dict[int, list[dict]] | None = None) -> dict:
    """SA-Co ground truth: pair id -> GT masks (all pairs share one image file)."""
    images = [{"id": i, "file_name": "a.jpg", "height": H, "width": W, "text_input": f"np{i}"} for i in pairs]
    anns = [{"image_id": i, "segmentation": m, "category_id": 1} for i, ms in pairs.items() for m in ms]
    anns += [{"image_id": i, "segmentation": m, "iscrowd": 1} for i, ms in (crowd or {}).items() for m in ms]
    return {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "object"}]}


def pred(image_id: int, seg: dict, score: float) -> dict:
    return {"image_id": image_id, "category_id": 1, "segmentation": seg, "score": score}


def write_gts(tmp_path, *datasets) -> list:
    paths = []
    for k, data in enumerate(datasets):
        path = tmp_path / f"gt{k}.json"
        path.write_text(json.dumps(data))
        paths.append(path)
    return load_gts(paths)


def f1_eps(tp: float, fp: float, fn: float) -> float:
    """The reference evaluator's F1, epsilons included."""
    p, r = tp / (tp + fp + 1e-4), tp / (tp + fn + 1e-4)
    return 2 * p * r / (p + r + 1e-4)


# Nested rectangles, so each IoU is a ratio of areas (chosen off the 0.05 threshold grid).
A = rect(0, 5, 0, 4)  # 20 px
B = rect(0, 8, 5, 10)  # 40 px
B_PRED = rect(0, 5, 5, 10)  # 25 px inside B: IoU 25/40 = 0.625
C = rect(0, 8, 0, 1)  # 8 px
C_PRED = rect(0, 7, 0, 1)  # 7 px inside C: IoU 7/8 = 0.875
FAR = rect(9, 10, 9, 10)  # 1 px, touches nothing above


@pytest.fixture
def five_pairs(tmp_path):
    """1: two GT, preds at IoU 1 and 0.625 (+ one below threshold); 2: GT, no pred; 3: negative with a
    pred; 4: negative, no pred; 5: one GT, a pred at IoU 0.875 and a stray pred."""
    gts = write_gts(tmp_path, saco_gt({1: [A, B], 2: [A], 3: [], 4: [], 5: [C]}))
    preds = [
        pred(1, A, 0.9),
        pred(1, B_PRED, 0.7),
        pred(1, C, 0.3),
        pred(2, A, 0.49),
        pred(3, A, 0.8),
        pred(5, C_PRED, 0.5),
        pred(5, FAR, 0.6),
    ]
    return gts, check_predictions(preds, gts[0])


def test_hand_computed_single_annotator(five_pairs):
    gts, preds = five_pairs
    out = evaluate_cgf1(gts, preds)
    # Image level: TP {1, 5}, FN {2}, FP {3}, TN {4} -> MCC = (2*1 - 1*1) / sqrt(3*3*2*2) = 1/6.
    assert (out["IL_TP"], out["IL_FP"], out["IL_TN"], out["IL_FN"], out["num_pairs"]) == (2, 1, 1, 1, 5)
    assert out["IL_MCC"] == pytest.approx(1 / 6, abs=1e-6)
    # Instance counts on positive pairs (TP, FP, FN) per IoU threshold:
    #   t <= 0.6 (3 thresholds): (3, 1, 1); 0.65..0.85 (5): (2, 2, 2); 0.9, 0.95 (2): (1, 3, 3)
    # pmF1 = 0.75, 0.5, 0.25 -> mean (3*0.75 + 5*0.5 + 2*0.25) / 10 = 0.525; cgF1 = 0.525 / 6 = 0.0875.
    assert out["pmF1"] == pytest.approx(0.525, abs=2e-4)
    assert out["cgF1"] == pytest.approx(0.0875, abs=1e-4)
    expected_pm = (3 * f1_eps(3, 1, 1) + 5 * f1_eps(2, 2, 2) + 2 * f1_eps(1, 3, 3)) / 10
    assert out["pmF1"] == pytest.approx(expected_pm, rel=1e-12)
    assert out["cgF1@0.5"] == pytest.approx(0.75 / 6, abs=1e-4)
    assert out["cgF1@0.75"] == pytest.approx(0.5 / 6, abs=1e-4)
    # The negative pair's stray prediction counts in plain precision, not in the positive one.
    assert out["precision"] == pytest.approx((3 * 3 / 5 + 5 * 2 / 5 + 2 * 1 / 5) / 10, abs=2e-4)
    # Local F1 of pair 1: 1 (3 thr), 0.5 (7); pair 5: 2/3 (8 thr), 0 (2) -> macro (0.65 + 0.5333) / 2.
    assert out["positive_macro_F1"] == pytest.approx((0.65 + 8 / 15) / 2, abs=2e-4)
    assert out["cgF1_macro"] == pytest.approx((0.65 + 8 / 15) / 12, abs=1e-4)


def test_threshold_is_inclusive_and_configurable(five_pairs):
    gts, preds = five_pairs
    # Pair 5's prediction scores exactly 0.5 and counted above (IL TP {1, 5}): the threshold is >=.
    # At 0.9 only pair 1's first pred survives: IL TP {1}, FN {2, 5}, TN {3, 4}.
    out = evaluate_cgf1(gts, preds, threshold=0.9)
    assert (out["IL_TP"], out["IL_FP"], out["IL_TN"], out["IL_FN"]) == (1, 0, 2, 2)
    assert out["IL_MCC"] == pytest.approx(1 / np.sqrt(6), abs=1e-6)  # (1*2) / sqrt(1*3*2*4)
    assert out["pmF1"] == pytest.approx(2 * (1 * 0.25) / 1.25, abs=2e-4)  # TP 1, FP 0, FN 3


def test_oracle_picks_best_annotator(tmp_path):
    m1, m2 = rect(0, 5, 0, 5), rect(1, 5, 1, 5)  # IoU 16/25 = 0.64
    g, g2, far = rect(6, 8, 0, 2), rect(6, 8, 3, 5), rect(0, 2, 8, 10)
    a = saco_gt({1: [m1], 2: [m1], 3: [], 4: [g]})
    b = saco_gt({1: [m2], 2: [], 3: [m2], 4: [g2]})
    gts = write_gts(tmp_path, a, b)
    preds = check_predictions([pred(1, m2, 0.9), pred(3, m2, 0.9), pred(4, far, 0.9)], gts[0])
    # Pair 1: b matches exactly; 2: b makes it a true negative; 3: b has the GT; 4: both F1 0, a kept.
    # -> IL TP {1, 3, 4}, TN {2}: MCC 1; instances TP 2, FP 1, FN 1 at every threshold: pmF1 2/3.
    out = evaluate_cgf1(gts, preds)
    assert (out["IL_TP"], out["IL_FP"], out["IL_TN"], out["IL_FN"]) == (3, 0, 1, 0)
    assert out["IL_MCC"] == pytest.approx(1.0, abs=1e-6)
    assert out["cgF1"] == pytest.approx(2 / 3, abs=1e-4)
    assert out["cgF1"] == pytest.approx(f1_eps(2, 1, 1) * out["IL_MCC"], rel=1e-12)
    # Annotator a alone: 1 TP at IoU 0.64 (3 thresholds), 2 FN, 3 FP, 4 TP pair with a miss.
    # IL: TP 2, FP 1, FN 1, TN 0 -> MCC -1/3; pmF1 = 3/10 * F1(1, 1, 2) = 3/10 * 0.4 -> cgF1 -0.04.
    alone = evaluate_cgf1(gts[:1], preds)
    assert alone["IL_MCC"] == pytest.approx(-1 / 3, abs=1e-6)
    assert alone["pmF1"] == pytest.approx(0.12, abs=1e-4)
    assert alone["cgF1"] == pytest.approx(-0.04, abs=1e-4)


def test_pick_oracle_rules():
    tn = PairScore(0, 0, np.zeros(10, dtype=np.int64))
    fn = PairScore(1, 0, np.zeros(10, dtype=np.int64))
    half = PairScore(2, 2, np.ones(10, dtype=np.int64))
    half_again = PairScore(2, 2, np.ones(10, dtype=np.int64))
    assert pick_oracle([fn, tn]) is tn
    assert pick_oracle([half, tn, fn]) is tn
    assert pick_oracle([fn, half, half_again]) is half  # best mean local F1, first on ties


def test_crowd_is_ignored_and_box_iou(tmp_path):
    gts = write_gts(tmp_path, saco_gt({1: [], 2: [A]}, crowd={1: [B]}))
    # Pair 1 has only a crowd region and no prediction: a true negative.
    preds = check_predictions([pred(2, rect(0, 5, 0, 2), 0.9)], gts[0])  # half of A: IoU 0.5
    seg = evaluate_cgf1(gts, preds, iou_type="segm")
    assert (seg["IL_TP"], seg["IL_TN"]) == (1, 1)
    assert seg["pmF1@0.5"] == pytest.approx(1.0, abs=2e-4)  # IoU 0.5 reaches t = 0.5
    assert seg["pmF1"] == pytest.approx(0.1, abs=1e-4)
    box = evaluate_cgf1(gts, preds, iou_type="bbox")  # boxes derived from the masks: same IoU
    assert box["cgF1"] == pytest.approx(seg["cgF1"], rel=1e-12)


def test_score_pair_hungarian_maximizes_total_iou():
    # Greedy by score would pair dt0 with gt0 (0.6) and leave dt1 with 0.1; the optimum is 0.55 + 0.55.
    ious = np.array([[0.6, 0.55], [0.55, 0.1]])
    assert score_pair(ious).tp.tolist() == [2, 2, 0, 0, 0, 0, 0, 0, 0, 0]
    empty = score_pair(np.zeros((0, 3)))
    assert (empty.num_dt, empty.num_gt, int(empty.tp.sum())) == (0, 3, 0)


def test_summarize_all_negative_is_finite():
    out = summarize([PairScore(0, 0, np.zeros(10, dtype=np.int64))] * 3)
    assert out["IL_TN"] == 3 and out["cgF1"] == 0.0 and out["positive_macro_F1"] == 0.0


def test_coco_kind_pairs_are_image_category(tmp_path):
    gt = {
        "images": [{"id": 7, "file_name": "x.jpg", "height": H, "width": W}],
        "annotations": [{"image_id": 7, "category_id": 1, "segmentation": A}],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
    }
    gts = write_gts(tmp_path, gt)
    preds = check_predictions([{"image_id": 7, "category_id": 2, "segmentation": A, "score": 0.9}], gts[0])
    out = evaluate_cgf1(gts, preds)  # (7, cat): FN; (7, dog): FP
    assert (out["IL_TP"], out["IL_FP"], out["IL_TN"], out["IL_FN"]) == (0, 1, 0, 1)
    assert out["cgF1"] == 0.0


def test_non_exhaustive_pairs_are_skipped(tmp_path):
    data = saco_gt({1: [A], 2: [A]})
    data["images"][1]["is_instance_exhaustive"] = 0
    gts = write_gts(tmp_path, data)
    out = evaluate_cgf1(gts, check_predictions([], gts[0]))
    assert out["num_pairs"] == 1 and out["IL_FN"] == 1
    with pytest.raises(ValueError, match="no instance-exhaustive"):
        evaluate_cgf1(gts, [], image_ids=[2])
