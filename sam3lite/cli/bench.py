"""``sam3lite bench``: sam3lite against transformers' reference, same weights and inputs, one process."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import UsageError


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "bench",
        help="time sam3lite against the transformers reference (needs transformers)",
        description="Medians of repeated runs; ratios are reference time / sam3lite time. Accuracy rows give the "
        "relative max-abs error of each output against the float32 reference.",
    )
    parser.add_argument("--checkpoint", help="HF checkpoint directory (default: random weights of --variant)")
    parser.add_argument("--variant", default="s0", choices=["s0", "s1", "l"], help="full-size random weights")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--dtype", default="float32", help="sam3lite dtype also timed besides float32 (bfloat16, ...)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (after a warm-up)")
    parser.add_argument("--prompts", type=int, default=8, help="prompts for the many-prompts measurement (<= 8)")
    parser.add_argument("--batch", type=int, default=4, help="images for the batched measurement (1 skips it)")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--compile", action="store_true", help="torch.compile sam3lite's parts")
    parser.add_argument(
        "--quantize", choices=["int8"], help="also time sam3lite float32 with the int8 image encoder (CPU)"
    )
    parser.add_argument("--skip", action="append", default=[], help="leave out measurements starting with this")
    parser.add_argument(
        "--backend",
        choices=["torch", "onnx"],
        default="torch",
        help="onnx: ONNX Runtime float32 and int8 against sam3lite PyTorch and transformers (CPU, 1 image)",
    )
    parser.add_argument(
        "--onnx-dir", type=Path, help="with --backend onnx: reuse this float32 export (else export to a temp folder)"
    )
    parser.add_argument(
        "--video",
        action="store_true",
        help="video tracking instead: VideoPredictor against Sam3TrackerVideoModel for 1, 4 and 16 objects",
    )
    parser.add_argument(
        "--text",
        action="store_true",
        help="with --video: a text prompt (detect and track) against Sam3VideoModel instead of clicks",
    )
    parser.add_argument("--objects", type=int, default=4, help="with --video --text: objects born and tracked")
    parser.add_argument("--frames", type=int, default=64, help="with --video: frames of the synthetic video")
    parser.add_argument("--tiny", action="store_true", help="with --video: the tiny test config (fast, CPU)")
    parser.add_argument(
        "--tracker",
        action="store_true",
        help="point prompts instead: SAM3's tracker head against transformers' Sam3TrackerModel (full size, CPU)",
    )
    parser.add_argument("--json", type=Path, help="also write the full report as JSON here")
    return parser


def run(args: argparse.Namespace) -> int:
    try:
        import transformers  # noqa: F401
    except ImportError as err:
        raise UsageError("the benchmark compares against transformers: pip install transformers==5.23.0") from err
    from ..bench import BenchSettings, format_markdown, save
    from ..bench import run as run_bench

    if args.video:
        if args.repeats < 1:
            raise UsageError("--repeats must be at least 1")
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        from ..bench.video import format_video_markdown, run_video

        tiny = None
        if args.tiny:
            from ..bench.video import tiny_video_config

            tiny = tiny_video_config()
        if args.text:
            from ..bench.video_text import format_video_text_markdown, run_video_text

            report = run_video_text(
                args.objects, args.frames, device=args.device, dtype=args.dtype, tiny_config=tiny, repeats=args.repeats
            )
            print(format_video_text_markdown(report))
        else:
            report = run_video(num_frames=args.frames, device=args.device, dtype=args.dtype, tiny_config=tiny)
            print(format_video_markdown(report))
        if args.json:
            save(report, args.json)
        return 0
    if args.tracker:
        from ..bench.tracker import format_tracker_markdown, run_tracker

        if args.device != "cpu" or args.checkpoint:
            raise UsageError("--tracker measures full-size random weights on the CPU (no --checkpoint/--device)")
        report = run_tracker(repeats=args.repeats, threads=args.threads)
        print(format_tracker_markdown(report))
        if args.json:
            save(report, args.json)
        return 0
    if not 1 <= args.prompts <= 8 or args.repeats < 1 or args.batch < 1:
        raise UsageError("--prompts must be 1..8, --repeats and --batch at least 1")
    if args.backend == "onnx":
        return _run_onnx(args)
    if args.quantize and args.device != "cpu":
        raise UsageError("--quantize int8 runs on the CPU only (use --device cpu)")
    settings = BenchSettings(
        checkpoint=args.checkpoint,
        variant=args.variant,
        device=args.device,
        dtype=args.dtype,
        repeats=args.repeats,
        prompts=args.prompts,
        batch=args.batch,
        threads=args.threads,
        compile=args.compile,
        quantize=args.quantize,
        skip=args.skip,
    )
    report = run_bench(settings)
    print(format_markdown(report))
    if args.json:
        save(report, args.json)
    return 0


def _run_onnx(args: argparse.Namespace) -> int:
    import json

    from ..bench import BenchSettings
    from ..export import ExportError

    if args.device != "cpu":
        raise UsageError("--backend onnx benchmarks ONNX Runtime's CPU execution provider: use --device cpu")
    try:
        from ..bench.onnx import format_onnx_markdown, run_onnx
    except ImportError as err:
        hint = "pip install sam3lite[onnx]"
        raise UsageError(f"--backend onnx needs the onnx extra ({err.name} is missing): {hint}") from err
    settings = BenchSettings(
        checkpoint=args.checkpoint,
        variant=args.variant,
        repeats=args.repeats,
        prompts=args.prompts,
        threads=args.threads,
    )
    try:
        report = run_onnx(settings, export_dir=args.onnx_dir, log=lambda m: print(f"sam3lite bench: {m}", flush=True))
    except ExportError as err:
        raise UsageError(str(err)) from err
    print(format_onnx_markdown(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0
