"""``sam3lite export onnx``: write a model as ONNX graphs that run without PyTorch (docs/export.md)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..runtime import TEXT_MODES
from . import UsageError

EPILOG = """\
writes (DIR = --out, which must not exist or be empty):
  DIR/image_encoder.onnx   pixel_values [B, 3, S, S] -> fpn_0, fpn_1, fpn_2 (+ vit_output [B, h*w, C]
                           for the tracker neck, when the model has SAM3's tracker)
  DIR/text_encoder.onnx    input_ids, attention_mask [P, T] -> text_tokens [P, T, 256], text_mask
  DIR/heads.onnx           FPN levels (1 image), P prompts, exemplar boxes -> pred_logits, pred_boxes,
                           presence_logits, pred_masks, semantic_seg
  DIR/*.onnx.data          their weights
  DIR/tokenizer.json       the CLIP tokenizer (Hugging Face tokenizers format)
  DIR/sam3lite_onnx.json   manifest: inputs/outputs, image size and normalisation, tokenizer settings
                           (incl. the text mode: --text-mode original pads with 0 to the position table)

examples:
  sam3lite export onnx --model s0 --out s0-onnx/
  sam3lite export onnx --model s0 --out s0-onnx-int8/ --quantize int8     # CPUs
  sam3lite export onnx --model s0 --out s0-onnx-fp16/ --dtype float16     # GPUs (CUDA / TensorRT)
  sam3lite segment photos/ --prompt dog --backend onnx --model s0-onnx/ --out labels/
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "export",
        help="export a model for deployment without PyTorch (ONNX)",
        description="Export a model for deployment without PyTorch.",
    )
    formats = parser.add_subparsers(dest="format", metavar="FORMAT")
    formats.required = True
    onnx = formats.add_parser(
        "onnx",
        help="ONNX graphs + manifest + tokenizer, for ONNX Runtime (CPU, CUDA, TensorRT) or trtexec",
        description="Write the image encoder, text encoder and heads as ONNX graphs (needs: pip install "
        "sam3lite[onnx]). Takes a few minutes at full size.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    onnx.add_argument("--model", required=True, help="s0, s1, l, sam3, a hub id or a local checkpoint")
    onnx.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder (new or empty)")
    onnx.add_argument("--opset", type=int, default=18, help="ONNX opset, 17..23 (18)")
    onnx.add_argument("--dtype", default="float32", choices=["float32", "float16"], help="float16 is for GPUs")
    onnx.add_argument("--quantize", choices=["int8"], help="int8 image encoder (ONNX Runtime dynamic quantization)")
    onnx.add_argument(
        "--text-mode",
        choices=TEXT_MODES,
        help="how prompts are encoded (default: the checkpoint's own, else transformers; docs/text_modes.md)",
    )
    onnx.add_argument(
        "--context-length",
        type=int,
        metavar="T",
        help="tokens per prompt (default: the text mode's: 32, or the position table's length in original mode)",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    from ..export import SUPPORTED_OPSETS, ExportError, to_onnx

    if args.opset not in SUPPORTED_OPSETS:
        raise UsageError(
            f"--opset {args.opset} is not supported; use {SUPPORTED_OPSETS.start}..{SUPPORTED_OPSETS.stop - 1}"
        )
    if args.out.exists() and (not args.out.is_dir() or any(args.out.iterdir())):
        raise UsageError(f"--out {args.out} exists and is not an empty folder; export never overwrites")
    from ..checkpoints import load

    start = time.perf_counter()
    model = load(args.model, text_mode=args.text_mode)

    def log(message: str) -> None:
        print(f"sam3lite export: {message}", flush=True)

    try:
        manifest = to_onnx(
            model,
            args.out,
            opset=args.opset,
            dtype=args.dtype,
            quantize=args.quantize,
            context_length=args.context_length,
            log=log,
        )
    except ExportError as err:
        raise UsageError(str(err)) from err
    graphs = ", ".join(g.file for g in manifest.graphs.values())
    log(f"done in {time.perf_counter() - start:.0f} s: {args.out} ({graphs})")
    return 0
