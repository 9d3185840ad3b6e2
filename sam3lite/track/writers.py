"""Writing tracking results: per-frame COCO RLE lines, an overlay video, the summary.

``masks.jsonl``: one line per frame, in frame order::

    {"frame": 0, "objects": [{"id": 1, "score": 0.97, "rle": {"size": [H, W], "counts": "..."}}, ...]}

``overlay.mp4``: the video with every object's mask tinted in its colour and its id at the mask's
top-left corner (H.264 through PyAV; odd sizes are padded by one pixel, as the codec needs even ones).
Every file is written under a temporary name and renamed at the end, so a file that exists is complete.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..processing.rle import masks_to_rle
from ..segment.overlay import colour, draw_label, label_font, tint_masks

TMP_SUFFIX = ".sam3lite-tmp"


def temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")


def frame_record(frame: int, object_ids: list[int], masks: torch.Tensor, scores: torch.Tensor) -> dict[str, Any]:
    """One ``masks.jsonl`` line: every object's score and COCO RLE mask on ``frame``."""
    rles = masks_to_rle(masks) if len(object_ids) else []
    return {
        "frame": frame,
        "objects": [
            {"id": int(i), "score": round(float(s), 5), "rle": r}
            for i, s, r in zip(object_ids, scores.tolist(), rles, strict=True)
        ],
    }


class OverlayVideo:
    """An H.264 video of frames with tinted masks and object ids, written frame by frame."""

    def __init__(self, path: Path, size: tuple[int, int], fps: float | None) -> None:
        import av

        self.path, self._tmp = path, temporary(path)
        height, width = size
        self._pad = (height % 2, width % 2)
        self._container = av.open(str(self._tmp), "w", format="mp4")
        rate = round(fps or 30)
        self._stream = self._container.add_stream("libx264", rate=max(rate, 1))
        self._stream.width, self._stream.height = width + self._pad[1], height + self._pad[0]
        self._stream.pix_fmt = "yuv420p"
        self._stream.options = {"crf": "23", "preset": "veryfast"}

    def write(self, rgb: np.ndarray, object_ids: list[int], masks: torch.Tensor) -> None:
        import av

        colours = [colour(i - 1 if i > 0 else i) for i in object_ids]
        picture = Image.fromarray(tint_masks(rgb, [masks], colours))
        draw = ImageDraw.Draw(picture)
        font = label_font(max(11, round(min(rgb.shape[:2]) / 40)))
        for obj_id, mask, tint in zip(object_ids, masks, colours, strict=True):
            ys, xs = torch.nonzero(mask, as_tuple=True)
            if len(xs):
                draw_label(draw, (float(xs.min()), float(ys.min())), str(obj_id), tint, font, rgb.shape[1])
        image = np.asarray(picture)
        if any(self._pad):
            image = np.pad(image, ((0, self._pad[0]), (0, self._pad[1]), (0, 0)), mode="edge")
        for packet in self._stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
            self._container.mux(packet)

    def close(self) -> None:
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        try:
            self._container.close()
        finally:
            self._tmp.unlink(missing_ok=True)


class LinesFile:
    """``masks.jsonl`` written line by line under a temporary name, renamed on ``close``."""

    def __init__(self, path: Path) -> None:
        self.path, self._tmp = path, temporary(path)
        self._fh = open(self._tmp, "w", encoding="utf-8")  # noqa: SIM115 - closed by close()/abort()

    def write(self, record: dict[str, Any]) -> None:
        self._fh.write(json.dumps(record, separators=(",", ":")) + "\n")

    def close(self) -> None:
        self._fh.close()
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        self._fh.close()
        self._tmp.unlink(missing_ok=True)


def write_json(path: Path, data: Any) -> None:
    tmp = temporary(path)
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
