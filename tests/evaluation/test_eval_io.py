"""Reading and validating ground-truth and prediction files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from sam3lite.evaluation.io import load_gt, load_gts, load_predictions, to_rle, write_json


def rle(h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> dict:
    m = np.zeros((h, w), dtype=np.uint8, order="F")
    m[y0:y1, x0:x1] = 1
    return {"size": [h, w], "counts": mask_utils.encode(m)["counts"].decode("ascii")}


def saco(images=None, annotations=None) -> dict:
    images = images or [{"id": 1, "file_name": "a.jpg", "height": 20, "width": 40, "text_input": "dog"}]
    return {"images": images, "annotations": annotations or [], "categories": [{"id": 1, "name": "object"}]}


def dump(tmp_path, data, name="gt.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def test_saco_normalized_box_and_area_become_pixels(tmp_path):
    seg = rle(20, 40, 2, 6, 10, 20)  # 4 rows x 10 cols
    ann = {"id": 9, "image_id": 1, "segmentation": seg, "bbox": [0.25, 0.1, 0.25, 0.2], "area": 0.05}
    box_only = {"image_id": 1, "bbox": [0.5, 0.5, 0.25, 0.5], "area": 0.125}
    gt = load_gt(dump(tmp_path, saco(annotations=[ann, box_only])))
    assert gt.is_saco
    first, second = gt.annotations[1]
    assert first["bbox"] == [10.0, 2.0, 10.0, 4.0] and first["area"] == 40.0
    assert second["bbox"] == [20.0, 10.0, 10.0, 10.0] and second["area"] == 100.0
    assert [first["id"], second["id"]] == [1, 2] and first["iscrowd"] == 0
    assert gt.item_ids([1]) == [1]


def test_coco_kind_keeps_given_area_and_converts_polygons(tmp_path):
    data = {
        "images": [{"id": 3, "file_name": "b.jpg", "height": 10, "width": 10}],
        "annotations": [
            {
                "image_id": 3,
                "category_id": 5,
                "segmentation": [[1, 1, 5, 1, 5, 5, 1, 5]],
                "area": 16.0,
                "bbox": [1, 1, 4, 4],
            }
        ],
        "categories": [{"id": 5, "name": "cat"}, {"id": 6, "name": "dog"}],
    }
    gt = load_gt(dump(tmp_path, data))
    ann = gt.annotations[3][0]
    assert not gt.is_saco and ann["area"] == 16.0 and ann["bbox"] == [1.0, 1.0, 4.0, 4.0]
    assert ann["segmentation"]["size"] == [10, 10] and isinstance(ann["segmentation"]["counts"], str)
    assert gt.item_ids([3]) == [(3, 5), (3, 6)]


def test_to_rle_forms_agree():
    mask = np.zeros((4, 5), dtype=np.uint8, order="F")
    mask[1:3, 1:4] = 1
    compressed = rle(4, 5, 1, 3, 1, 4)
    # Column-major runs: 5 zeros, then per column 1..3 two ones and two zeros, then 4 + 3 zeros.
    uncompressed = {"size": [4, 5], "counts": [5, 2, 2, 2, 2, 2, 5]}
    assert to_rle(uncompressed, 4, 5) == compressed
    assert to_rle({"size": [4, 5], "counts": compressed["counts"].encode()}, 4, 5) == compressed
    with pytest.raises(ValueError, match="differs from the image size"):
        to_rle(compressed, 5, 4)
    with pytest.raises(ValueError, match="sum to 19"):
        to_rle({"size": [4, 5], "counts": [5, 2, 2, 2, 2, 2, 4]}, 4, 5)


@pytest.mark.parametrize(
    "data, message",
    [
        ([], "json object"),
        ({"images": []}, "non-empty list"),
        (saco(images=[{"id": 1, "file_name": "a.jpg", "text_input": "x"}]), "needs integer 'height'"),
        (saco(images=[{"id": 1, "file_name": "a", "height": 2, "width": 2, "text_input": "x"}] * 2), "duplicate"),
        (
            saco(
                images=[
                    {"id": 1, "file_name": "a", "height": 2, "width": 2, "text_input": "x"},
                    {"id": 2, "file_name": "a", "height": 2, "width": 2},
                ]
            ),
            "no non-empty 'text_input'",
        ),
        (saco(annotations=[{"image_id": 2, "bbox": [0, 0, 1, 1]}]), "refers to no listed image"),
        (saco(annotations=[{"image_id": 1}]), "needs a 'segmentation' or a 'bbox'"),
        (saco(annotations=[{"image_id": 1, "segmentation": rle(4, 4, 0, 1, 0, 1)}]), "#0: RLE size"),
        ({"images": [{"id": 1, "file_name": "a", "height": 2, "width": 2}], "categories": []}, "nothing to prompt"),
    ],
)
def test_bad_ground_truth(tmp_path, data, message):
    with pytest.raises(ValueError, match=message):
        load_gt(dump(tmp_path, data))


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_gt(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="not valid json"):
        load_gt(tmp_path / "bad.json")


def test_annotators_must_list_the_same_pairs(tmp_path):
    a = dump(tmp_path, saco(), "a.json")
    b = dump(
        tmp_path, saco(images=[{"id": 2, "file_name": "a.jpg", "height": 20, "width": 40, "text_input": "x"}]), "b.json"
    )
    assert len(load_gts([a, a])) == 2
    with pytest.raises(ValueError, match="same image-phrase pairs"):
        load_gts([a, b])


def test_predictions_are_validated(tmp_path):
    gt = load_gt(dump(tmp_path, saco()))
    good = {"image_id": 1, "category_id": 99, "segmentation": rle(20, 40, 0, 2, 0, 4), "score": 0.7}
    [p] = load_predictions(dump(tmp_path, [good], "p.json"), gt)
    assert p["category_id"] == 1 and p["bbox"] == [0.0, 0.0, 4.0, 2.0]  # SA-Co: category implied
    cases = [
        ({**good, "image_id": 5}, "#0: image_id 5 is not in the ground truth"),
        ({**good, "score": "high"}, "score must be a finite number"),
        ({**good, "score": float("nan")}, "score must be a finite number"),
        ({"image_id": 1, "score": 0.5}, "needs a 'segmentation' or a 'bbox'"),
        ({"image_id": 1, "score": 0.5, "bbox": [0, 0, -1, 2]}, "w, h >= 0"),
        ({**good, "segmentation": rle(10, 10, 0, 1, 0, 1)}, "RLE size"),
    ]
    for bad, message in cases:
        with pytest.raises(ValueError, match=message):
            load_predictions(dump(tmp_path, [bad], "p.json"), gt)
    with pytest.raises(ValueError, match="json list"):
        load_predictions(dump(tmp_path, {"a": 1}, "p.json"), gt)


def test_write_json_is_atomic(tmp_path):
    write_json(tmp_path / "x.json", {"a": 1})
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]
