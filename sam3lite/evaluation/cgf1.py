"""SA-Co's classification-gated F1 (cgF1), as defined in the SAM 3 paper and facebookresearch/sam3.

Every evaluation *pair* (an image with one noun phrase) is scored on its own, keeping only the
predictions with ``score >= threshold`` (0.5) and dropping crowd ground truth:

1. Predictions and ground-truth instances are matched one-to-one by the Hungarian algorithm,
   maximizing the summed IoU (mask or box); a matched pair is a true positive at every IoU threshold
   t in 0.50:0.05:0.95 it reaches.
2. The pair is an image-level TP (has instances, has predictions), FP (none, some), FN (some, none)
   or TN (none, none).

Summed over the pairs:

- ``IL_MCC``: Matthews correlation of the image-level confusion counts (is the concept present?).
- ``pmF1`` (positive micro F1) per t: micro F1 of instance TP / FP / FN where false positives count
  only on *positive* pairs (those with ground truth); its mean over the 10 thresholds is reported.
- ``cgF1 = IL_MCC * pmF1`` (reported x100 in the paper), also at t = 0.5 and 0.75.

With several annotators (SA-Co/Gold has 3) the evaluation is "oracle": each pair is scored against
every annotator and the best one is kept: one under which the pair is a true negative if any, else
the one with the highest local F1 averaged over thresholds (the first on ties).

Also reported: ``positive_macro_F1`` (local F1 averaged over pairs with ground truth and
predictions) and ``cgF1_macro`` = its product with IL_MCC, which SAM 3's older "demo" evaluator
called CGF1; image-level precision / recall / F1 / FPR and instance precision / recall / F1.

The small epsilons in the ratios (1e-4 for instance-level, 1e-6 for image-level ones) are those of
the reference evaluator, kept so the numbers agree with published ones to every printed digit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils
from scipy.optimize import linear_sum_assignment

from .io import Dataset, ItemId, require_masks, select_ids

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)  # as pycocotools' COCOeval: 0.9 is 0.8999999999999999
EPS = 1e-4  # instance-level ratios, as the reference evaluator
IL_EPS = 1e-6  # image-level ratios, as the reference evaluator


@dataclass(frozen=True)
class PairScore:
    """Outcome of one (image, phrase) pair against one annotator.

    Attributes:
        num_gt: non-crowd ground-truth instances.
        num_dt: predictions kept (score >= threshold).
        tp: [T] true positives per IoU threshold.
    """

    num_gt: int
    num_dt: int
    tp: np.ndarray

    @property
    def is_true_negative(self) -> bool:
        return self.num_gt == 0 and self.num_dt == 0

    @property
    def local_f1(self) -> np.ndarray:
        """[T] F1 of this pair alone (zeros when either side is empty)."""
        precision = self.tp / (self.num_dt + EPS)
        recall = self.tp / (self.num_gt + EPS)
        return 2 * precision * recall / (precision + recall + EPS)


def iou_matrix(dts: Sequence[Mapping[str, Any]], gts: Sequence[Mapping[str, Any]], iou_type: str) -> np.ndarray:
    """[num_dt, num_gt] IoU of predictions vs (non-crowd) ground truth, masks or xywh boxes."""
    if not dts or not gts:
        return np.zeros((len(dts), len(gts)))
    key = "segmentation" if iou_type == "segm" else "bbox"
    d, g = [x[key] for x in dts], [x[key] for x in gts]
    if iou_type == "bbox":
        d, g = np.asarray(d, dtype=np.float64), np.asarray(g, dtype=np.float64)
    return np.asarray(mask_utils.iou(d, g, [0] * len(gts)), dtype=np.float64).reshape(len(dts), len(gts))


def score_pair(ious: np.ndarray) -> PairScore:
    """Match by maximum total IoU, then count matches reaching each threshold."""
    num_dt, num_gt = ious.shape
    rows, cols = linear_sum_assignment(-ious)
    matched = ious[rows, cols]
    tp = (matched[None, :] >= IOU_THRESHOLDS[:, None]).sum(axis=1)
    return PairScore(num_gt=num_gt, num_dt=num_dt, tp=tp.astype(np.int64))


def pick_oracle(scores: Sequence[PairScore]) -> PairScore:
    """The best outcome among annotators: a true negative if any, else the highest mean local F1."""
    negatives = [s for s in scores if s.is_true_negative]
    if negatives:
        return negatives[0]
    means = [float(s.local_f1.mean()) for s in scores]
    return scores[int(np.argmax(means))]  # argmax keeps the first on ties, as the reference


def _ratio(num: np.ndarray | float, den: np.ndarray | float, eps: float) -> np.ndarray | float:
    return num / (den + eps)


def _f1(precision: Any, recall: Any, eps: float) -> Any:
    return 2 * precision * recall / (precision + recall + eps)


def summarize(scores: Iterable[PairScore]) -> dict[str, float]:
    """Accumulate pair outcomes into cgF1 and its parts (the keys are listed in the module doc)."""
    t = len(IOU_THRESHOLDS)
    tp, fp, fn, pm_fp, macro_sum = (np.zeros(t) for _ in range(5))
    il_tp = il_fp = il_tn = il_fn = macro_count = 0
    for s in scores:
        il_tp += s.num_gt > 0 and s.num_dt > 0
        il_fp += s.num_gt == 0 and s.num_dt > 0
        il_tn += s.is_true_negative
        il_fn += s.num_gt > 0 and s.num_dt == 0
        tp += s.tp
        fp += s.num_dt - s.tp
        fn += s.num_gt - s.tp
        if s.num_gt > 0:  # "positive micro": false positives count on positive pairs only
            pm_fp += s.num_dt - s.tp
        if s.num_gt > 0 and s.num_dt > 0:
            macro_sum += s.local_f1
            macro_count += 1

    precision, recall = _ratio(tp, tp + fp, EPS), _ratio(tp, tp + fn, EPS)
    pm_precision = _ratio(tp, tp + pm_fp, EPS)
    pmf1 = _f1(pm_precision, recall, EPS)
    macro = macro_sum / macro_count if macro_count else np.zeros(t)

    il_precision, il_recall = _ratio(il_tp, il_tp + il_fp, IL_EPS), _ratio(il_tp, il_tp + il_fn, IL_EPS)
    denominator = float(il_tp + il_fp) * float(il_tp + il_fn) * float(il_tn + il_fp) * float(il_tn + il_fn)
    il_mcc = float(il_tp * il_tn - il_fp * il_fn) / (denominator**0.5 + IL_EPS)

    at50, at75 = 0, 5  # indices of IoU 0.5 and 0.75
    out = {
        "cgF1": il_mcc * float(pmf1.mean()),
        "cgF1@0.5": il_mcc * float(pmf1[at50]),
        "cgF1@0.75": il_mcc * float(pmf1[at75]),
        "IL_MCC": il_mcc,
        "pmF1": float(pmf1.mean()),
        "pmF1@0.5": float(pmf1[at50]),
        "pmF1@0.75": float(pmf1[at75]),
        "positive_micro_precision": float(pm_precision.mean()),
        "positive_macro_F1": float(macro.mean()),
        "cgF1_macro": il_mcc * float(macro.mean()),
        "precision": float(precision.mean()),
        "recall": float(recall.mean()),
        "F1": float(_f1(precision, recall, EPS).mean()),
        "IL_precision": il_precision,
        "IL_recall": il_recall,
        "IL_F1": _f1(il_precision, il_recall, IL_EPS),
        "IL_FPR": _ratio(il_fp, il_fp + il_tn, IL_EPS),
    }
    counts = {
        "IL_TP": il_tp,
        "IL_FP": il_fp,
        "IL_TN": il_tn,
        "IL_FN": il_fn,
        "num_pairs": il_tp + il_fp + il_tn + il_fn,
    }
    return {**{k: float(v) for k, v in out.items()}, **{k: int(v) for k, v in counts.items()}}


def eval_image_ids(gts: Sequence[Dataset]) -> list[Any]:
    """Images (pairs) of the first file that every annotator marks instance-exhaustive."""
    keep = set.intersection(*(gt.exhaustive_ids() for gt in gts))
    return [i for i in gts[0].images if i in keep]


def _item_of(ann: Mapping[str, Any], is_saco: bool) -> ItemId:
    return ann["image_id"] if is_saco else (ann["image_id"], ann["category_id"])


def group_by_item(anns: Iterable[Mapping[str, Any]], is_saco: bool) -> dict[ItemId, list[Mapping[str, Any]]]:
    """Annotations or predictions per evaluation pair."""
    groups: dict[ItemId, list[Mapping[str, Any]]] = {}
    for ann in anns:
        groups.setdefault(_item_of(ann, is_saco), []).append(ann)
    return groups


def _gt_by_item(gt: Dataset) -> dict[ItemId, list[Mapping[str, Any]]]:
    anns = (a for image_anns in gt.annotations.values() for a in image_anns if not a["iscrowd"])
    return group_by_item(anns, gt.is_saco)


def evaluate_cgf1(
    gts: Sequence[Dataset],
    predictions: Sequence[Mapping[str, Any]],
    iou_type: str = "segm",
    threshold: float = 0.5,
    image_ids: Sequence[Any] | None = None,
) -> dict[str, float]:
    """cgF1 of validated predictions against one or several annotators' ground truth.

    Args:
        gts: datasets from ``load_gts`` (same pairs); several means oracle evaluation.
        predictions: COCO result dicts from ``load_predictions`` / ``check_predictions``.
        iou_type: ``"segm"`` (mask IoU) or ``"bbox"``.
        threshold: score a prediction needs to count.
        image_ids: evaluate only these images (default all instance-exhaustive ones).
    """
    if iou_type not in ("segm", "bbox"):
        raise ValueError(f"iou_type must be 'segm' or 'bbox', got {iou_type!r}")
    if iou_type == "segm":
        require_masks(gts, predictions)
    ids = select_ids(eval_image_ids(gts), image_ids)
    if not ids:
        raise ValueError("no instance-exhaustive image-phrase pairs to evaluate")
    is_saco = gts[0].is_saco
    kept = group_by_item((p for p in predictions if p["score"] >= threshold), is_saco)
    annotators = [_gt_by_item(gt) for gt in gts]
    scores = []
    for item in gts[0].item_ids(ids):
        dts = kept.get(item, [])
        per_annotator = [score_pair(iou_matrix(dts, gt.get(item, []), iou_type)) for gt in annotators]
        scores.append(pick_oracle(per_annotator))
    return summarize(scores)
