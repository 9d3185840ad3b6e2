"""int8 image encoder for CPUs: ONNX Runtime's dynamic quantization of the ViT's MatMuls.

Weights become int8 per output channel; activations are quantized to uint8 per tensor at run time
(``onnxruntime.quantization.quantize_dynamic``). Only MatMuls with constant weights are touched (the
q/k/v, o_proj and MLP products); attention products, LayerNorm, RoPE and the FPN convolutions stay
float32. The error against float32 is measured on one random image and one prompt, through the
heads, and stored in the manifest (like ``sam3lite bench --quantize int8`` reports PyTorch's int8).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from ..portable.manifest import Manifest


def quantize_image_encoder(directory: Path, manifest: Manifest, log: Any) -> dict[str, float]:
    """Replace ``image_encoder.onnx`` by its int8 version; returns the relative error of each output."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    entry = manifest.graphs["image_encoder"]
    float_path = directory / entry.file
    float_dir = directory / ".float32"
    float_dir.mkdir()
    try:
        for path in (float_path, float_path.with_name(float_path.name + ".data")):
            shutil.move(str(path), float_dir / path.name)
        quantize_dynamic(
            float_dir / entry.file,
            float_path,
            op_types_to_quantize=["MatMul"],
            per_channel=True,
            weight_type=QuantType.QInt8,
            use_external_data_format=True,
        )
        log("quantized image_encoder.onnx to int8 (MatMul weights per channel)")
        errors = compare_int8(directory, float_dir / entry.file, manifest)
    finally:
        shutil.rmtree(float_dir, ignore_errors=True)
    log("int8 vs float32 (relative max error): " + ", ".join(f"{k} {v:.1e}" for k, v in errors.items()))
    return errors


def compare_int8(directory: Path, float_encoder: Path, manifest: Manifest) -> dict[str, float]:
    """Relative max error (max |int8 - float32| / max |float32|) of each heads output, one image, one prompt."""
    import onnxruntime as ort

    size = manifest.image["size"]
    pixels = np.random.default_rng(0).uniform(-1, 1, (1, 3, *size)).astype(np.float32)
    options = ort.SessionOptions()
    text = ort.InferenceSession(str(directory / manifest.graphs["text_encoder"].file), options)
    length = manifest.text["context_length"]
    ids = np.full((1, length), manifest.text["pad_id"], dtype=np.int64)
    ids[0, :3] = [manifest.text["bos_id"], 1929, manifest.text["eos_id"]]  # "dog"
    mask = (np.arange(length) < 3).astype(np.int64)[None]
    tokens, text_mask = text.run(None, {"input_ids": ids, "attention_mask": mask})
    heads = ort.InferenceSession(str(directory / manifest.graphs["heads"].file), options)
    names = [t.name for t in manifest.graphs["heads"].outputs]
    results = []
    for encoder in (float_encoder, directory / manifest.graphs["image_encoder"].file):
        session = ort.InferenceSession(str(encoder), options)
        levels = session.run(None, {"pixel_values": pixels})
        del session
        feed = {f"fpn_{i}": level for i, level in enumerate(levels)}
        feed.update(
            text_tokens=tokens,
            text_mask=text_mask,
            input_boxes=np.zeros((1, 1, 4), np.float32),
            input_boxes_labels=np.full((1, 1), -10, np.int64),
        )
        results.append(dict(zip(names, heads.run(None, feed), strict=True)))
    reference, int8 = results
    return {name: relative_error(int8[name], reference[name]) for name in names}


def relative_error(ours: np.ndarray, reference: np.ndarray) -> float:
    """max |ours - reference| / max |reference| in float64."""
    ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
    return float(np.abs(ours - reference).max() / max(np.abs(reference).max(), 1e-12))
