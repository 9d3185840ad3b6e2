"""`sam3lite segment --backend onnx` and `sam3lite bench --backend onnx`, run as a user would."""

from __future__ import annotations

import json

import numpy as np
from export_helpers import run_cli
from PIL import Image


def _segment(tmp_path, name, *extra):
    out = tmp_path / name
    result = run_cli(
        "segment",
        str(tmp_path / "images"),
        "--prompt",
        "cat",
        "--prompt",
        "dog",
        "--out",
        str(out),
        "--threshold",
        "0.1",
        "--no-progress",
        *extra,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def test_segment_with_the_onnx_backend_matches_pytorch(tiny_export, tmp_path):
    checkpoint, export, _ = tiny_export
    (tmp_path / "images").mkdir()
    for i, shape in enumerate([(90, 120), (150, 203)]):
        pixels = np.random.default_rng(i).integers(0, 256, (*shape, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / "images" / f"im{i}.png")
    onnx_out = _segment(tmp_path, "onnx", "--backend", "onnx", "--model", str(export))
    torch_out = _segment(tmp_path, "torch", "--model", str(checkpoint), "--device", "cpu", "--dtype", "float32")
    for name in ("im0", "im1"):
        ours, theirs = (json.loads((d / f"{name}.json").read_text())["detections"] for d in (onnx_out, torch_out))
        assert len(ours) == len(theirs) > 0
        for a, b in zip(ours, theirs, strict=True):
            assert a["prompt"] == b["prompt"] and abs(a["score"] - b["score"]) < 1e-4
            assert np.allclose(a["box"], b["box"], atol=1e-2)
        assert (onnx_out / f"{name}.overlay.png").is_file()
    summary = json.loads((onnx_out / "summary.json").read_text())
    assert summary["done"] == 2 and summary["backend"] == "onnx"


def test_segment_onnx_backend_refuses_pytorch_options(tiny_export, tmp_path):
    _, export, _ = tiny_export
    (tmp_path / "images").mkdir()
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "images" / "a.png")
    args = ["segment", str(tmp_path / "images"), "--prompt", "cat", "--out", str(tmp_path / "o"), "--backend", "onnx"]
    result = run_cli(*args, "--model", str(export), "--quantize", "int8")
    assert result.returncode == 2 and "sam3lite export onnx --quantize int8" in result.stderr
    result = run_cli(*args, "--model", "s0")
    assert result.returncode == 2 and "ONNX export folder" in result.stderr
    result = run_cli(*args, "--model", str(export), "--point", "5,5")
    assert result.returncode == 2 and "--point/--object-box need SAM3's tracker" in result.stderr
    assert not (tmp_path / "o").exists()


def test_bench_onnx_backend(tiny_export, tmp_path):
    checkpoint, export, _ = tiny_export
    report_path = tmp_path / "report.json"
    result = run_cli(
        "bench",
        "--backend",
        "onnx",
        "--checkpoint",
        str(checkpoint),
        "--onnx-dir",
        str(export),
        "--repeats",
        "1",
        "--prompts",
        "2",
        "--json",
        str(report_path),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rows = json.loads(report_path.read_text())["rows"]
    timed = {row["name"]: row for row in rows if "image_s" in row}
    assert set(timed) == {"transformers", "sam3lite PyTorch", "ONNX Runtime float32", "ONNX Runtime int8"}
    assert all(row["image_xn_s"] > row["image_s"] > 0 for row in timed.values())
    parity = next(row for row in rows if row["name"].startswith("rel. error, ONNX Runtime float32"))
    assert max(v for k, v in parity.items() if k != "name") < 1e-4
    assert "| ONNX Runtime int8 |" in result.stdout
