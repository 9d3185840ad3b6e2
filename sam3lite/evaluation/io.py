"""Reading and validating ground-truth and prediction files (COCO json, SA-Co flavour).

Ground truth: a COCO-style json ``{"images": [...], "annotations": [...], "categories": [...]}`` of
one of two kinds, told apart by whether the image entries carry a ``text_input``:

- **SA-Co** (SA-Co/Gold, Silver, Bronze): every ``images`` entry is an (image, noun phrase) *pair*:
  ``{"id", "file_name", "height", "width", "text_input": "the fish ball",
  "is_instance_exhaustive": 1, ...}``; several pairs share one ``file_name``. ``annotations`` are the
  instance masks of a pair (``image_id`` = pair id, ``segmentation`` as RLE, ``iscrowd``); a pair with
  no annotation is a *negative* phrase. ``categories`` exist only for COCO compatibility and are
  ignored. SA-Co stores ``bbox`` and ``area`` normalized to [0, 1]: both are recomputed in pixels
  from the mask (or, for a box-only annotation, the box is scaled by the image size).
- **COCO** (plain detection datasets): no ``text_input``; each category ``name`` is the prompt, every
  (image, category) is a pair, exhaustively annotated.

Pairs whose ``is_instance_exhaustive`` is false (missing means true) are left out of evaluation, as
SA-Co's evaluator does. Several ground-truth files of one benchmark (SA-Co/Gold's annotators a, b,
c) must list the same pair ids.

Predictions: a COCO results list, one dict per instance: ``{"image_id", "category_id", "score",
"segmentation": RLE, "bbox": [x, y, w, h]}`` in pixels. ``category_id`` is ignored for SA-Co;
``segmentation`` is needed for mask metrics, ``bbox`` for box metrics (derived from the mask when
absent).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pycocotools import mask as mask_utils

ItemId = Hashable  # a pair: SA-Co image id, or (image id, category id) for COCO


@dataclass
class Dataset:
    """A validated ground-truth file, annotations normalized to pixel boxes and string-count RLE.

    Attributes:
        path: where it was read from (for messages).
        images: id -> image entry, in file order.
        categories: id -> category entry.
        annotations: image id -> its annotations (crowd ones included).
        is_saco: pairs are images (``text_input``) rather than (image, category).
    """

    path: str
    images: dict[Any, dict[str, Any]]
    categories: dict[Any, dict[str, Any]]
    annotations: dict[Any, list[dict[str, Any]]] = field(default_factory=dict)
    is_saco: bool = False

    def coco_dict(self) -> dict[str, Any]:
        """The normalized dataset as a COCO json dict (what pycocotools' ``COCO`` indexes)."""
        anns = [ann for image_id in self.images for ann in self.annotations.get(image_id, [])]
        return {"images": list(self.images.values()), "annotations": anns, "categories": list(self.categories.values())}

    def exhaustive_ids(self) -> set[Any]:
        """Image ids annotated instance-exhaustively (a missing flag counts as exhaustive)."""
        return {i for i, img in self.images.items() if bool(img.get("is_instance_exhaustive", True))}

    def item_ids(self, image_ids: Sequence[Any]) -> list[ItemId]:
        """Evaluation pairs of the given images: the ids themselves (SA-Co) or (image, category)."""
        if self.is_saco:
            return list(image_ids)
        return [(i, c) for i in image_ids for c in self.categories]


def read_json(path: str | os.PathLike) -> Any:
    """Parse a json file; a missing file or bad json becomes FileNotFoundError / ValueError."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    try:
        with path.open(encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid json ({err})") from err


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write json atomically (temp file + rename), so an interrupted run never leaves half a file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


def to_rle(segmentation: Any, height: int, width: int) -> dict[str, Any]:
    """Polygons, uncompressed or compressed RLE -> ``{"size": [h, w], "counts": str}``."""
    if isinstance(segmentation, list):  # polygons [[x0, y0, x1, y1, ...], ...]
        if not segmentation or not all(isinstance(p, list) and len(p) >= 6 for p in segmentation):
            raise ValueError("polygon segmentation needs lists of at least 3 (x, y) points")
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation, Mapping) and "counts" in segmentation and "size" in segmentation:
        size = [int(s) for s in segmentation["size"]]
        if size != [height, width]:
            raise ValueError(f"RLE size {size} differs from the image size [{height}, {width}]")
        counts = segmentation["counts"]
        if isinstance(counts, list):
            if sum(counts) != height * width:
                raise ValueError(f"uncompressed RLE runs sum to {sum(counts)}, expected {height * width}")
            rle = mask_utils.frPyObjects({"size": size, "counts": counts}, height, width)
        elif isinstance(counts, (str, bytes)):
            rle = {"size": size, "counts": counts}
        else:
            raise ValueError(f"RLE counts must be a string or a list, got {type(counts).__name__}")
    else:
        raise ValueError("segmentation must be an RLE dict {size, counts} or a list of polygons")
    counts = rle["counts"]
    return {"size": [height, width], "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}


def _check_box(bbox: Any) -> list[float]:
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        raise ValueError(f"bbox must be [x, y, w, h], got {bbox!r}")
    box = [float(v) for v in bbox]
    if not math.isfinite(sum(box)) or box[2] < 0 or box[3] < 0:  # a finite sum has no inf or nan term
        raise ValueError(f"bbox must be finite [x, y, w, h] with w, h >= 0, got {bbox!r}")
    return box


def _image_size(image: Mapping[str, Any], where: str) -> tuple[int, int]:
    try:
        height, width = int(image["height"]), int(image["width"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{where}: image {image.get('id')!r} needs integer 'height' and 'width'") from None
    if height <= 0 or width <= 0:
        raise ValueError(f"{where}: image {image.get('id')!r} has a non-positive size")
    return height, width


def _normalize_annotation(ann: Mapping[str, Any], image: Mapping[str, Any], is_saco: bool) -> dict[str, Any]:
    """A GT annotation with an RLE ``segmentation`` (when it has one), pixel ``bbox`` and ``area``."""
    height, width = _image_size(image, "annotation")
    out = dict(ann)
    out["iscrowd"] = int(bool(ann.get("iscrowd", 0)))
    if ann.get("segmentation") is not None:
        out["segmentation"] = to_rle(ann["segmentation"], height, width)
        # SA-Co's bbox/area are normalized; the mask gives them in pixels, as pycocotools needs.
        if is_saco or "bbox" not in ann:
            out["bbox"] = [float(v) for v in mask_utils.toBbox(out["segmentation"])]
        if is_saco or "area" not in ann:
            out["area"] = float(mask_utils.area(out["segmentation"]))
    elif "bbox" in ann:
        out.pop("segmentation", None)
        box = _check_box(ann["bbox"])
        if is_saco and max(box) <= 1.0:  # normalized box
            box = [box[0] * width, box[1] * height, box[2] * width, box[3] * height]
        out["bbox"] = box
        out["area"] = box[2] * box[3]
    else:
        raise ValueError("an annotation needs a 'segmentation' or a 'bbox'")
    out["bbox"] = _check_box(out["bbox"])
    return out


def _index_images(data: Mapping[str, Any], where: str) -> dict[Any, dict[str, Any]]:
    images = data.get("images")
    if not isinstance(images, list) or not images:
        raise ValueError(f"{where}: 'images' must be a non-empty list")
    by_id: dict[Any, dict[str, Any]] = {}
    for image in images:
        if not isinstance(image, dict) or "id" not in image or "file_name" not in image:
            raise ValueError(f"{where}: every image entry needs an 'id' and a 'file_name'")
        if image["id"] in by_id:
            raise ValueError(f"{where}: duplicate image id {image['id']!r}")
        _image_size(image, where)
        by_id[image["id"]] = image
    return by_id


def _index_categories(data: Mapping[str, Any], is_saco: bool, where: str) -> dict[Any, dict[str, Any]]:
    categories = data.get("categories") or []
    if not isinstance(categories, list):
        raise ValueError(f"{where}: 'categories' must be a list")
    by_id = {c["id"]: c for c in categories if isinstance(c, dict) and "id" in c}
    if len(by_id) != len(categories):
        raise ValueError(f"{where}: every category needs a unique 'id'")
    if is_saco:
        return by_id or {1: {"id": 1, "name": "object"}}  # unused, but pycocotools wants one
    if not by_id:
        raise ValueError(f"{where}: no 'categories' and no 'text_input' on images: nothing to prompt with")
    for cat in by_id.values():
        if not isinstance(cat.get("name"), str) or not cat["name"].strip():
            raise ValueError(f"{where}: category {cat['id']!r} needs a non-empty 'name' (it is the prompt)")
    return by_id


def _saco_kind(images: Mapping[Any, Mapping[str, Any]], where: str) -> bool:
    has_text = [isinstance(img.get("text_input"), str) and bool(img["text_input"].strip()) for img in images.values()]
    if any(has_text) and not all(has_text):
        bad = next(i for i, ok in zip(images, has_text, strict=True) if not ok)
        raise ValueError(f"{where}: image {bad!r} has no non-empty 'text_input' but others do")
    return all(has_text)


def load_gt(path: str | os.PathLike) -> Dataset:
    """Read and validate a ground-truth json (SA-Co or COCO kind, see the module docstring)."""
    where = str(path)
    data = read_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{where}: ground truth must be a json object with 'images' and 'annotations'")
    images = _index_images(data, where)
    is_saco = _saco_kind(images, where)
    categories = _index_categories(data, is_saco, where)
    default_cat = next(iter(categories))
    annotations: dict[Any, list[dict[str, Any]]] = {}
    raw_anns = data.get("annotations") or []
    if not isinstance(raw_anns, list):
        raise ValueError(f"{where}: 'annotations' must be a list")
    for index, ann in enumerate(raw_anns):
        if not isinstance(ann, dict) or ann.get("image_id") not in images:
            raise ValueError(f"{where}: annotation #{index} refers to no listed image")
        if is_saco:
            ann = {**ann, "category_id": ann.get("category_id", default_cat)}
        elif ann.get("category_id") not in categories:
            raise ValueError(f"{where}: annotation #{index} has an unknown category_id {ann.get('category_id')!r}")
        try:
            norm = _normalize_annotation(ann, images[ann["image_id"]], is_saco)
        except ValueError as err:
            raise ValueError(f"{where}: annotation #{index}: {err}") from None
        norm["id"] = index + 1  # unique ids, which pycocotools relies on
        annotations.setdefault(ann["image_id"], []).append(norm)
    return Dataset(where, images, categories, annotations, is_saco)


def load_gts(paths: Sequence[str | os.PathLike]) -> list[Dataset]:
    """Several annotators' files of one benchmark: same kind and same pair ids, checked."""
    if not paths:
        raise ValueError("give at least one ground-truth file")
    datasets = [load_gt(p) for p in paths]
    first = datasets[0]
    for other in datasets[1:]:
        if other.is_saco != first.is_saco or set(other.images) != set(first.images):
            raise ValueError(f"{other.path} and {first.path} do not list the same image-phrase pairs")
        if not other.is_saco and set(other.categories) != set(first.categories):
            raise ValueError(f"{other.path} and {first.path} do not list the same categories")
    return datasets


def normalize_prediction(pred: Any, gt: Dataset) -> dict[str, Any]:
    """Validate one COCO result dict against ``gt``; returns a copy with RLE counts as str."""
    if not isinstance(pred, dict):
        raise ValueError("a prediction must be a json object")
    image = gt.images.get(pred.get("image_id"))
    if image is None:
        raise ValueError(f"image_id {pred.get('image_id')!r} is not in the ground truth")
    score = pred.get("score")
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
        raise ValueError(f"score must be a finite number, got {score!r}")
    out = dict(pred)
    if gt.is_saco:
        out["category_id"] = next(iter(gt.categories))  # one phrase per pair: the category is implied
    elif pred.get("category_id") not in gt.categories:
        raise ValueError(f"category_id {pred.get('category_id')!r} is not in the ground truth")
    height, width = _image_size(image, "prediction")
    if pred.get("segmentation") is not None:
        out["segmentation"] = to_rle(pred["segmentation"], height, width)
        if "bbox" not in pred:
            out["bbox"] = [float(v) for v in mask_utils.toBbox(out["segmentation"])]
    elif "bbox" not in pred:
        raise ValueError("a prediction needs a 'segmentation' or a 'bbox'")
    out["bbox"] = _check_box(out["bbox"])
    return out


def load_predictions(path: str | os.PathLike, gt: Dataset) -> list[dict[str, Any]]:
    """Read and validate a COCO results json (a list of instance dicts) against ``gt``."""
    data = read_json(path)
    if not isinstance(data, list):
        raise ValueError(f"{path}: predictions must be a json list of COCO result dicts")
    return check_predictions(data, gt, where=str(path))


def check_predictions(preds: Sequence[Any], gt: Dataset, where: str = "predictions") -> list[dict[str, Any]]:
    """Validate in-memory COCO result dicts against ``gt`` (see ``normalize_prediction``)."""
    out = []
    for index, pred in enumerate(preds):
        try:
            out.append(normalize_prediction(pred, gt))
        except ValueError as err:
            raise ValueError(f"{where}: prediction #{index}: {err}") from None
    return out


def require_masks(gts: Sequence[Dataset], preds: Sequence[Mapping[str, Any]]) -> None:
    """Raise unless mask IoU is possible: every GT annotation and prediction has a segmentation."""
    for gt in gts:
        if any(a.get("segmentation") is None for anns in gt.annotations.values() for a in anns):
            raise ValueError(f"{gt.path} has box-only annotations: evaluate boxes (iou type 'bbox')")
    if any(p.get("segmentation") is None for p in preds):
        raise ValueError("some predictions have no 'segmentation': evaluate boxes (iou type 'bbox')")


def select_ids(ids: Sequence[Any], image_ids: Sequence[Any] | None) -> list[Any]:
    """``ids`` restricted to ``image_ids`` (all of them when None), order kept."""
    if image_ids is None:
        return list(ids)
    wanted = set(image_ids)
    return [i for i in ids if i in wanted]
