"""The run-level COCO files, merged from the per-image records.

``results.json`` is the COCO results format (a list of ``{"image_id", "category_id", "segmentation",
"bbox", "score"}``, bbox xywh in pixels, segmentation compressed RLE). ``images.json`` is a COCO
dataset without annotations (``images`` with id, file_name, width, height, and ``categories`` with
id and prompt), so ``COCO("images.json").loadRes("results.json")`` works as is, except when nothing
was found: pycocotools' ``loadRes`` raises IndexError on an empty list, and ``load_results`` does not.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .dataset import Prompts
from .inputs import ImageItem
from .writer import TMP_SUFFIX, atomic_write_json, record_path


@dataclass
class MergeReport:
    """What the merge found: records read, images without one, detections per prompt."""

    records: int = 0
    missing: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    stale_detections: int = 0
    detections_per_prompt: dict[str, int] = field(default_factory=dict)


def to_result(detection: dict[str, Any], image_id: int, category_id: int) -> dict[str, Any]:
    x1, y1, x2, y2 = detection["box"]
    return {
        "image_id": image_id,
        "category_id": category_id,
        "segmentation": detection["mask"],
        "bbox": [x1, y1, x2 - x1, y2 - y1],
        "score": detection["score"],
    }


def merge(out_dir: Path, items: Sequence[ImageItem], prompts: Prompts) -> MergeReport:
    """Read every item's record, in list order, and write ``results.json`` and ``images.json``.

    Ids come from the current list and prompts, not from the records, so a record left by an earlier
    run with other prompts cannot smuggle in wrong categories: its unknown prompts are counted as stale.
    """
    report = MergeReport()
    counts: Counter[str] = Counter({text: 0 for text in prompts.texts})
    categories = prompts.category_of()
    images: list[dict[str, Any]] = []
    results_path = out_dir / "results.json"
    tmp = results_path.with_name(f".results.json.{os.getpid()}{TMP_SUFFIX}")
    with open(tmp, "w", encoding="utf-8") as fh:
        # Streamed, one result per line: a million-image run must not hold all masks in memory.
        separator = "\n"
        fh.write("[")
        for item in items:
            record = _read_record(out_dir, item, report)
            images.append(_image_entry(item, record))
            for det in record["detections"] if record else []:
                if det["prompt"] not in categories:
                    report.stale_detections += 1
                    continue
                counts[det["prompt"]] += 1
                fh.write(separator + json.dumps(to_result(det, item.image_id, categories[det["prompt"]])))
                separator = ",\n"
        fh.write("\n]\n")
    os.replace(tmp, results_path)
    report.detections_per_prompt = dict(counts)
    _write_images(out_dir, images, prompts)
    return report


def _image_entry(item: ImageItem, record: dict[str, Any] | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"id": item.image_id, "file_name": item.path, "name": item.name}
    if record is not None:
        entry.update(width=record["width"], height=record["height"])
    return entry


def _read_record(out_dir: Path, item: ImageItem, report: MergeReport) -> dict[str, Any] | None:
    path = record_path(out_dir, item)
    try:
        with open(path, encoding="utf-8") as fh:
            record = json.load(fh)
    except FileNotFoundError:
        report.missing.append(item.path)
        return None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        report.unreadable.append(str(path))
        return None
    report.records += 1
    return record


def _write_images(out_dir: Path, images: list[dict[str, Any]], prompts: Prompts) -> None:
    categories = [{"id": cid, "name": text} for text, cid in zip(prompts.texts, prompts.category_ids, strict=True)]
    atomic_write_json(out_dir / "images.json", {"images": images, "categories": categories, "annotations": []})


def load_results(images: Any, results: str | os.PathLike | list[dict[str, Any]]) -> Any:
    """``images.loadRes(results)`` for a pycocotools ``COCO`` (``images.json`` or the dataset's own
    annotations), also when ``results`` is empty: pycocotools refuses an empty list (IndexError),
    while an empty result set is what a run that found nothing has, and ``COCOeval`` scores it.
    """
    from pycocotools.coco import COCO

    if isinstance(results, (str, os.PathLike)):
        with open(results, encoding="utf-8") as fh:
            results = json.load(fh)
    if results:
        return images.loadRes(results)
    empty = COCO()
    empty.dataset = {
        "images": list(images.dataset.get("images", [])),
        "categories": list(images.dataset.get("categories", [])),
        "annotations": [],
    }
    empty.createIndex()
    return empty
