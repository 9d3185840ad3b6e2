"""int8 (ONNX Runtime dynamic quantization) and float16 exports: they run, and their error is known."""

from __future__ import annotations

import json

import numpy as np
import onnx

import sam3lite
from sam3lite.export import to_onnx
from sam3lite.export.quantize import quantize_export, relative_error
from sam3lite.onnx import OnnxPredictor

IMAGE = np.random.default_rng(5).integers(0, 256, (120, 160, 3), dtype=np.uint8)


def _raw(directory, **prompt):
    predictor = OnnxPredictor(directory, providers=["CPUExecutionProvider"])
    predictor.set_image(IMAGE)
    return predictor.predict_raw(**prompt)


def test_int8_image_encoder(tiny_export, tmp_path):
    _, out, _ = tiny_export
    manifest = quantize_export(out, tmp_path / "int8", log=lambda m: None)
    assert manifest.quantize == "int8"
    errors = json.loads((tmp_path / "int8" / "sam3lite_onnx.json").read_text())["accuracy"]["int8_vs_float32"]
    assert set(errors) == {"pred_logits", "pred_boxes", "presence_logits", "pred_masks", "semantic_seg"}
    # Only the image encoder changed: its MatMul weights are int8, the other graphs are copies.
    graph = onnx.load(str(tmp_path / "int8" / "image_encoder.onnx"), load_external_data=False).graph
    ops = {node.op_type for node in graph.node}
    assert "DynamicQuantizeLinear" in ops and "MatMulInteger" in ops
    assert (tmp_path / "int8" / "heads.onnx").read_bytes() == (out / "heads.onnx").read_bytes()
    # The tiny random model is far more fragile than trained weights; this bounds gross breakage only.
    got, expected = _raw(tmp_path / "int8", text="cat"), _raw(out, text="cat")
    assert relative_error(got["pred_boxes"], expected["pred_boxes"]) < 0.1
    assert errors["pred_boxes"] < 0.1


def test_float16_export_runs_close_to_float32(tiny_export, tmp_path):
    checkpoint, out, _ = tiny_export
    manifest = to_onnx(sam3lite.load(checkpoint), tmp_path / "fp16", dtype="float16")
    heads_inputs = {t.name: t.dtype for t in manifest.graphs["heads"].inputs}
    assert heads_inputs["fpn_0"] == "float16" and heads_inputs["input_boxes"] == "float32"
    prompt = {"text": ["cat", "dog"], "boxes": [[20, 30, 120, 100]]}
    got, expected = _raw(tmp_path / "fp16", **prompt), _raw(out, **prompt)
    for name in ("pred_logits", "pred_boxes", "presence_logits", "pred_masks"):
        assert relative_error(got[name], expected[name]) < 2e-2, name
    # Post-processing reads the float16 outputs as float32: the same API and, here, the same instances.
    half, full = OnnxPredictor(tmp_path / "fp16"), OnnxPredictor(out)
    for predictor in (half, full):
        predictor.set_image(IMAGE)
    a, b = half.predict(text="cat", threshold=0.1), full.predict(text="cat", threshold=0.1)
    assert a.scores.dtype == np.float32 and len(a) == len(b) > 0
    assert np.abs(a.scores - b.scores).max() < 1e-2
