"""``sam3lite eval`` on a predictions file: report, json, metrics.json, and one-line user errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from sam3lite.cli import main

H = W = 8


def rect(y0: int, y1: int, x0: int, x1: int) -> dict:
    m = np.zeros((H, W), dtype=np.uint8, order="F")
    m[y0:y1, x0:x1] = 1
    return {"size": [H, W], "counts": mask_utils.encode(m)["counts"].decode("ascii")}


@pytest.fixture
def files(tmp_path):
    """Two annotators of 2 pairs; a prediction matching annotator b on pair 1."""
    images = [
        {"id": 1, "file_name": "x.jpg", "height": H, "width": W, "text_input": "mug"},
        {"id": 2, "file_name": "x.jpg", "height": H, "width": W, "text_input": "penguin"},
    ]
    a = {"images": images, "annotations": [{"image_id": 1, "segmentation": rect(0, 4, 0, 4)}]}
    b = {"images": images, "annotations": [{"image_id": 1, "segmentation": rect(0, 4, 0, 2)}]}
    preds = [{"image_id": 1, "category_id": 1, "segmentation": rect(0, 4, 0, 2), "score": 0.9}]
    paths = {}
    for name, data in {"a": a, "b": b, "p": preds}.items():
        paths[name] = tmp_path / f"{name}.json"
        paths[name].write_text(json.dumps(data))
    return paths


def test_text_report_and_metrics_file(files, tmp_path, capsys):
    out = tmp_path / "metrics"
    argv = ["eval", "--gt", str(files["a"]), "--gt", str(files["b"]), "--predictions", str(files["p"])]
    assert main([*argv, "--out", str(out), "--iou-type", "both"]) == 0
    text = capsys.readouterr().out
    # Oracle picks b for pair 1 (exact match) and pair 2 is a true negative: a perfect score, which
    # the reference's epsilons make pmF1 = 0.9999 * 1.9998 / 1.9999 = 0.99985 and cgF1 0.99985 / (1 + 1e-6).
    assert "2 image-phrase pairs (2 annotators, oracle), 1 predictions" in text
    assert "cgF1 [segm]  cgF1 99.98  IL_MCC 1.0000  pmF1 99.99" in text
    assert "TP 1  FP 0  TN 1  FN 0" in text
    assert "AP   [bbox]" in text
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["cgF1"]["segm"]["cgF1"] == pytest.approx(1.0, abs=2e-4)
    # AP uses annotator a only: the prediction covers half of a's mask (IoU 0.5): AP50 1, AP75 0.
    assert metrics["AP"]["segm"]["AP50"] == pytest.approx(1.0, abs=1e-12)
    assert metrics["AP"]["segm"]["AP75"] == 0.0

    assert main([*argv, "--metrics", "cgf1", "--json"]) == 0
    only = json.loads(capsys.readouterr().out)
    assert "AP" not in only and only["cgF1"]["segm"]["IL_TN"] == 1


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--threshold", "1.5"], "--threshold must be in [0, 1]"),
        (["--images", "."], "--images and --limit go with --model"),
        (["--gt", "missing.json"], "no such file: missing.json"),
    ],
)
def test_user_errors_are_one_line(files, capsys, extra, message):
    assert main(["eval", "--gt", str(files["a"]), "--predictions", str(files["p"]), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_model_mode_needs_images_and_out(files, capsys):
    assert main(["eval", "--gt", str(files["a"]), "--model", "s0"]) == 2
    assert "--model needs --images DIR and --out DIR" in capsys.readouterr().err


def test_bad_prediction_file_names_the_entry(files, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"image_id": 3, "score": 0.5, "bbox": [0, 0, 1, 1]}]))
    assert main(["eval", "--gt", str(files["a"]), "--predictions", str(bad)]) == 2
    assert "prediction #0: image_id 3 is not in the ground truth" in capsys.readouterr().err


def test_source_is_required():
    with pytest.raises(SystemExit) as exc:
        main(["eval", "--gt", "x.json"])
    assert exc.value.code == 2
