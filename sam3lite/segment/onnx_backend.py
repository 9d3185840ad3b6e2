"""``sam3lite segment --backend onnx``: the run's predictor is an ``OnnxPredictor`` on an export folder.

Everything else of the run (inputs, decoding, outputs, resume) is shared with the PyTorch backend.
The export fixes the model's precision and text mode, so ``--dtype``, ``--quantize`` and a
``--text-mode`` other than the export's are refused here; a quantized export is made with
``sam3lite export onnx --quantize int8``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..onnx import OnnxPredictor
from ..portable.manifest import Manifest

PROVIDERS = {
    "auto": None,  # ONNX Runtime's order of what is installed (CUDA / TensorRT first when present)
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
}


def check_onnx_options(options: Any) -> torch.dtype:
    """Refuse the options an ONNX export fixed (before anything is loaded); returns the export's dtype."""
    if options.dtype != "auto":
        raise ValueError("--dtype does not apply to --backend onnx: the export fixed it (sam3lite export onnx --dtype)")
    if options.quantize:
        raise ValueError(
            "--quantize does not apply to --backend onnx: export with sam3lite export onnx --quantize int8"
        )
    if getattr(options, "points", None) or getattr(options, "object_box", None):
        raise ValueError(
            "--point/--object-box need SAM3's tracker, which ONNX exports do not run (yet): use --backend torch"
        )
    if options.device not in PROVIDERS:
        raise ValueError(f"--backend onnx runs on {', '.join(PROVIDERS)}, not --device {options.device}")
    if not Path(options.model).is_dir():
        raise ValueError(f"--backend onnx needs --model DIR, an ONNX export folder; {options.model!r} is not a folder")
    manifest = Manifest.read(options.model)  # ManifestError is a ValueError: a usage error
    exported = manifest.text.get("text_mode", "transformers")
    if options.text_mode is not None and options.text_mode != exported:
        raise ValueError(
            f"--text-mode {options.text_mode} does not apply to this export: it was made in text mode {exported} "
            "(export again from a model loaded with that text mode)"
        )
    return getattr(torch, manifest.dtype)


def load_onnx(options: Any, texts: list[str], threads: int | None = None) -> tuple[OnnxPredictor, dict[str, Any]]:
    """The predictor of an ONNX export (``options.model``) with every prompt's text encoded once.

    ``threads``: ONNX Runtime's intra-op threads (the run's CPU plan); None: ONNX Runtime's default.
    """
    check_onnx_options(options)
    try:
        session_options = None
        if threads:
            import onnxruntime

            session_options = onnxruntime.SessionOptions()
            session_options.enable_cpu_mem_arena = False  # as OnnxPredictor's default (see there)
            session_options.intra_op_num_threads = threads
        predictor = OnnxPredictor(
            options.model,
            providers=PROVIDERS[options.device],
            text_cache_size=max(1024, len(texts)),
            session_options=session_options,
        )
    except ImportError as err:
        raise ValueError(f"--backend onnx needs onnxruntime ({err}): pip install sam3lite[onnx]") from err
    predictor.text_features(texts)
    manifest = predictor.manifest
    info = {
        "model": str(options.model),
        "backend": "onnx",
        "providers": predictor.providers,
        "dtype": manifest.dtype,
        "text_mode": manifest.text.get("text_mode", "transformers"),
    }
    if manifest.quantize:
        info["quantize"] = manifest.quantize
    return predictor, info
