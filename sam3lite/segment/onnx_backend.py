"""``sam3lite segment --backend onnx``: the run's predictor is an ``OnnxPredictor`` on an export folder.

Everything else of the run (inputs, decoding, outputs, resume) is shared with the PyTorch backend.
The export fixes the model's precision, so ``--dtype`` and ``--quantize`` are refused here; a
quantized export is made with ``sam3lite export onnx --quantize int8``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..onnx import OnnxPredictor

PROVIDERS = {
    "auto": None,  # ONNX Runtime's order of what is installed (CUDA / TensorRT first when present)
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
}


def load_onnx(options: Any, texts: list[str]) -> tuple[OnnxPredictor, dict[str, Any]]:
    """The predictor of an ONNX export (``options.model``) with every prompt's text encoded once."""
    if options.dtype != "auto":
        raise ValueError("--dtype does not apply to --backend onnx: the export fixed it (sam3lite export onnx --dtype)")
    if options.quantize:
        raise ValueError(
            "--quantize does not apply to --backend onnx: export with sam3lite export onnx --quantize int8"
        )
    if options.device not in PROVIDERS:
        raise ValueError(f"--backend onnx runs on {', '.join(PROVIDERS)}, not --device {options.device}")
    if not Path(options.model).is_dir():
        raise ValueError(f"--backend onnx needs --model DIR, an ONNX export folder; {options.model!r} is not a folder")
    try:
        predictor = OnnxPredictor(
            options.model, providers=PROVIDERS[options.device], text_cache_size=max(1024, len(texts))
        )
    except ImportError as err:
        raise ValueError(str(err)) from err
    predictor.text_features(texts)
    manifest = predictor.manifest
    info = {
        "model": str(options.model),
        "backend": "onnx",
        "providers": predictor.providers,
        "dtype": manifest.dtype,
    }
    if manifest.quantize:
        info["quantize"] = manifest.quantize
    return predictor, info
