"""``sam3lite bench --backend onnx``: ONNX Runtime (float32, int8) against sam3lite's PyTorch path and
transformers, on the same weights and inputs, in one process.

Per implementation: the image encoder (one image), then 1 prompt and P prompts through the heads
(text encoded each time: no cache), each the median of ``repeats`` rounds after a warm-up round.
"1 image x P prompts" adds the image and the prompts.
The transformers rows run the model per prompt on reused image features and skip post-processing;
the Predictors resize the kept masks to the image (few are kept with random weights). Accuracy rows: every
output of ONNX Runtime float32 against sam3lite's PyTorch float32 (the export's parity, with and
without an exemplar box) and of int8 against float32 ONNX Runtime.
"""

from __future__ import annotations

import gc
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..export import to_onnx
from ..export.quantize import quantize_export, relative_error
from ..onnx import OnnxPredictor
from ..predictor import Predictor
from ..processing.tokenizer import Tokenizer
from .image import PROMPTS, BenchSettings, PeakMemory, build_pair

OUTPUTS = ("pred_logits", "pred_boxes", "presence_logits", "pred_masks", "semantic_seg")
IMAGE_SIZE = (480, 640)  # original size the masks are resized to
BOX = [[100.0, 80.0, 400.0, 360.0]]


def run_onnx(settings: BenchSettings, export_dir: str | None = None, log: Any = print) -> dict[str, Any]:
    """All ONNX measurements; returns a JSON-able report (``rows`` as in ``bench.run``).

    Implementations are timed one after the other, each loaded only while it is measured: four
    full-size models at once (plus ONNX Runtime's arenas) need more memory than a 24 GB machine shared
    with other work has.
    """
    if settings.threads:
        torch.set_num_threads(settings.threads)
    prompts = PROMPTS[: settings.prompts]
    with tempfile.TemporaryDirectory(prefix="sam3lite-bench-onnx-") as tmp:
        reference, ours, _ = build_pair(settings)
        float_dir = Path(export_dir) if export_dir else Path(tmp) / "float32"
        if not (float_dir / "sam3lite_onnx.json").is_file():
            to_onnx(ours, float_dir, log=log)
        size = ours.config.image_size
        pixels = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
        rows = [_time_backend("transformers", _Reference(reference, prompts), pixels, settings.repeats, log)]
        del reference
        gc.collect()
        rows.append(_time_backend("sam3lite PyTorch", _Torch(ours, prompts), pixels, settings.repeats, log))
        float_backend = _Onnx(float_dir, prompts, settings.threads)
        rows.append(_time_backend("ONNX Runtime float32", float_backend, pixels, settings.repeats, log))
        rows.append(_parity(ours, float_backend, pixels))
        float_outputs = _onnx_outputs(float_backend, pixels, None)
        del ours, float_backend
        gc.collect()
        int8_dir = Path(tmp) / "int8"
        quantize_export(float_dir, int8_dir, log=log)
        int8_backend = _Onnx(int8_dir, prompts, settings.threads)
        rows.append(_time_backend("ONNX Runtime int8", int8_backend, pixels, settings.repeats, log))
        int8_outputs = _onnx_outputs(int8_backend, pixels, None)
        errors = {k: relative_error(int8_outputs[k], float_outputs[k]) for k in OUTPUTS}
        rows.append({"name": "rel. error, ONNX Runtime int8 vs float32", **errors})
    return {
        "settings": {**settings.__dict__, "backend": "onnx"},
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "torch": torch.__version__,
            "onnxruntime": _ort_version(),
            "threads": torch.get_num_threads(),
        },
        "rows": rows,
    }


# ----------------------------------------------------------------------------------------------
# The four implementations, behind one interface: set the image, then answer 1 or P prompts
# ----------------------------------------------------------------------------------------------


class _Reference:
    """transformers: image features reused by hand, one forward per prompt."""

    def __init__(self, model: torch.nn.Module, prompts: list[str]) -> None:
        self.model, self.texts = model, prompts
        self.ids, self.mask = Tokenizer(32)(prompts)

    def set_image(self, pixels: torch.Tensor) -> None:
        with torch.inference_mode():
            self.vision = self.model.get_vision_features(pixel_values=pixels)

    def prompts(self, count: int) -> None:
        with torch.inference_mode():
            for i in range(count):
                self.model(
                    vision_embeds=self.vision, input_ids=self.ids[i : i + 1], attention_mask=self.mask[i : i + 1]
                )


class _Torch:
    def __init__(self, model: torch.nn.Module, prompts: list[str]) -> None:
        self.predictor = Predictor(model.reparameterize(), text_cache_size=0)
        self.texts = prompts

    def set_image(self, pixels: torch.Tensor) -> None:
        self.predictor.set_pixel_values(pixels, IMAGE_SIZE)

    def prompts(self, count: int) -> None:
        self.predictor.predict(text=self.texts[:count], threshold=0.5)


class _Onnx:
    def __init__(self, directory: Path, prompts: list[str], threads: int | None = None) -> None:
        options = None
        if threads:  # as many threads as torch gets (OnnxPredictor's defaults otherwise: no CPU arena)
            import onnxruntime

            options = onnxruntime.SessionOptions()
            options.enable_cpu_mem_arena = False
            options.intra_op_num_threads = threads
        self.predictor = OnnxPredictor(
            directory, providers=["CPUExecutionProvider"], text_cache_size=0, session_options=options
        )
        self.texts = prompts

    def set_image(self, pixels: torch.Tensor) -> None:
        self.predictor.set_pixel_values(pixels.numpy(), IMAGE_SIZE)

    def prompts(self, count: int) -> None:
        self.predictor.predict(text=self.texts[:count], threshold=0.5)


def _time_backend(name: str, backend: Any, pixels: torch.Tensor, repeats: int, log: Any) -> dict[str, Any]:
    """Medians over ``repeats`` rounds (after a warm-up round) of the image encoder, 1 prompt and P prompts."""
    stages = ("image_s", "prompt_1_s", "prompts_n_s")
    times: dict[str, list[float]] = {stage: [] for stage in stages}
    calls = ((backend.set_image, pixels), (backend.prompts, 1), (backend.prompts, len(backend.texts)))
    log(f"timing {name}")
    with PeakMemory(torch.device("cpu")) as peak:
        for round_index in range(repeats + 1):
            for stage, (call, argument) in zip(stages, calls, strict=True):
                start = time.perf_counter()
                call(argument)
                if round_index:  # round 0 warms up
                    times[stage].append(time.perf_counter() - start)
    row: dict[str, Any] = {"name": name, "prompts": len(backend.texts)}
    row.update({stage: statistics.median(values) for stage, values in times.items()})
    row["peak_mib"] = peak.mib
    row["image_x1_s"] = row["image_s"] + row["prompt_1_s"]
    row["image_xn_s"] = row["image_s"] + row["prompts_n_s"]
    return row


# ----------------------------------------------------------------------------------------------
# Accuracy
# ----------------------------------------------------------------------------------------------


def _onnx_outputs(backend: _Onnx, pixels: torch.Tensor, boxes: Any) -> dict[str, np.ndarray]:
    backend.predictor.set_pixel_values(pixels.numpy(), IMAGE_SIZE)
    return backend.predictor.predict_raw(text="dog", boxes=boxes)


def _parity(model: torch.nn.Module, backend: _Onnx, pixels: torch.Tensor) -> dict[str, Any]:
    """ONNX Runtime float32 against sam3lite PyTorch float32, one prompt, without and with a box."""
    from ..processing.processor import prepare_boxes

    ids, mask = Tokenizer(32)(["dog"])
    row: dict[str, Any] = {"name": "rel. error, ONNX Runtime float32 vs sam3lite PyTorch float32"}
    for label, boxes in (("", None), (" (with a box)", BOX)):
        kwargs: dict[str, Any] = {}
        if boxes is not None:
            kwargs = dict(
                zip(
                    ("input_boxes", "input_boxes_labels"),
                    prepare_boxes([boxes], None, torch.tensor([IMAGE_SIZE])),
                    strict=True,
                )
            )
        with torch.inference_mode():
            expected = model(pixel_values=pixels, input_ids=ids, attention_mask=mask, **kwargs)
        got = _onnx_outputs(backend, pixels, boxes)
        row.update({f"{k}{label}": relative_error(got[k], getattr(expected, k).numpy()) for k in OUTPUTS})
    return row


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def format_onnx_markdown(report: dict[str, Any]) -> str:
    """Timing table (seconds, medians) and accuracy rows."""
    timed = [r for r in report["rows"] if "image_s" in r]
    n = timed[0]["prompts"] if timed else 8
    base = next((r for r in timed if r["name"] == "transformers"), None)
    lines = [
        f"| implementation | image encoder | heads, 1 prompt | heads, {n} prompts | 1 image x 1 prompt | "
        f"1 image x {n} prompts | speedup x{n} vs transformers | peak MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in timed:
        speedup = f"{base['image_xn_s'] / r['image_xn_s']:.2f}x" if base else "-"
        peak = "-" if r["peak_mib"] is None else f"{r['peak_mib']:.0f}"
        lines.append(
            f"| {r['name']} | {r['image_s']:.2f} | {r['prompt_1_s']:.2f} | {r['prompts_n_s']:.2f} | "
            f"{r['image_x1_s']:.2f} | {r['image_xn_s']:.2f} | {speedup} | {peak} |"
        )
    for r in report["rows"]:
        if "image_s" not in r:
            lines += ["", f"{r['name']}:", ", ".join(f"{k} {v:.1e}" for k, v in r.items() if k != "name")]
    return "\n".join(lines)
