"""Binary masks <-> COCO run-length encoding (compressed RLE, via pycocotools).

An RLE is ``{"size": [H, W], "counts": str}``, the form COCO result files store; ``counts`` given as
bytes or as an uncompressed list of run lengths is read too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils


def masks_to_rle(masks: torch.Tensor | np.ndarray) -> list[dict[str, Any]]:
    """Binary masks [N, H, W] (or one [H, W]) of any dtype (nonzero = foreground) -> N RLE dicts."""
    if isinstance(masks, torch.Tensor):
        masks = masks.detach().cpu().numpy()
    masks = np.asarray(masks)
    if masks.ndim == 2:
        masks = masks[None]
    if masks.ndim != 3:
        raise ValueError(f"masks must be [N, H, W] or [H, W], got shape {masks.shape}")
    # pycocotools wants column-major uint8 [H, W, N].
    fortran = np.asfortranarray((masks != 0).astype(np.uint8).transpose(1, 2, 0))
    rles = mask_utils.encode(fortran)
    return [{"size": [int(s) for s in r["size"]], "counts": r["counts"].decode("ascii")} for r in rles]


def _to_coco(rle: Mapping[str, Any]) -> dict[str, Any]:
    h, w = (int(s) for s in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, str):
        return {"size": [h, w], "counts": counts.encode("ascii")}
    if isinstance(counts, bytes):
        return {"size": [h, w], "counts": counts}
    counts = [int(c) for c in counts]  # uncompressed runs
    if sum(counts) != h * w:
        raise ValueError(f"uncompressed RLE runs sum to {sum(counts)}, expected H*W = {h * w}")
    return mask_utils.frPyObjects({"size": [h, w], "counts": counts}, h, w)


def rle_to_masks(rles: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> torch.Tensor:
    """RLE dict(s), all of one size -> bool masks [N, H, W]."""
    items = [rles] if isinstance(rles, Mapping) else list(rles)
    if not items:
        raise ValueError("no RLEs given")
    coco = [_to_coco(r) for r in items]
    if len({tuple(c["size"]) for c in coco}) != 1:
        raise ValueError("all RLEs must have the same size to stack into one tensor")
    decoded = mask_utils.decode(coco)  # [H, W, N] uint8, column-major
    return torch.from_numpy(np.ascontiguousarray(decoded.transpose(2, 0, 1))).bool()
