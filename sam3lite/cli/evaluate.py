"""``sam3lite eval``: SA-Co cgF1 and COCO AP of a predictions file, or of a model run over a dataset.

sam3lite eval --gt gold_a.json --gt gold_b.json --gt gold_c.json --predictions preds.json
sam3lite eval --model s0 --images DIR --gt gold_a.json [--gt ...] --out runs/s0
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from . import UsageError


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``eval`` and its arguments."""
    parser = subparsers.add_parser(
        "eval",
        help="SA-Co cgF1 and COCO AP, of a predictions file or of a model run over a dataset",
        description="Evaluate COCO-format predictions (--predictions) or run a model over a dataset first "
        "(--model, --images, --out; resumable). Ground truth is SA-Co (images with 'text_input') or COCO json.",
    )
    parser.add_argument(
        "--gt",
        action="append",
        required=True,
        metavar="GT.json",
        help="ground truth; repeat for several annotators (SA-Co/Gold a, b, c: oracle cgF1)",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--predictions", metavar="PRED.json", help="COCO results json to evaluate")
    source.add_argument("--model", metavar="M", help="model to run: s0 / s1 / l / sam3, hub id or local path")
    parser.add_argument("--images", metavar="DIR", help="folder the GT 'file_name's are relative to (with --model)")
    parser.add_argument(
        "--out",
        metavar="DIR",
        help="where predictions.json, metrics.json and the resumable per-image parts go (required with --model)",
    )
    parser.add_argument("--metrics", choices=["all", "cgf1", "ap"], default="all", help="default: all")
    parser.add_argument(
        "--iou-type", choices=["segm", "bbox", "both"], default="segm", help="mask or box IoU (default: segm)"
    )
    parser.add_argument("--threshold", type=float, default=0.5, help="cgF1 score threshold (default: 0.5)")
    parser.add_argument(
        "--score-floor",
        type=float,
        default=0.05,
        help="with --model: keep predictions scoring above this (default: 0.05); cgF1 then applies --threshold",
    )
    parser.add_argument("--mask-threshold", type=float, default=0.5, help="with --model: mask binarization")
    parser.add_argument("--device", default=None, help="with --model: cpu, cuda, mps or auto (default: cpu)")
    parser.add_argument("--dtype", default=None, help="with --model: float32 (default), bfloat16 or float16")
    parser.add_argument(
        "--text-mode",
        choices=("transformers", "original"),
        help="with --model: how prompts are encoded (default: the checkpoint's own; docs/text_modes.md)",
    )
    parser.add_argument(
        "--limit",
        type=int,
        default=None,
        metavar="N",
        help="with --model: only the first N image files (a quick check)",
    )
    parser.add_argument("--json", action="store_true", help="print the metrics as json")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _check_args(args: argparse.Namespace) -> None:
    for name in ("threshold", "score_floor", "mask_threshold"):
        if not 0.0 <= getattr(args, name) <= 1.0:
            raise UsageError(f"--{name.replace('_', '-')} must be in [0, 1]")
    if args.model is not None and (args.images is None or args.out is None):
        raise UsageError("--model needs --images DIR and --out DIR")
    if args.model is None and (args.images is not None or args.limit is not None):
        raise UsageError("--images and --limit go with --model")
    if args.limit is not None and args.limit <= 0:
        raise UsageError("--limit must be positive")
    if args.model is not None and args.score_floor > args.threshold:
        raise UsageError("--score-floor above --threshold would drop predictions cgF1 counts")


def _run_model(args: argparse.Namespace, gts: list[Any]) -> tuple[list[dict], list[Any]]:
    """Predictions of the model over the (first ``--limit``) images, and the pair ids covered."""
    from sam3lite import Predictor, load

    from ..evaluation.cgf1 import eval_image_ids
    from ..evaluation.io import write_json
    from ..evaluation.runner import RunSettings, job_image_ids, plan_jobs, run_dataset

    jobs = plan_jobs(gts[0], eval_image_ids(gts))[: args.limit]
    settings = RunSettings(model=args.model, score_floor=args.score_floor, mask_threshold=args.mask_threshold)
    predictor = Predictor(load(args.model, device=args.device, dtype=args.dtype, text_mode=args.text_mode))
    predictions = run_dataset(predictor, jobs, args.images, args.out, settings, progress=not args.no_progress)
    write_json(Path(args.out) / "predictions.json", predictions)
    return predictions, job_image_ids(jobs)


def run(args: argparse.Namespace) -> int:
    """Evaluate; prints a summary (or json) and writes ``metrics.json`` into ``--out`` if given."""
    from ..evaluation.io import check_predictions, load_gts, load_predictions, write_json
    from ..evaluation.report import METRICS, evaluate, format_report

    _check_args(args)
    gts = load_gts(args.gt)
    if args.model is not None:
        raw, image_ids = _run_model(args, gts)
        predictions = check_predictions(raw, gts[0])
    else:
        predictions, image_ids = load_predictions(args.predictions, gts[0]), None
    metrics = METRICS if args.metrics == "all" else (args.metrics,)
    iou_types = ("segm", "bbox") if args.iou_type == "both" else (args.iou_type,)
    result = evaluate(gts, predictions, metrics, iou_types, args.threshold, image_ids)
    if args.out is not None:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        write_json(Path(args.out) / "metrics.json", result)
    print(json.dumps(result, indent=2) if args.json else format_report(result))
    return 0
