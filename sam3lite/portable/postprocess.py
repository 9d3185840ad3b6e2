"""Model outputs -> instances with numpy: scores, boxes in pixels, masks resized to the image.

The same semantics as ``sam3lite.processing.postprocess`` (the reference's): score =
sigmoid(logit) * sigmoid(presence), a query is kept when its score is strictly above the threshold
(query order, no NMS), boxes are scaled by (W, H, W, H), and masks are sigmoid probabilities
resized bilinearly with ``align_corners=False`` (PyTorch's ``F.interpolate``) and then thresholded.
"""

from __future__ import annotations

import numpy as np

# Kept masks are resized this many at a time, bounding the float32 intermediates to chunk * H * W.
MASK_CHUNK = 16


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function in float32, without overflow warnings for large negative inputs."""
    x = np.asarray(x, dtype=np.float32)
    out = np.empty_like(x)
    positive = x >= 0
    out[positive] = 1 / (1 + np.exp(-x[positive]))
    e = np.exp(x[~positive])
    out[~positive] = e / (1 + e)
    return out


def _source_index(out_size: int, in_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per output index: the two input indices and the weight of the second (PyTorch's rule)."""
    scale = np.float32(in_size / out_size)
    src = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    src = np.maximum(src, 0)
    low = src.astype(np.int64)  # floor, src >= 0
    high = np.minimum(low + 1, in_size - 1)
    return low, high, (src - low).astype(np.float32)


def resize_bilinear(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """[N, h, w] float32 -> [N, H, W] by bilinear interpolation with ``align_corners=False``."""
    height, width = size
    top, bottom, wy = _source_index(height, maps.shape[-2])
    left, right, wx = _source_index(width, maps.shape[-1])
    rows = maps[:, top, :] * (1 - wy)[:, None] + maps[:, bottom, :] * wy[:, None]  # (N, H, w)
    return rows[:, :, left] * (1 - wx) + rows[:, :, right] * wx


def binarize_masks(probs: np.ndarray, size: tuple[int, int], threshold: float) -> np.ndarray:
    """[N, h, w] probabilities -> bool [N, H, W] of ``probs > threshold`` after the bilinear resize."""
    out = np.empty((probs.shape[0], *size), dtype=bool)
    for start in range(0, probs.shape[0], MASK_CHUNK):
        out[start : start + MASK_CHUNK] = resize_bilinear(probs[start : start + MASK_CHUNK], size) > threshold
    return out


def instances(
    logits: np.ndarray,
    boxes: np.ndarray,
    presence: np.ndarray,
    mask_logits: np.ndarray,
    size: tuple[int, int],
    threshold: float,
    mask_threshold: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One prompt's outputs -> (masks bool [N, H, W], boxes [N, 4] pixel xyxy, scores [N]).

    Args:
        logits: [Q] query logits; boxes: [Q, 4] normalized xyxy; presence: [1] presence logit;
        mask_logits: [Q, h, w]; size: the image's (height, width).
    """
    scores = sigmoid(logits) * sigmoid(presence)
    keep = np.flatnonzero(scores > threshold)
    height, width = size
    scale = np.array([width, height, width, height], dtype=np.float32)
    masks = binarize_masks(sigmoid(mask_logits[keep]), size, mask_threshold)
    return masks, boxes[keep].astype(np.float32) * scale, scores[keep].astype(np.float32)
