"""All metrics of one evaluation, and their text rendering.

The result is a json-friendly dict::

    {"pairs": 1234, "annotators": 3, "predictions": 5678,
     "cgF1": {"segm": {"cgF1": 0.61, "IL_MCC": 0.81, "pmF1": 0.76, ...}},
     "AP":   {"segm": {"AP": 0.45, "AP50": 0.66, ...}}}

with every value a fraction (the text report shows cgF1, pmF1 and AP x100, as papers do).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .cgf1 import eval_image_ids, evaluate_cgf1
from .coco_ap import evaluate_ap
from .io import Dataset, select_ids

METRICS = ("cgf1", "ap")
IOU_TYPES = ("segm", "bbox")


def evaluate(
    gts: Sequence[Dataset],
    predictions: Sequence[Mapping[str, Any]],
    metrics: Sequence[str] = METRICS,
    iou_types: Sequence[str] = ("segm",),
    threshold: float = 0.5,
    image_ids: Sequence[Any] | None = None,
) -> dict[str, Any]:
    """cgF1 (oracle over ``gts``) and/or COCO AP (first of ``gts``) for each IoU type.

    Args:
        gts: datasets from ``load_gts``.
        predictions: validated COCO result dicts.
        metrics: any of ``"cgf1"``, ``"ap"``.
        iou_types: any of ``"segm"``, ``"bbox"``.
        threshold: cgF1's score threshold.
        image_ids: restrict to these images / pairs (e.g. the part of a dataset that was run).
    """
    unknown = (set(metrics) - set(METRICS)) | (set(iou_types) - set(IOU_TYPES))
    if unknown:
        raise ValueError(f"unknown metric or iou type: {sorted(unknown)}")
    ids = select_ids(eval_image_ids(gts), image_ids)
    out: dict[str, Any] = {
        "pairs": len(gts[0].item_ids(ids)),
        "annotators": len(gts),
        "predictions": len(predictions),
    }
    if "cgf1" in metrics:
        out["cgF1"] = {t: evaluate_cgf1(gts, predictions, t, threshold, ids) for t in iou_types}
    if "ap" in metrics:
        out["AP"] = {t: evaluate_ap(gts[0], predictions, t, ids) for t in iou_types}
    return out


def _pct(value: float) -> str:
    return f"{100 * value:.2f}"


def format_report(result: Mapping[str, Any]) -> str:
    """Human-readable summary of ``evaluate``'s result."""
    oracle = f"{result['annotators']} annotators, oracle" if result["annotators"] > 1 else "1 annotator"
    lines = [f"{result['pairs']} image-phrase pairs ({oracle}), {result['predictions']} predictions"]
    for iou_type, m in result.get("cgF1", {}).items():
        lines.append(
            f"cgF1 [{iou_type}]  cgF1 {_pct(m['cgF1'])}  IL_MCC {m['IL_MCC']:.4f}  pmF1 {_pct(m['pmF1'])}"
            f"  cgF1@0.5 {_pct(m['cgF1@0.5'])}  cgF1@0.75 {_pct(m['cgF1@0.75'])}"
        )
        lines.append(
            f"             image level: TP {m['IL_TP']}  FP {m['IL_FP']}  TN {m['IL_TN']}  FN {m['IL_FN']}"
            f"  (positive macro F1 {_pct(m['positive_macro_F1'])})"
        )
    for iou_type, m in result.get("AP", {}).items():
        lines.append(f"AP   [{iou_type}]  " + "  ".join(f"{k} {_pct(v) if v >= 0 else 'n/a'}" for k, v in m.items()))
    return "\n".join(lines)
