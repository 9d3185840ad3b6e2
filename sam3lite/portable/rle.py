"""Binary masks <-> COCO run-length encoding (compressed RLE, via pycocotools), on numpy arrays.

An RLE is ``{"size": [H, W], "counts": str}``, the form COCO result files store; ``counts`` given as
bytes or as an uncompressed list of run lengths is read too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils


def as_numpy(array: Any) -> np.ndarray:
    """A numpy array of ``array``; torch tensors (anything with ``detach``) are copied to the CPU first.

    Duck-typed so that this module never imports torch.
    """
    if hasattr(array, "detach"):
        array = array.detach().cpu().numpy()
    return np.asarray(array)


def masks_to_rle(masks: Any) -> list[dict[str, Any]]:
    """Binary masks [N, H, W] (or one [H, W]) of any dtype (nonzero = foreground) -> N RLE dicts."""
    masks = as_numpy(masks)
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


def rle_to_masks(rles: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> np.ndarray:
    """RLE dict(s), all of one size -> bool masks [N, H, W]."""
    items = [rles] if isinstance(rles, Mapping) else list(rles)
    if not items:
        raise ValueError("no RLEs given")
    coco = [_to_coco(r) for r in items]
    if len({tuple(c["size"]) for c in coco}) != 1:
        raise ValueError("all RLEs must have the same size to stack into one array")
    decoded = mask_utils.decode(coco)  # [H, W, N] uint8, column-major
    return np.ascontiguousarray(decoded.transpose(2, 0, 1)).astype(bool)
