"""Masks -> the wire formats: COCO RLE (exact), polygons (outer contours), 1-bit PNG.

Polygons come from OpenCV's ``findContours`` (``opencv-python-headless``, in the ``serve`` extra): the
tool COCO-style pipelines (detectron2, the SAM notebooks) use, a numpy-only wheel, and fast C++. The
alternative, scikit-image's marching squares, pulls in scipy and more for sub-pixel isolines nobody asked
for. Coordinates follow detectron2: integer pixel indices + 0.5, so pycocotools rasterizes them back onto
the mask.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import cv2
import numpy as np
import PIL.Image

from ..processing.rle import masks_to_rle


def encode_masks(masks: np.ndarray, output: str) -> list[dict[str, Any]]:
    """bool [N, H, W] -> N dicts with one key, ``rle`` / ``polygons`` / ``png``."""
    if output == "rle":
        return [{"rle": rle} for rle in masks_to_rle(masks)] if len(masks) else []
    if output == "polygons":
        return [{"polygons": mask_to_polygons(m)} for m in masks]
    if output == "png":
        return [{"png": mask_to_png(m)} for m in masks]
    raise ValueError(f"unknown output {output!r}")


def mask_to_polygons(mask: np.ndarray) -> list[list[float]]:
    """Outer boundary of each connected region as a flat [x0, y0, x1, y1, ...] list (>= 3 points)."""
    contours, _ = cv2.findContours(
        np.ascontiguousarray(mask, dtype=np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
    )
    return [(c.reshape(-1).astype(np.float64) + 0.5).tolist() for c in contours if len(c) >= 3]


def mask_to_png(mask: np.ndarray) -> str:
    """base64 PNG of one mask, mode '1' (1 bit per pixel: a few kB for most masks)."""
    buffer = io.BytesIO()
    PIL.Image.fromarray(np.ascontiguousarray(mask, dtype=bool)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")
