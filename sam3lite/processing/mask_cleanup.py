"""Clean-up of mask logits for text-prompted video: mask NMS, hole filling, speck removal.

SAM3's detect-and-track loop runs these on every frame (transformers takes them from a kernel package it
downloads, and skips them when that fails). Here they are plain tensor code:

- ``mask_iou``: IoU of every pair of binary masks, one matrix product (exact: pixel counts stay far
  below float32's 2**24 integer limit).
- ``mask_nms``: greedy non-maximum suppression of detections by mask IoU.
- ``component_areas``: the area of each pixel's connected component (8-connectivity). On the CPU
  through ``scipy.ndimage.label``; on other devices by label propagation (3x3 max-pooling of pixel
  indices plus pointer jumping), vectorised over the batch, so masks never leave the GPU.
- ``fill_holes`` / ``remove_specks`` / ``clean_masks``: background components of at most ``max_area``
  pixels become foreground (logit 0.1); foreground components of at most min(``max_area``, half the
  mask's area) become background (logit -0.1). The "half" keeps a tiny object from erasing itself.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

HOLE_LOGIT, SPECK_LOGIT = 0.1, -0.1  # what a filled hole / a removed speck becomes (just past the mask threshold)


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """bool masks a [N, H, W], b [M, H, W] -> IoU [N, M] float32 (0 where both are empty)."""
    fa, fb = a.flatten(1).float(), b.flatten(1).float()
    inter = fa @ fb.T
    union = fa.sum(1)[:, None] + fb.sum(1)[None] - inter
    return inter / union.clamp(min=1)


def mask_nms(scores: torch.Tensor, mask_logits: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS: scores [N], mask logits [N, H, W] -> keep [N] bool.

    The best-scoring detection is kept, every other one whose mask IoU with it exceeds ``iou_threshold``
    is dropped, and so on down the list (ties keep the earlier detection first).
    """
    count = scores.shape[0]
    if count <= 1:
        return torch.ones(count, dtype=torch.bool, device=scores.device)
    overlaps = (mask_iou(mask_logits > 0, mask_logits > 0) > iou_threshold).cpu()
    order = torch.sort(scores.float().cpu(), descending=True, stable=True).indices
    keep = torch.zeros(count, dtype=torch.bool)
    suppressed = torch.zeros(count, dtype=torch.bool)
    for i in order.tolist():
        if suppressed[i]:
            continue
        keep[i] = True
        suppressed |= overlaps[i]
    return keep.to(scores.device)


def component_areas(masks: torch.Tensor) -> torch.Tensor:
    """bool masks [N, H, W] -> int32 [N, H, W]: the pixel count of each pixel's 8-connected component
    (0 outside the masks)."""
    if masks.ndim != 3:
        raise ValueError(f"masks must be [N, H, W], got {list(masks.shape)}")
    if masks.device.type == "cpu":
        return _areas_scipy(masks)
    return _areas_torch(masks)


def _areas_scipy(masks: torch.Tensor) -> torch.Tensor:
    from scipy import ndimage

    structure = np.ones((3, 3), dtype=bool)
    out = np.zeros(masks.shape, dtype=np.int32)
    for i, mask in enumerate(masks.numpy()):
        labels, count = ndimage.label(mask, structure=structure)
        if count:
            sizes = np.bincount(labels.ravel()).astype(np.int32)
            sizes[0] = 0
            out[i] = sizes[labels]
    return torch.from_numpy(out)


def _areas_torch(masks: torch.Tensor) -> torch.Tensor:
    """Label propagation: every pixel starts with its own index (1..H*W, exact in float32 up to 2**24
    pixels per mask); each round takes the largest index in its 3x3 neighbourhood, then jumps to the
    label of the pixel its label names (which only grows, staying inside the component), until nothing
    changes. Each component ends labelled with its largest pixel index."""
    n, h, w = masks.shape
    if h * w >= 2**24:
        raise ValueError(f"masks of {h}x{w} pixels are too large for exact float32 labels")
    fg = masks.bool()
    index = torch.arange(1, h * w + 1, device=masks.device, dtype=torch.float32).view(1, h, w)
    labels = torch.where(fg, index, 0.0)
    while True:
        pooled = F.max_pool2d(labels[:, None], kernel_size=3, stride=1, padding=1)[:, 0]
        grown = torch.where(fg, pooled, 0.0)
        flat = grown.flatten(1)
        for _ in range(4):  # pointer jumping: a label names a pixel; take that pixel's label
            target = flat.gather(1, (flat.long() - 1).clamp(min=0))
            flat = torch.where(flat > 0, torch.maximum(flat, target), flat)
        grown = flat.view(n, h, w)
        if torch.equal(grown, labels):
            break
        labels = grown
    ids = labels.long().flatten(1)
    offsets = torch.arange(n, device=masks.device)[:, None] * (h * w + 1)
    counts = torch.bincount((ids + offsets).flatten(), minlength=n * (h * w + 1))
    areas = counts[ids + offsets].view(n, h, w)
    return torch.where(fg, areas, 0).to(torch.int32)


def fill_holes(logits: torch.Tensor, max_area: int) -> torch.Tensor:
    """logits [N, H, W]: background components of at most ``max_area`` pixels become ``HOLE_LOGIT``."""
    if max_area <= 0 or logits.numel() == 0:
        return logits
    background = logits <= 0
    small = background & (component_areas(background) <= max_area)
    return torch.where(small, torch.tensor(HOLE_LOGIT, dtype=logits.dtype, device=logits.device), logits)


def remove_specks(logits: torch.Tensor, max_area: int) -> torch.Tensor:
    """logits [N, H, W]: foreground components of at most min(``max_area``, half the mask's foreground)
    pixels become ``SPECK_LOGIT``."""
    if max_area <= 0 or logits.numel() == 0:
        return logits
    foreground = logits > 0
    limit = (foreground.flatten(1).sum(1) // 2).clamp(max=max_area).view(-1, 1, 1)
    small = foreground & (component_areas(foreground) <= limit)
    return torch.where(small, torch.tensor(SPECK_LOGIT, dtype=logits.dtype, device=logits.device), logits)


def clean_masks(logits: torch.Tensor, max_area: int) -> torch.Tensor:
    """Holes filled, then specks removed (SAM3's order), on mask logits [N, H, W]."""
    return remove_specks(fill_holes(logits, max_area), max_area)
