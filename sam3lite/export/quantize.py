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

from ..portable.manifest import MANIFEST_NAME, Manifest


def quantize_image_encoder(directory: Path, manifest: Manifest, log: Any) -> dict[str, float]:
    """Replace ``image_encoder.onnx`` of an export by its int8 version; returns the relative error of each
    heads output against float32."""
    entry = manifest.graphs["image_encoder"]
    float_dir = directory / ".float32"
    float_dir.mkdir()
    try:
        for name in (entry.file, entry.file + ".data"):
            shutil.move(str(directory / name), float_dir / name)
        return _quantize(float_dir / entry.file, directory, manifest, log)
    finally:
        shutil.rmtree(float_dir, ignore_errors=True)


def quantize_export(source: Path, target: Path, log: Any = print) -> Manifest:
    """A float32 export ``source`` -> a new export ``target`` (must not exist) with the int8 image encoder."""
    source, target = Path(source), Path(target)
    manifest = Manifest.read(source)
    if manifest.dtype != "float32" or manifest.quantize:
        raise ValueError(f"{source} is a {manifest.dtype} export (quantize={manifest.quantize}); int8 needs float32")
    target.mkdir(parents=True)
    image_file = manifest.graphs["image_encoder"].file
    for path in source.iterdir():
        if path.name not in (image_file, image_file + ".data", MANIFEST_NAME):
            shutil.copy2(path, target / path.name)
    manifest.quantize = "int8"
    manifest.accuracy["int8_vs_float32"] = _quantize(source / image_file, target, manifest, log)
    manifest.write(target)
    return manifest


def _quantize(float_encoder: Path, directory: Path, manifest: Manifest, log: Any) -> dict[str, float]:
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer suggests its pre-processing pass on the root logger
    try:
        quantize_dynamic(
            float_encoder,
            directory / manifest.graphs["image_encoder"].file,
            op_types_to_quantize=["MatMul"],
            per_channel=True,
            weight_type=QuantType.QInt8,
            use_external_data_format=True,
        )
    finally:
        root.setLevel(level)
    log("quantized image_encoder.onnx to int8 (MatMul weights per output channel)")
    errors = compare_int8(directory, float_encoder, manifest)
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
        level_names = ["fpn_0", "fpn_1", "fpn_2"]  # not the tracker's vit_output, which the heads do not read
        levels = session.run(level_names, {"pixel_values": pixels})
        del session
        feed = dict(zip(level_names, levels, strict=True))
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
