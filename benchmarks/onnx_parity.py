"""Full-size parity of an ONNX export: every output of ONNX Runtime (CPU, float32) against sam3lite's
PyTorch float32 model, for 1 and 8 prompts, with and without exemplar boxes.

    python benchmarks/onnx_parity.py --onnx-dir s0-onnx/                      # random S0 = the bench's
    python benchmarks/onnx_parity.py --onnx-dir s0-onnx/ --model my-s0/     # a checkpoint and its export

Without ``--model`` the weights are ``sam3lite bench``'s random full-size S0 (seeded, realistic
scales), which is what ``sam3lite bench --backend onnx --variant s0 --onnx-dir DIR`` exports into a
new DIR. The test suite checks the same on tiny configs (tests/export/test_onnx_parity.py); a
full-size export takes minutes and gigabytes, so it lives here. Prints a markdown table of
``max |onnx - torch| / max |torch|`` per output and case, and the worst value.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ["dog", "cat", "a person riding a horse", "yellow school bus", "ear", "red car", "tree", "shoe"]
BOXES = [[100.0, 80.0, 400.0, 360.0], [20.0, 30.0, 120.0, 140.0]]  # pixels xyxy on a 480 x 640 image
LABELS = [1, 0]
IMAGE_SIZE = (480, 640)
CASES = [(1, False), (1, True), (8, False), (8, True)]  # (prompts, with exemplar boxes)


def case_name(count: int, with_boxes: bool) -> str:
    return f"heads, {count} prompt(s), {'2 boxes (+, -)' if with_boxes else 'no boxes'}"


def load_model(model: str | None, variant: str, text_mode: str) -> torch.nn.Module:
    """The export's PyTorch model, in the export's text mode."""
    import sam3lite

    if model:
        return sam3lite.load(model, text_mode=text_mode).eval()
    from sam3lite.bench.image import BenchSettings, build_pair

    reference, ours, _ = build_pair(BenchSettings(variant=variant))
    del reference
    gc.collect()
    return ours.eval()


def relative(ours: np.ndarray, reference: torch.Tensor) -> float:
    ref = reference.double().numpy()
    return float(np.abs(np.asarray(ours, np.float64) - ref).max() / max(np.abs(ref).max(), 1e-12))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--onnx-dir", required=True, type=Path, help="float32 export of the same weights")
    parser.add_argument("--model", help="checkpoint the export was made from (default: the bench's random S0)")
    parser.add_argument("--variant", default="s0", help="random-weight variant without --model (s0)")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    import onnxruntime

    from sam3lite.onnx import OnnxPredictor
    from sam3lite.processing.processor import prepare_boxes
    from sam3lite.processing.tokenizer import Tokenizer

    start = time.perf_counter()
    # ONNX Runtime first, then PyTorch: both full-size models and their 8-prompt activations at once
    # took 21 GB and were OOM-killed on a shared 24 GB machine. Without the CPU arena ONNX Runtime
    # gives its activations back after each run.
    options = onnxruntime.SessionOptions()
    options.enable_cpu_mem_arena = False
    predictor = OnnxPredictor(args.onnx_dir, providers=["CPUExecutionProvider"], session_options=options)
    if predictor.manifest.dtype != "float32" or predictor.manifest.quantize:
        raise SystemExit(f"{args.onnx_dir}: parity is measured on a float32 export, not {predictor.manifest.dtype}")
    text_mode, context_length = predictor.text_mode, predictor.manifest.text["context_length"]
    size = predictor.image_settings.size[0]
    pixels = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    predictor.set_pixel_values(pixels.numpy(), IMAGE_SIZE)
    got: dict[str, dict[str, np.ndarray]] = {"image encoder": dict(predictor.image_features)}
    for count, with_boxes in CASES:
        prompts = PROMPTS[:count]
        got[f"text encoder, {count} prompt(s)"] = {"text_tokens": predictor.text_features(prompts)[0]}
        box_prompt = {"boxes": BOXES, "box_labels": LABELS} if with_boxes else {}
        got[case_name(count, with_boxes)] = predictor.predict_raw(text=prompts, **box_prompt)
    del predictor
    gc.collect()

    model = load_model(args.model, args.variant, text_mode)
    tokenizer = Tokenizer(context_length, text_mode)
    results: dict[str, dict[str, float]] = {}
    with torch.inference_mode():
        vision = model.get_vision_features(pixels)
        levels = {f"fpn_{i}": level for i, level in enumerate(vision.fpn_hidden_states)}
        results["image encoder"] = {
            k: relative(v, levels[k]) for k, v in got.pop("image encoder").items() if k in levels
        }
        for count, with_boxes in CASES:
            ids, mask = tokenizer(PROMPTS[:count])
            text = model.get_text_features(ids, mask)
            name = f"text encoder, {count} prompt(s)"
            results[name] = {"text_tokens": relative(got[name]["text_tokens"], text.pooler_output)}
            kwargs = {}
            if with_boxes:
                boxes, labels = prepare_boxes([BOXES], [LABELS], torch.tensor([IMAGE_SIZE]))
                kwargs = {"input_boxes": boxes.expand(count, -1, -1), "input_boxes_labels": labels.expand(count, -1)}
            expected = model(vision_embeds=vision, text_embeds=text, **kwargs)
            outputs = got.pop(case_name(count, with_boxes))
            results[case_name(count, with_boxes)] = {k: relative(v, getattr(expected, k)) for k, v in outputs.items()}
            del expected, outputs
    worst = max(v for row in results.values() for v in row.values())
    print("| case | output: max relative difference ONNX Runtime vs PyTorch (float32) |\n|---|---|")
    for case, row in results.items():
        print(f"| {case} | " + ", ".join(f"{k} {v:.1e}" for k, v in row.items()) + " |")
    print(f"\nworst: {worst:.1e} ({time.perf_counter() - start:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps({"results": results, "worst": worst}, indent=2) + "\n")


if __name__ == "__main__":
    main()
