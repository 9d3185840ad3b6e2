"""Binary masks <-> COCO run-length encoding (compressed RLE, via pycocotools).

An RLE is ``{"size": [H, W], "counts": str}``, the form COCO result files store; ``counts`` given as
bytes or as an uncompressed list of run lengths is read too. The numpy implementation is
``sam3lite.portable.rle``; this module returns torch tensors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..portable import rle as _portable
from ..portable.rle import masks_to_rle

__all__ = ["masks_to_rle", "rle_to_masks"]


def rle_to_masks(rles: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> torch.Tensor:
    """RLE dict(s), all of one size -> bool masks [N, H, W]."""
    return torch.from_numpy(_portable.rle_to_masks(rles))
