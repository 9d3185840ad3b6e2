"""OnnxPredictor gives Predictor's results (same detections, mask IoU >= 0.999) and never imports torch."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from sam3lite import Predictor, Processor
from sam3lite.onnx import ManifestError, OnnxPredictor, PromptResult

IMAGE = np.random.default_rng(0).integers(0, 256, (150, 203, 3), dtype=np.uint8)
CASES = [
    {"text": "cat"},
    {"text": ["ear", "yellow school bus", "a person riding a horse on the beach"]},
    {"text": "dog", "boxes": [[20.0, 30.0, 120.0, 140.0]]},
    {"boxes": [[20.0, 30.0, 120.0, 140.0], [5.0, 5.0, 60.0, 60.0]], "box_labels": [1, 0]},
]


@pytest.fixture(scope="module")
def predictors(tiny_export):
    _, out, model = tiny_export
    onnx_predictor = OnnxPredictor(out, providers=["CPUExecutionProvider"])
    onnx_predictor.set_image(IMAGE)
    torch_predictor = Predictor(model, Processor(image_size=112))
    torch_predictor.set_image(IMAGE)
    return onnx_predictor, torch_predictor


def _as_list(result):
    return result if isinstance(result, list) else [result]


def _assert_same(ours: PromptResult, theirs) -> None:
    assert ours.prompt == theirs.prompt
    assert len(ours) == len(theirs) > 0
    assert ours.masks.dtype == np.bool_ and ours.masks.shape == tuple(theirs.masks.shape)
    np.testing.assert_allclose(ours.scores, theirs.scores.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours.boxes, theirs.boxes.numpy(), rtol=1e-4, atol=1e-3)
    theirs_masks = theirs.masks.numpy()
    inter = (ours.masks & theirs_masks).sum(axis=(1, 2))
    union = (ours.masks | theirs_masks).sum(axis=(1, 2))
    assert (inter / np.maximum(union, 1)).min() >= 0.999


@pytest.mark.parametrize("case", CASES, ids=["text", "texts", "text+box", "boxes"])
def test_results_equal_the_pytorch_predictor(predictors, case):
    ours, theirs = predictors
    got, expected = _as_list(ours.predict(threshold=0.1, **case)), _as_list(theirs.predict(threshold=0.1, **case))
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        _assert_same(a, b)


def test_result_conversions(predictors):
    result = predictors[0].predict(text="cat", threshold=0.1)
    assert result.image_size == (150, 203)
    rles = result.to_rle()
    assert len(rles) == len(result) and rles[0]["size"] == [150, 203]
    as_dict = result.to_dict()
    assert set(as_dict) == {"prompt", "masks", "boxes", "scores"} and isinstance(as_dict["masks"], np.ndarray)
    with pytest.raises(ValueError, match="kind must be one of 'numpy'"):
        result.to_dict("torch")


def test_raw_outputs_have_the_model_shapes(predictors):
    raw = predictors[0].predict_raw(text=["cat", "dog"])
    assert raw["pred_logits"].shape == (2, 10) and raw["pred_masks"].shape == (2, 10, 32, 32)


def test_clear_errors(tiny_export, tmp_path):
    _, out, _ = tiny_export
    fresh = OnnxPredictor(out)
    with pytest.raises(RuntimeError, match="set_image"):
        fresh.predict(text="cat")
    fresh.set_image(IMAGE)
    with pytest.raises(ValueError, match="threshold must be a number in"):
        fresh.predict(text="cat", threshold=2)
    with pytest.raises(ValueError, match=r"boxes\[0\] .* lies outside"):
        fresh.predict(boxes=[[500, 500, 600, 600]])
    with pytest.raises(ManifestError, match="not a sam3lite ONNX export"):
        OnnxPredictor(tmp_path)


def test_runs_without_torch(tiny_export):
    """A fresh interpreter where torch cannot be imported: the whole path works, and no module even tried."""
    _, out, _ = tiny_export
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["torch"] = None  # any `import torch` now raises ImportError
        import numpy as np
        import sam3lite.onnx
        from sam3lite.onnx import OnnxPredictor
        predictor = OnnxPredictor({str(out)!r})
        predictor.set_image(np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8))
        results = predictor.predict(text=["cat", "dog"], boxes=[[5, 5, 40, 50]], threshold=0.1)
        assert len(results) == 2 and results[0].to_rle() is not None
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "transformers"))
        assert loaded == ["torch"] and sys.modules["torch"] is None, loaded
        print("ok", len(results[0]))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("ok")


def test_package_root_does_not_import_torch():
    script = "import sys, sam3lite, sam3lite.onnx; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "False", result.stderr
    # ...while the public API still resolves on use
    from sam3lite import Predictor as P

    assert P is Predictor and isinstance(torch.zeros(1), torch.Tensor)
