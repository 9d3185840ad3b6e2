"""Overlay pictures: each instance's mask tinted in its own colour, its box, and "prompt score"."""

from __future__ import annotations

import colorsys
import functools
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ..predictor import PromptResult

MASK_ALPHA = 0.45
_GOLDEN = 0.618033988749895  # hue step: consecutive colours land far apart on the colour wheel


def colour(index: int) -> tuple[int, int, int]:
    """The ``index``-th of a sequence of well-separated, saturated colours."""
    hue = (0.12 + index * _GOLDEN) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


@functools.lru_cache(maxsize=8)
def label_font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)  # scalable where Pillow has FreeType
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


def draw_overlay(rgb: np.ndarray, results: Sequence[PromptResult]) -> Image.Image:
    """uint8 [H, W, 3] image + detections -> RGB picture with masks, boxes and labels.

    Where masks overlap, the later one (later prompt, lower-ranked query) is drawn on top.
    """
    instances = [(r.prompt, s, b) for r in results for s, b in zip(r.scores, r.boxes, strict=True)]
    colours = [colour(i) for i in range(len(instances))]
    picture = Image.fromarray(tint_masks(rgb, [r.masks for r in results], colours))
    draw = ImageDraw.Draw(picture)
    height, width = rgb.shape[:2]
    line = max(2, round(min(height, width) / 250))
    font = label_font(max(11, round(min(height, width) / 40)))
    for (prompt, score, box), tint in zip(instances, colours, strict=True):
        x1, y1, x2, y2 = (float(v) for v in box)
        draw.rectangle((x1, y1, x2, y2), outline=tint, width=line)
        draw_label(draw, (x1, y1), f"{prompt} {float(score):.2f}", tint, font, width)
    return picture


def tint_masks(rgb: np.ndarray, masks: Sequence[torch.Tensor], colours: list[tuple[int, int, int]]) -> np.ndarray:
    """Blend each pixel with the colour of the top-most mask covering it, in one pass over the image
    (blending mask by mask costs a full-image operation per instance)."""
    if not colours:
        return rgb
    top = torch.full(rgb.shape[:2], -1, dtype=torch.int64)  # index of the last mask covering each pixel
    # masks are torch tensors (PyTorch backend) or numpy arrays (ONNX backend)
    for i, mask in enumerate(m for group in masks for m in torch.as_tensor(group).cpu()):
        top.masked_fill_(mask, i)
    covered = (top >= 0).numpy()
    tint = np.asarray(colours, np.float32)[top.clamp(min=0).numpy()]
    blended = rgb.astype(np.float32) * (1 - MASK_ALPHA) + tint * MASK_ALPHA
    return np.where(covered[..., None], blended.round().clip(0, 255).astype(np.uint8), rgb)


def draw_label(draw: ImageDraw.ImageDraw, at: tuple[float, float], text: str, tint, font, image_width: int) -> None:
    """Text on a filled tab above the box corner (inside the image when the box touches the top)."""
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    w, h = right - left + 4, bottom - top + 4
    x = min(max(at[0], 0.0), max(0.0, image_width - w))
    y = at[1] - h if at[1] - h >= 0 else at[1]
    draw.rectangle((x, y, x + w, y + h), fill=tint)
    luminance = 0.299 * tint[0] + 0.587 * tint[1] + 0.114 * tint[2]
    draw.text((x + 2 - left, y + 2 - top), text, fill=(0, 0, 0) if luminance > 140 else (255, 255, 255), font=font)
