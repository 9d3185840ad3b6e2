"""COCO average precision with pycocotools' ``COCOeval`` (mask or box IoU).

For a COCO-kind dataset this is the usual per-category AP. For an SA-Co dataset every image entry is
already one (image, phrase) pair, so categories are ignored (``useCats = 0``): a prediction on a
negative pair is a false positive, and AP is computed over all pairs at once. With several
annotators, AP uses the first file only (the SA-Co oracle protocol is defined for cgF1 alone).
"""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Mapping, Sequence
from typing import Any

from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from .io import Dataset, require_masks, select_ids

# The 12 numbers of COCOeval.summarize(), in its order. -1 means "undefined" (no ground truth).
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def _coco(dataset: Mapping[str, Any]) -> COCO:
    coco = COCO()
    coco.dataset = dict(dataset)
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco.createIndex()
    return coco


def _results(gt: COCO, predictions: Sequence[Mapping[str, Any]], iou_type: str) -> COCO:
    preds = copy.deepcopy(list(predictions))  # loadRes writes ids and areas into its input
    if iou_type == "segm":
        # Without a bbox, loadRes takes each result's area from its mask rather than its box, which
        # is what the area ranges (small / medium / large) of mask AP should use (as detectron2 does).
        for pred in preds:
            pred.pop("bbox", None)
    if not preds:  # loadRes cannot read an empty list
        return _coco({"images": gt.dataset["images"], "categories": gt.dataset["categories"], "annotations": []})
    with contextlib.redirect_stdout(io.StringIO()):
        return gt.loadRes(preds)


def evaluate_ap(
    gt: Dataset,
    predictions: Sequence[Mapping[str, Any]],
    iou_type: str = "segm",
    image_ids: Sequence[Any] | None = None,
) -> dict[str, float]:
    """COCO AP/AR (``STAT_NAMES``, fractions) of validated predictions against ``gt``.

    Args:
        gt: dataset from ``load_gt``.
        predictions: COCO result dicts from ``load_predictions`` / ``check_predictions``.
        iou_type: ``"segm"`` or ``"bbox"``.
        image_ids: evaluate only these images (default all instance-exhaustive ones).
    """
    if iou_type not in ("segm", "bbox"):
        raise ValueError(f"iou_type must be 'segm' or 'bbox', got {iou_type!r}")
    if iou_type == "segm":
        require_masks([gt], predictions)
    exhaustive = gt.exhaustive_ids()
    ids = select_ids([i for i in gt.images if i in exhaustive], image_ids)
    if not ids:
        raise ValueError("no instance-exhaustive images to evaluate")
    coco_gt = _coco(copy.deepcopy(gt.coco_dict()))  # COCOeval writes 'ignore' flags into it
    coco_dt = _results(coco_gt, predictions, iou_type)
    evaluator = COCOeval(coco_gt, coco_dt, iouType=iou_type)
    evaluator.params.useCats = 0 if gt.is_saco else 1
    evaluator.params.imgIds = ids
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: float(value) for name, value in zip(STAT_NAMES, evaluator.stats, strict=True)}
