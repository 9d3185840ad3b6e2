"""Output files: atomic writes, what counts as done, the per-image record, the error log.

Layout of the output folder ``DIR``::

    DIR/<name>.json          per image: {"image", "image_id", "width", "height", "detections": [...]}
    DIR/<name>.overlay.png   per image, unless --no-overlay
    DIR/results.json         COCO results of the whole run (rank 0 writes it at the end)
    DIR/images.json          COCO images + categories: image_id -> file, category_id -> prompt
    DIR/summary.json         counts and speed
    DIR/errors.jsonl         one line per image that failed in the latest run
    DIR/run.json             the settings that made the outputs; DIR/manifest.txt: the names written
                             (see ``outdir``: whose folder and files these are)

Every file is written to a hidden temporary name and renamed into place, so a file that exists is
complete; the per-image json is written after the overlay, so its presence marks the image done.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from ..predictor import PromptResult
from .dataset import Prompts
from .inputs import OVERLAY_SUFFIX, ImageItem

RUN_FILES = ("results.json", "images.json", "summary.json", "errors.jsonl")
TMP_SUFFIX = ".sam3lite-tmp"


def record_path(out_dir: Path, item: ImageItem) -> Path:
    return out_dir / f"{item.name}.json"


def overlay_path(out_dir: Path, item: ImageItem) -> Path:
    return out_dir / f"{item.name}{OVERLAY_SUFFIX}"


def output_paths(out_dir: Path, items: Iterable[ImageItem], overlay: bool) -> list[Path]:
    """Every file the run may write."""
    paths = [out_dir / name for name in (*RUN_FILES, "run.json", "manifest.txt")]
    for item in items:
        paths.append(record_path(out_dir, item))
        if overlay:
            paths.append(overlay_path(out_dir, item))
    return paths


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path``, then rename: readers never see a partial file.

    No fsync: the rename is atomic against a killed process, which is the failure that matters here;
    after a power cut a rerun redoes whatever the OS had not flushed.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, value: Any) -> None:
    atomic_write(path, (json.dumps(value) + "\n").encode("utf-8"))


def remove_stale_temporaries(out_dir: Path) -> int:
    """Delete temporary files a killed run left behind; returns how many."""
    removed = 0
    for entry in os.scandir(out_dir):
        if entry.name.startswith(".") and entry.name.endswith(TMP_SUFFIX):
            Path(entry.path).unlink(missing_ok=True)
            removed += 1
    return removed


def done_mask(out_dir: Path, items: Sequence[ImageItem], overlay: bool) -> list[bool]:
    """Which items already have complete outputs (one directory listing, not a stat per image)."""
    present = set(os.listdir(out_dir)) if out_dir.is_dir() else set()
    return [
        record_path(out_dir, item).name in present and (not overlay or overlay_path(out_dir, item).name in present)
        for item in items
    ]


# ----------------------------------------------------------------------------------------------
# Per-image record
# ----------------------------------------------------------------------------------------------


def image_record(
    item: ImageItem, size: tuple[int, int], results: Sequence[PromptResult], prompts: Prompts
) -> dict[str, Any]:
    """The per-image json: detections of every prompt, in prompt order, each in decreasing model order."""
    categories = prompts.category_of()
    detections = []
    for result in results:
        rles = result.to_rle()
        boxes = result.boxes.tolist()
        for score, box, rle in zip(result.scores.tolist(), boxes, rles, strict=True):
            detections.append(
                {
                    "prompt": result.prompt,
                    "category_id": categories[result.prompt],
                    "score": score,
                    "box": box,
                    "mask": rle,
                }
            )
    height, width = size
    return {"image": item.path, "image_id": item.image_id, "width": width, "height": height, "detections": detections}


def write_image_outputs(out_dir: Path, item: ImageItem, record: dict[str, Any], overlay: Image.Image | None) -> None:
    """Overlay first, record last: the record's presence means both are complete."""
    if overlay is not None:
        buffer = io.BytesIO()
        overlay.save(buffer, format="PNG", compress_level=1)  # previews: speed over size
        atomic_write(overlay_path(out_dir, item), buffer.getvalue())
    atomic_write_json(record_path(out_dir, item), record)


class ErrorLog:
    """``errors.jsonl``: one json line per failed image, appended by every rank.

    Each line goes out in one ``write`` on an ``O_APPEND`` descriptor, which local file systems
    apply atomically, so lines from different ranks do not interleave.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def reset(self) -> None:
        self.path.write_text("")

    def append(self, entry: dict[str, Any]) -> None:
        line = (json.dumps(entry) + "\n").encode("utf-8")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
