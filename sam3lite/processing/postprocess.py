"""Model outputs -> detections, instance masks and semantic maps, with ``Sam3Processor``'s semantics.

``outputs`` is any object (or mapping) with ``pred_logits`` [B, Q], ``pred_boxes`` [B, Q, 4] (normalized
xyxy), ``presence_logits`` [B, 1] or None, ``pred_masks`` [B, Q, h, w] and ``semantic_seg`` [B, 1, h, w]
(mask logits). Scores are ``sigmoid(logit) * sigmoid(presence)``; a query is kept when its score is
strictly above ``threshold``, in query order (no NMS). ``target_sizes`` holds (height, width) per image;
one size is used for the whole batch (one image prompted with many texts).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

TargetSizes = Sequence[Sequence[int]] | torch.Tensor

# Kept masks are upsampled this many at a time, bounding the float32 intermediate to chunk * H * W.
_MASK_CHUNK = 16


class SemanticSegmentation(dict):
    """``{"segmentation", "segmentation_scores"}`` with attribute access, like the reference's output."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def _field(outputs: Any, name: str, required: bool = True) -> torch.Tensor | None:
    value = outputs.get(name) if isinstance(outputs, Mapping) else getattr(outputs, name, None)
    if value is None and required:
        raise ValueError(f"model outputs have no {name!r}")
    return value


def _target_sizes(target_sizes: TargetSizes | None, batch: int) -> list[tuple[int, int]] | None:
    """Per-item (height, width), broadcasting a single size over the batch."""
    if target_sizes is None:
        return None
    if isinstance(target_sizes, torch.Tensor):
        target_sizes = target_sizes.tolist()
    sizes = [(int(h), int(w)) for h, w in target_sizes]
    if len(sizes) == 1:
        sizes = sizes * batch
    if len(sizes) != batch:
        raise ValueError(f"got {len(sizes)} target sizes for a batch of {batch}; pass one per image or one for all")
    return sizes


def _scores(outputs: Any) -> torch.Tensor:
    """sigmoid(pred_logits) * sigmoid(presence_logits) -> [B, Q]."""
    scores = _field(outputs, "pred_logits").sigmoid()
    presence = _field(outputs, "presence_logits", required=False)
    if presence is not None:
        scores = scores * presence.sigmoid()
    return scores


def _scale_boxes(boxes: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
    """Normalized xyxy [N, 4] -> pixels of an image of (height, width) ``size``."""
    if size is None:
        return boxes
    h, w = size
    return boxes * torch.tensor([w, h, w, h], dtype=boxes.dtype, device=boxes.device)


def post_process_object_detection(
    outputs: Any, threshold: float = 0.3, target_sizes: TargetSizes | None = None
) -> list[dict[str, torch.Tensor]]:
    """Per image: ``scores`` [N] and ``boxes`` [N, 4] (xyxy; pixels if ``target_sizes`` else normalized)."""
    scores = _scores(outputs)
    boxes = _field(outputs, "pred_boxes")
    sizes = _target_sizes(target_sizes, scores.shape[0])
    results = []
    for i in range(scores.shape[0]):
        keep = scores[i] > threshold
        results.append({"scores": scores[i][keep], "boxes": _scale_boxes(boxes[i][keep], sizes and sizes[i])})
    return results


def post_process_instance_segmentation(
    outputs: Any,
    threshold: float = 0.3,
    mask_threshold: float = 0.5,
    target_sizes: TargetSizes | None = None,
    *,
    mask_dtype: torch.dtype = torch.long,
) -> list[dict[str, torch.Tensor]]:
    """Per image: ``scores`` [N], ``boxes`` [N, 4] and binary ``masks`` [N, H, W].

    Masks are sigmoid probabilities resized bilinearly (align_corners=False) to the target size, then
    ``> mask_threshold``; only kept queries are resized. Without ``target_sizes`` they stay at the
    model's mask resolution. ``mask_dtype`` defaults to int64 like the reference; ``torch.bool`` takes
    8x less memory.
    """
    scores = _scores(outputs)
    boxes = _field(outputs, "pred_boxes")
    mask_logits = _field(outputs, "pred_masks")
    sizes = _target_sizes(target_sizes, scores.shape[0])
    results = []
    for i in range(scores.shape[0]):
        keep = scores[i] > threshold
        probs = mask_logits[i][keep].sigmoid()  # [N, h, w]
        size = sizes[i] if sizes else None
        results.append(
            {
                "scores": scores[i][keep],
                "boxes": _scale_boxes(boxes[i][keep], size),
                "masks": binarize_masks(probs, size, mask_threshold, mask_dtype),
            }
        )
    return results


def binarize_masks(
    probs: torch.Tensor, size: tuple[int, int] | None, threshold: float, dtype: torch.dtype
) -> torch.Tensor:
    """[N, h, w] probabilities -> [N, H, W] of ``probs > threshold`` after a bilinear resize to ``size``.

    With no kept masks the result is [0, H, W] (the reference returns [0, h, w] there).
    """
    if size is None:
        return (probs > threshold).to(dtype)
    out = torch.empty(probs.shape[0], *size, dtype=dtype, device=probs.device)
    for start in range(0, probs.shape[0], _MASK_CHUNK):
        chunk = probs[None, start : start + _MASK_CHUNK]  # [1, n, h, w]; channels resize independently
        resized = F.interpolate(chunk, size=size, mode="bilinear", align_corners=False)[0]
        out[start : start + _MASK_CHUNK] = resized > threshold
    return out


def post_process_semantic_segmentation(
    outputs: Any,
    target_sizes: TargetSizes | None = None,
    threshold: float = 0.5,
    return_segmentation_scores: bool = False,
) -> list[torch.Tensor] | list[SemanticSegmentation]:
    """Per image: the binary map [H, W] int64 of ``sigmoid(semantic_seg) > threshold``.

    With ``return_segmentation_scores``, per image a ``SemanticSegmentation`` with ``segmentation``
    [H, W] and ``segmentation_scores`` [1, H, W] (the resized probabilities).
    """
    probs = _field(outputs, "semantic_seg").sigmoid()  # [B, 1, h, w]
    sizes = _target_sizes(target_sizes, probs.shape[0])
    results = []
    for i in range(probs.shape[0]):
        scores = probs[i]
        if sizes is not None:
            scores = F.interpolate(scores[None], size=sizes[i], mode="bilinear", align_corners=False)[0]
        results.append(SemanticSegmentation(segmentation=(scores[0] > threshold).long(), segmentation_scores=scores))
    if return_segmentation_scores:
        return results
    return [r["segmentation"] for r in results]
