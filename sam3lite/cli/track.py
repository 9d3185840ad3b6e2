"""``sam3lite track``: objects given by clicks or boxes on any frame, tracked through whole videos.

The arguments only; the work is in ``sam3lite.track``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from . import UsageError
from .segment import DEVICES, DTYPES

EPILOG = """\
objects (repeatable; several entries may name one object):
  --object 1:0:320,200        object 1, frame 0, a click on (x=320, y=200); ',0' marks a background click
  --object-box 2:15:40,60,210,300
                              object 2, frame 15, a box (x0, y0, x1, y1 in pixels)
  --prompts prompts.json      {"objects": [{"id": 1, "frame": 0, "points": [[x, y]], "labels": [1],
                              "box": [x0, y0, x1, y1]}, ...]}

outputs (DIR = --out; with several videos, DIR/<video name>/):
  masks.jsonl    one line per frame: {"frame", "objects": [{"id", "score", "rle": COCO RLE}]}
  overlay.mp4    the video with each object's mask and id (skip with --no-overlay)
  summary.json   frames, objects, speed and the settings (a rerun with the same ones skips the video)
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "track",
        help="track objects given by clicks or boxes through videos",
        description="Segment objects given on any frame through the whole video with SAM3's tracker.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("videos", nargs="+", metavar="VIDEO", help="video files (mp4, mov, webm, avi...), "
                        "folders of frames, or folders of videos")  # fmt: skip
    what = parser.add_argument_group("what to track")
    what.add_argument("--object", action="append", default=[], metavar="ID:FRAME:X,Y[,LABEL]", help="a click")
    what.add_argument("--object-box", action="append", default=[], metavar="ID:FRAME:X0,Y0,X1,Y1", help="a box")
    what.add_argument("--prompts", metavar="FILE", help="objects in a JSON file")
    how = parser.add_argument_group("model")
    how.add_argument("--model", default="sam3", help="a model with SAM3's tracker (sam3, a sam3_video checkpoint)")
    how.add_argument("--tracker", help="take the tracker from this checkpoint (e.g. --model s0 --tracker sam3)")
    how.add_argument("--device", default="auto", choices=DEVICES)
    how.add_argument("--dtype", default="auto", choices=DTYPES)
    out = parser.add_argument_group("outputs")
    out.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    out.add_argument("--no-overlay", action="store_true", help="skip overlay.mp4")
    out.add_argument("--overwrite", action="store_true", help="redo videos done before (or with other settings)")
    return parser


def run(args: argparse.Namespace) -> int:
    from ..track import TrackOptions, parse_cli, read_json
    from ..track import run as run_track

    try:
        prompts = parse_cli(args.object, args.object_box)
        if args.prompts:
            prompts += read_json(args.prompts)
    except ValueError as err:
        raise UsageError(str(err)) from err
    if not prompts:
        raise UsageError("nothing to track: give --object ID:FRAME:X,Y, --object-box ID:FRAME:X0,Y0,X1,Y1 or --prompts")
    options = TrackOptions(
        videos=args.videos,
        out=args.out,
        prompts=prompts,
        model=args.model,
        tracker=args.tracker,
        device=args.device,
        dtype=args.dtype,
        overlay=not args.no_overlay,
        overwrite=args.overwrite,
    )
    report = run_track(options)
    for summary in report["done"]:
        print(f"{summary['video']}: {summary['frames']} frames, {len(summary['objects'])} objects, "
              f"{summary['frames_per_second']} frames/s")  # fmt: skip
    for video in report["skipped"]:
        print(f"{video}: done before with these settings (skipped; --overwrite redoes it)")
    return 0
