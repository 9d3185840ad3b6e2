"""``sam3lite segment``: every instance of each prompt in each image -> json, overlay, COCO results.

The arguments only; the work is in ``sam3lite.segment``. Runs the same under torchrun
(``torchrun --nproc-per-node N -m sam3lite segment ...``), each rank taking a shard of the images.
"""

from __future__ import annotations

import argparse
from pathlib import Path

# Choices spelled out here rather than imported from sam3lite.runtime: building the parser must not
# import torch (``sam3lite --help`` stays fast).
DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("auto", "float32", "bfloat16", "float16")
TEXT_MODES = ("transformers", "original")  # sam3lite.runtime.TEXT_MODES, without importing torch here

EPILOG = """\
outputs (DIR = --out):
  DIR/<name>.json         {"image", "image_id", "width", "height", "detections": [{"prompt",
                          "category_id", "score", "box": [x1, y1, x2, y2], "mask": COCO RLE}]}
  DIR/<name>.overlay.png  masks, boxes and "prompt score" labels (skip with --no-overlay)
  DIR/results.json        COCO results (image_id, category_id, segmentation, bbox xywh, score)
  DIR/images.json         COCO images (id -> file) and categories (id -> prompt)
  DIR/summary.json        images done / failed / skipped, detections per prompt, images/s
  DIR/errors.jsonl        one line per image that failed
  DIR/run.json            the settings that made the outputs (model, dtype, thresholds, prompts, boxes)
  DIR/manifest.txt        the <name>s whose files sam3lite wrote

<name> is the image path relative to the common folder of the inputs, without extension, '/'
replaced by '__' (a/x.jpg -> a__x); clashing names keep their extension (x.jpg, x.png).
image_id is the index in that sorted list (or the dataset's id); category_id is the 1-based
position of the prompt (or the dataset's id). Existing outputs are skipped unless --overwrite;
a rerun with other settings is refused (naming them) unless --overwrite, which redoes every image.
--point/--object-box describe one object, segmented in every image with SAM3's tracker and written
as the category "object" (after the prompts' ids): its best mask (by the model's predicted IoU, which
is its score; --threshold and --mask-threshold do not apply), or nothing where the model sees no object.
DIR must be new, empty, an earlier run or the input folder; files sam3lite did not write are never
replaced. Exit code 0: all done; 1: some images failed (errors.jsonl); 2: usage error, nothing written.

examples:
  sam3lite segment examples/chelsea.png --prompt cat --out out/
  sam3lite segment photos/ "more/**/*.jpg" --prompt "red car" --prompt person --out labels/
  sam3lite segment annotations/instances_val2017.json --image-root val2017/ --out coco/
  sam3lite segment photo.jpg --point 320,240 --point 100,80,0 --model sam3 --out obj/
  sam3lite segment photo.jpg --object-box 50,40,400,300 --model s0 --tracker sam3 --out obj/
  torchrun --nproc-per-node 4 -m sam3lite segment photos/ --prompt dog --out labels/
  sam3lite segment photos/ --prompt dog --backend onnx --model s0-onnx/ --out labels/
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "segment",
        help="segment every instance of a noun phrase in images, folders, globs or a dataset",
        description="Find every instance of each prompt in each image; write masks, boxes and scores.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "images",
        nargs="+",
        metavar="IMAGES",
        help="image files, folders (recursive), globs (quoted), .txt lists of images, or one COCO dataset .json",
    )
    what = parser.add_argument_group("what to look for")
    what.add_argument("--prompt", action="append", default=[], metavar="TEXT", help="a noun phrase (repeatable)")
    what.add_argument("--prompts-file", metavar="FILE", help="more prompts, one per line")
    what.add_argument(
        "--box",
        action="append",
        default=[],
        metavar="x1,y1,x2,y2[,neg]",
        help="an exemplar box in pixels, shared by all prompts (repeatable; ',neg' marks a negative box; "
        "negative corners as written: --box -50,-20,200,220)",
    )
    what.add_argument(
        "--point",
        action="append",
        default=[],
        metavar="X,Y[,LABEL]",
        help="a click on one object to segment, in pixels (repeatable; LABEL 1 on the object (default), 0 "
        "background); written as the category 'object'. Needs SAM3's tracker (see --tracker)",
    )
    what.add_argument(
        "--object-box",
        metavar="X0,Y0,X1,Y1",
        help="a box around that object, in pixels (with or without --point). Unlike --box, which finds "
        "everything that looks like the box's contents, this segments the one object inside",
    )
    what.add_argument("--threshold", type=float, default=0.5, help="keep instances scoring above this (0.5)")
    what.add_argument("--mask-threshold", type=float, default=0.5, help="mask probability cut-off (0.5)")
    how = parser.add_argument_group("model and speed")
    how.add_argument("--model", default="s0", help="s0, s1, l, sam3, a hub id or a local checkpoint (s0)")
    how.add_argument(
        "--tracker",
        metavar="MODEL",
        help="where --point/--object-box's tracker comes from: sam3 (facebook/sam3's, fits every LiteText "
        "model) or a checkpoint holding one (default: the --model file's own)",
    )
    how.add_argument(
        "--backend",
        default="torch",
        choices=("torch", "onnx"),
        help="onnx: run an ONNX export (--model DIR from `sam3lite export onnx`) in ONNX Runtime",
    )
    how.add_argument("--device", default="auto", choices=DEVICES, help="auto: cuda:LOCAL_RANK, else mps, else cpu")
    how.add_argument("--dtype", default="auto", choices=DTYPES, help="auto: bfloat16 where the hardware is fast at it")
    how.add_argument(
        "--text-mode",
        choices=TEXT_MODES,
        help="how prompts are encoded: as transformers' port or as the original EfficientSAM3 code "
        "(default: the checkpoint's own, else transformers; see docs/text_modes.md)",
    )
    how.add_argument(
        "--quantize", choices=["int8"], help="int8 image encoder: faster on CPUs without bfloat16 hardware (CPU only)"
    )
    how.add_argument("--batch-size", type=int, metavar="N", help="images per image-encoder pass (8 on CUDA, else 1)")
    how.add_argument(
        "--prompt-batch-size", type=int, metavar="N", help="prompts per head pass (16 on a GPU, 1 on the CPU)"
    )
    how.add_argument("--workers", type=int, metavar="N", help="image decoding processes per rank (auto)")
    out = parser.add_argument_group("outputs")
    out.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    out.add_argument(
        "--overwrite", action="store_true", help="redo every image (also to change the settings of an earlier run)"
    )
    out.add_argument("--no-overlay", dest="overlay", action="store_false", help="skip the overlay pictures")
    out.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    out.add_argument("--image-root", metavar="DIR", help="folder of a COCO dataset's images (default: the json's)")
    return parser


def run(args: argparse.Namespace) -> int:
    from ..segment import SegmentOptions
    from ..segment import run as run_segment

    options = SegmentOptions(
        inputs=list(args.images),
        out=args.out,
        prompts=list(args.prompt),
        prompts_file=args.prompts_file,
        boxes=list(args.box),
        points=list(args.point),
        object_box=args.object_box,
        model=args.model,
        tracker=args.tracker,
        backend=args.backend,
        threshold=args.threshold,
        mask_threshold=args.mask_threshold,
        device=args.device,
        dtype=args.dtype,
        text_mode=args.text_mode,
        quantize=args.quantize,
        batch_size=args.batch_size,
        workers=args.workers,
        prompt_batch_size=args.prompt_batch_size,
        overwrite=args.overwrite,
        overlay=args.overlay,
        image_root=args.image_root,
        progress=args.progress,
    )
    return run_segment(options)
