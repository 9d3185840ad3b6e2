"""Object prompts ("segment *this* object") for ``Predictor.predict_object``: the result type and the
checks and coordinate changes that turn user input (pixels of the original image) into tracker input.

Two kinds of box exist and are kept apart by name: ``Predictor.predict(boxes=...)`` takes *exemplar*
boxes ("find everything like this", the detector); ``Predictor.predict_object(box=...)`` takes an
*object* box ("segment the object in this box", the tracker).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .processing.rle import masks_to_rle

POINT_LABELS = (0, 1)  # 0 negative (background), 1 positive (object) click
PAD_POINT_LABEL = -1  # "not a point": lets objects with fewer clicks share a batch


@dataclass
class ObjectResult:
    """One object's answer: K candidate masks (K = 3 with ``multimask_output``, else 1).

    masks: bool [K, H, W] at the original image size (logits > 0).
    iou_scores: float32 [K] the model's estimate of each mask's IoU.
    object_score_logit: > 0 when the model sees the object (a float).
    low_res_logits: float32 [K, h, w] mask logits (288² at full size): pass one back as ``mask_input``
        with more clicks to refine.
    """

    masks: torch.Tensor
    iou_scores: torch.Tensor
    object_score_logit: float
    low_res_logits: torch.Tensor

    @property
    def best(self) -> int:
        """Index of the mask with the highest predicted IoU."""
        return int(self.iou_scores.argmax())

    def __len__(self) -> int:
        return int(self.iou_scores.shape[0])

    def __repr__(self) -> str:
        h, w = self.masks.shape[-2:]
        scores = ", ".join(f"{s:.3f}" for s in self.iou_scores.tolist())
        return (
            f"ObjectResult({len(self)} masks of {h}x{w}, iou_scores=[{scores}], "
            f"object_score_logit={self.object_score_logit:.3f})"
        )

    def to_rle(self) -> list[dict[str, Any]]:
        """COCO compressed RLE per mask."""
        return masks_to_rle(self.masks)

    def to_dict(self) -> dict[str, Any]:
        """numpy arrays: ``masks``, ``iou_scores``, ``low_res_logits``; and ``object_score_logit``."""
        return {
            "masks": self.masks.cpu().numpy(),
            "iou_scores": self.iou_scores.cpu().numpy(),
            "object_score_logit": self.object_score_logit,
            "low_res_logits": self.low_res_logits.cpu().numpy(),
        }


@dataclass
class ObjectPrompt:
    """One object's prompt in model-input pixels: points [N, 2], labels [N], box [4] or None, mask_input
    [1, h, w] logits or None."""

    points: torch.Tensor | None
    labels: torch.Tensor | None
    box: torch.Tensor | None
    mask_input: torch.Tensor | None

    @property
    def signature(self) -> tuple[int, bool, bool]:
        """Objects with equal signatures run as one batch (no padding, so batching changes nothing)."""
        n = 0 if self.points is None else int(self.points.shape[0])
        return n, self.box is not None, self.mask_input is not None


def _as_tensor(name: str, value: Any, dtype: torch.dtype) -> torch.Tensor:
    try:
        tensor = torch.as_tensor(np.asarray(value.cpu() if isinstance(value, torch.Tensor) else value), dtype=dtype)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be numbers, got {type(value).__name__}") from err
    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    return tensor


def object_prompts(
    points: Any,
    point_labels: Any,
    box: Any,
    mask_input: Any,
    image_size: tuple[int, int],
    model_size: int,
    mask_size: int,
) -> tuple[list[ObjectPrompt], bool]:
    """User input -> one ``ObjectPrompt`` per object, and whether the call was batched.

    One object: points [N, 2], point_labels [N], box [4], mask_input [h, w]. Several: points [B, N, 2]
    (or a list of B [N_i, 2] arrays), point_labels likewise, box [B, 4], mask_input [B, h, w].
    Pixel coordinates of the original image (x, y), as in SAM's predictor; rescaled to the model input.
    """
    if (points is None) != (point_labels is None):
        raise ValueError("points and point_labels go together: one label (1 object, 0 background) per point")
    if points is None and box is None and mask_input is None:
        raise ValueError("predict_object needs points (with point_labels), a box, a mask_input, or several of them")
    point_list, label_list, batched_p = _per_object_points(points, point_labels)
    box_list, batched_b = _per_object_boxes(box)
    mask_list, batched_m = _per_object_masks(mask_input, mask_size)
    counts = {k: len(v) for k, v in (("points", point_list), ("box", box_list), ("mask_input", mask_list)) if v}
    if len(set(counts.values())) > 1:
        raise ValueError(f"points, box and mask_input describe different numbers of objects: {counts}")
    count = next(iter(counts.values()))
    height, width = image_size
    scale = torch.tensor([model_size / width, model_size / height])
    prompts = []
    for i in range(count):
        pts = None if not point_list else _check_points(point_list[i], label_list[i], width, height) * scale
        bx = None if not box_list else _check_box(box_list[i], width, height) * scale.repeat(2)
        prompts.append(
            ObjectPrompt(
                points=pts,
                labels=None if not label_list else label_list[i],
                box=bx,
                mask_input=None if not mask_list else mask_list[i],
            )
        )
    return prompts, batched_p or batched_b or batched_m


def _per_object_points(points: Any, labels: Any) -> tuple[list[torch.Tensor], list[torch.Tensor], bool]:
    if points is None:
        return [], [], False
    ragged = isinstance(points, (list, tuple)) and points and not np.isscalar(points[0]) and np.ndim(points[0]) == 2
    if ragged:
        if not isinstance(labels, (list, tuple)) or len(labels) != len(points):
            raise ValueError("point_labels must hold one label list per object, like points")
        pts = [_as_tensor(f"points[{i}]", p, torch.float32) for i, p in enumerate(points)]
        lbs = [_as_tensor(f"point_labels[{i}]", lb, torch.long) for i, lb in enumerate(labels)]
        return pts, lbs, True
    pts = _as_tensor("points", points, torch.float32)
    lbs = _as_tensor("point_labels", labels, torch.long)
    if pts.ndim == 2:
        return [pts], [lbs], False
    if pts.ndim == 3:
        if lbs.ndim != 2:
            raise ValueError(f"point_labels must be [B, N] for points [B, N, 2], got shape {list(lbs.shape)}")
        return list(pts), list(lbs), True
    raise ValueError(f"points must be [N, 2] (x, y pixels) or [B, N, 2] for B objects, got shape {list(pts.shape)}")


def _check_points(points: torch.Tensor, labels: torch.Tensor, width: int, height: int) -> torch.Tensor:
    if points.ndim != 2 or points.shape[-1] != 2 or points.shape[0] == 0:
        raise ValueError(f"points must be [N, 2] (x, y pixels) with N >= 1, got shape {list(points.shape)}")
    if labels.shape != points.shape[:1]:
        raise ValueError(
            f"point_labels must hold one label per point ({points.shape[0]}), got shape {list(labels.shape)}"
        )
    bad = sorted({int(v) for v in labels.tolist()} - {*POINT_LABELS, PAD_POINT_LABEL})
    if bad:
        raise ValueError(f"point_labels must be 1 (object), 0 (background) or {PAD_POINT_LABEL} (padding), got {bad}")
    outside = (points[:, 0] < 0) | (points[:, 0] > width) | (points[:, 1] < 0) | (points[:, 1] > height)
    if bool(outside.any()):
        x, y = points[outside][0].tolist()
        raise ValueError(f"points must lie inside the {width}x{height} image (x in [0, {width}], y in [0, {height}]); "
                         f"got ({x:g}, {y:g})")  # fmt: skip
    return points


def _per_object_boxes(box: Any) -> tuple[list[torch.Tensor], bool]:
    if box is None:
        return [], False
    boxes = _as_tensor("box", box, torch.float32)
    if boxes.ndim == 1:
        return [boxes], False
    if boxes.ndim == 2:
        return list(boxes), True
    raise ValueError(f"box must be [4] (x0, y0, x1, y1 pixels) or [B, 4], got shape {list(boxes.shape)}")


def _check_box(box: torch.Tensor, width: int, height: int) -> torch.Tensor:
    if box.shape != (4,):
        raise ValueError(f"box must be (x0, y0, x1, y1) in pixels, got shape {list(box.shape)}")
    x0, y0, x1, y1 = box.tolist()
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"box must have x1 > x0 and y1 > y0, got ({x0:g}, {y0:g}, {x1:g}, {y1:g})")
    if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
        raise ValueError(f"box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) lies outside the {width}x{height} image")
    return box.clamp(min=0).minimum(torch.tensor([width, height, width, height], dtype=box.dtype))


def _per_object_masks(mask_input: Any, size: int) -> tuple[list[torch.Tensor], bool]:
    if mask_input is None:
        return [], False
    masks = _as_tensor("mask_input", mask_input, torch.float32)
    if masks.ndim == 2:
        masks, batched = masks[None], False
    elif masks.ndim == 3:
        batched = True
    else:
        raise ValueError(
            f"mask_input must be [{size}, {size}] low-res logits or [B, {size}, {size}], got {list(masks.shape)}"
        )
    if tuple(masks.shape[-2:]) != (size, size):
        raise ValueError(
            f"mask_input must be {size}x{size} mask logits (an ObjectResult's low_res_logits[k]), "
            f"got {list(masks.shape)}"
        )
    return [m[None] for m in masks], batched


def upscale_masks(low_res: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """low_res [B, K, h, w] logits -> bool [B, K, H, W] at the image size (bilinear, logits > 0), as
    transformers' ``post_process_masks`` does."""
    return F.interpolate(low_res.float(), size=image_size, mode="bilinear", align_corners=False) > 0
