"""Box prompts without torch: checking one pixel box and converting a list to the model's convention.

The model takes boxes normalized by the image size as (cx, cy, w, h) with labels 1 (positive) or 0
(negative); padding rows carry the label -10. ``sam3lite.processing.prepare_boxes`` (batches,
torch) checks each box with ``check_box``; the ONNX runtime uses ``normalize_boxes``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

BOX_PAD = -10  # padding value of input_boxes / input_boxes_labels, as the models expect


def check_box(
    box: Any, label: Any, width: float, height: float, where: str, label_where: str | None = None
) -> tuple[tuple[float, ...], bool]:
    """One pixel box (x1, y1, x2, y2) and its label -> the box clipped to the image, and whether it was.

    Raises:
        ValueError: not 4 finite numbers with x2 > x1 and y2 > y1, a label other than 0 / 1, or a box
            entirely outside the ``width`` x ``height`` image. ``where`` (``label_where``) names the box
            (its label) in the message.
    """
    if not isinstance(box, (list, tuple, np.ndarray)) or len(box) != 4:
        raise ValueError(f"{where} must be 4 numbers (x1, y1, x2, y2), got {box!r}")
    try:
        x1, y1, x2, y2 = (float(v) for v in box)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where} must be 4 numbers (x1, y1, x2, y2), got {box!r}") from err
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        raise ValueError(f"{where} has non-finite coordinates: {box!r}")
    if not (x2 > x1 and y2 > y1):
        raise ValueError(f"{where} = {box!r} is not x1, y1, x2, y2 with x2 > x1 and y2 > y1")
    if label not in (0, 1):
        label_where = label_where or f"the label of {where}"
        raise ValueError(f"{label_where} must be 1 (positive) or 0 (negative), got {label!r}")
    inside = (min(max(x1, 0.0), width), min(max(y1, 0.0), height))
    inside += (min(max(x2, 0.0), width), min(max(y2, 0.0), height))
    if inside != (x1, y1, x2, y2) and not (inside[2] > inside[0] and inside[3] > inside[1]):
        raise ValueError(f"{where} = {box!r} lies outside the {width}x{height} image")
    return inside, inside != (x1, y1, x2, y2)


def xyxy_to_cxcywh(xyxy: np.ndarray) -> np.ndarray:
    """[..., 4] (x1, y1, x2, y2) -> [..., 4] (cx, cy, w, h), float32."""
    x1, y1, x2, y2 = np.moveaxis(xyxy.astype(np.float32), -1, 0)
    return np.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], axis=-1)


def normalize_boxes(
    boxes: Sequence[Sequence[float]], labels: Sequence[int] | None, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Pixel xyxy boxes of one image of (height, width) ``size`` -> normalized cxcywh [N, 4] float32
    and labels [N] int64 (default 1). Boxes reaching outside the image are clipped, with a warning."""
    if labels is not None and len(labels) != len(boxes):
        raise ValueError(f"got {len(boxes)} boxes but {len(labels)} box labels")
    height, width = size
    xyxy = np.zeros((len(boxes), 4), dtype=np.float32)
    clipped = []
    for k, box in enumerate(boxes):
        label = 1 if labels is None else labels[k]
        xyxy[k], was_clipped = check_box(box, label, width, height, f"boxes[{k}]")
        if was_clipped:
            clipped.append(f"boxes[{k}]")
    if clipped:
        warnings.warn(f"{len(clipped)} box(es) extend outside the image and were clipped: {clipped}", stacklevel=3)
    scale = np.array([width, height, width, height], dtype=np.float32)
    out_labels = np.array([1] * len(boxes) if labels is None else [int(v) for v in labels], dtype=np.int64)
    return xyxy_to_cxcywh(xyxy / scale), out_labels
