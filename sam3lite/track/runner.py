"""``sam3lite track``: objects given by clicks / boxes tracked through videos, outputs per video.

For each video: the prompts are checked against it first (nothing is written for a bad prompt), the
objects are added, frames before the earliest prompt are tracked backwards from it, then every frame
from it forwards; ``masks.jsonl`` and ``overlay.mp4`` are written as frames come, ``summary.json``
last. One video writes into ``--out``; several write into ``--out/<video name>/``.

Resume: a video whose ``summary.json`` exists with the same settings is skipped; with other settings
the run refuses (``--overwrite`` redoes it). A folder holding files sam3lite did not write is refused.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..processing.video import VIDEO_EXTENSIONS, open_video
from ..video_predictor import VideoPredictor
from .prompts import ObjectPrompt, check_prompts
from .writers import TMP_SUFFIX, LinesFile, OverlayVideo, frame_record, write_json

OUTPUT_NAMES = ("masks.jsonl", "overlay.mp4", "summary.json")


@dataclass
class TrackOptions:
    videos: list[str]
    out: Path
    prompts: list[ObjectPrompt] = field(default_factory=list)
    model: str = "sam3"
    tracker: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    overlay: bool = True
    overwrite: bool = False

    def settings(self) -> dict[str, Any]:
        """What shapes the outputs (compared on resume)."""
        return {
            "model": self.model,
            "tracker": self.tracker,
            "dtype": self.dtype,
            "overlay": self.overlay,
            "prompts": [p.to_dict() for p in self.prompts],
        }


def list_videos(arguments: list[str]) -> list[Path]:
    """Video files and folders of frames as given; a folder of video files counts as several videos."""
    videos: list[Path] = []
    for text in arguments:
        path = Path(text)
        if not path.exists():
            raise FileNotFoundError(f"{text}: no such video file or folder")
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in VIDEO_EXTENSIONS) if path.is_dir() else []
        videos.extend(files or [path])
    names = [v.stem for v in videos]
    if len(set(names)) != len(names):
        raise ValueError("two videos share a name; their outputs would collide: " + ", ".join(sorted(names)))
    return videos


def output_dir(options: TrackOptions, video: Path, many: bool) -> Path:
    return options.out / video.stem if many else options.out


def check_output_dir(directory: Path, settings: dict[str, Any], overwrite: bool) -> bool:
    """True when the video is already done with these settings; raise when the folder is not ours or was
    made with other settings (unless ``overwrite``)."""
    if not directory.exists():
        return False
    if not directory.is_dir():
        raise ValueError(f"--out {directory} exists and is not a folder")
    import json

    summary = directory / "summary.json"
    foreign = [p.name for p in directory.iterdir() if p.name not in OUTPUT_NAMES and not p.name.endswith(TMP_SUFFIX)]
    if not summary.is_file():
        if foreign or any(directory.iterdir()) and not overwrite:
            raise ValueError(f"--out {directory} holds files sam3lite track did not write; choose an empty folder")
        return False
    previous = json.loads(summary.read_text(encoding="utf-8")).get("settings")
    if previous == settings and not overwrite:
        return True
    if not overwrite:
        changed = sorted(k for k in settings if previous is None or previous.get(k) != settings[k])
        raise ValueError(f"{directory} was made with other settings ({', '.join(changed)}); add --overwrite to redo it")
    return False


def track_video(vp: VideoPredictor, video: Path, directory: Path, options: TrackOptions) -> dict:
    """Track one video into ``directory``; return its summary."""
    from tqdm import tqdm

    frames = open_video(video)
    try:
        check_prompts(options.prompts, len(frames), frames.size)
    except ValueError as err:
        frames.close()
        raise ValueError(f"{video}: {err}") from err
    progress = tqdm(total=len(frames), desc=video.name, unit="frame", leave=False)
    session = vp.start(frames)
    start = time.perf_counter()
    directory.mkdir(parents=True, exist_ok=True)
    lines = LinesFile(directory / "masks.jsonl")
    overlay = OverlayVideo(directory / "overlay.mp4", frames.size, frames.fps) if options.overlay else None
    try:
        first = min(p.frame for p in options.prompts)
        for p in sorted(options.prompts, key=lambda q: q.frame):
            vp.add_object(session, p.frame, p.obj_id, points=p.points or None,
                          point_labels=p.labels or None, box=p.box)  # fmt: skip
        # Frames before the first prompt, tracked backwards; kept as RLE until they can be written in order.
        earlier = [] if first == 0 else [r for r in vp.propagate(session, start=first, reverse=True) if r.frame < first]
        for result in [*reversed(earlier), *vp.propagate(session, start=first)]:
            lines.write(frame_record(result.frame, result.object_ids, result.masks, result.scores))
            if overlay is not None:
                overlay.write(frames[result.frame], result.object_ids, result.masks)
            progress.update(1)
        lines.close()
        if overlay is not None:
            overlay.close()
    except BaseException:
        lines.abort()
        if overlay is not None:
            overlay.abort()
        raise
    finally:
        frames.close()
        progress.close()
    seconds = time.perf_counter() - start
    return {
        "video": str(video),
        "frames": len(frames),
        "size": {"height": frames.size[0], "width": frames.size[1]},
        "fps": frames.fps,
        "objects": sorted({p.obj_id for p in options.prompts}),
        "seconds": round(seconds, 3),
        "frames_per_second": round(len(frames) / seconds, 3) if seconds else None,
        "settings": options.settings(),
    }


def run(options: TrackOptions) -> dict[str, Any]:
    """Every video; returns {"done": [...], "skipped": [...]} with the summaries."""

    from ..checkpoints import load
    from ..runtime import select_device, select_dtype

    videos = list_videos(options.videos)
    many = len(videos) > 1
    settings = options.settings()
    todo = [v for v in videos if not check_output_dir(output_dir(options, v, many), settings, options.overwrite)]
    report: dict[str, Any] = {"done": [], "skipped": [str(v) for v in videos if v not in todo]}
    if not todo:
        return report
    for video in todo:  # every video readable and every prompt inside it before anything is loaded or written
        frames = open_video(video)
        try:
            check_prompts(options.prompts, len(frames), frames.size)
        except ValueError as err:
            raise ValueError(f"{video}: {err}") from err
        finally:
            frames.close()
    device = select_device(options.device)
    dtype = select_dtype(options.dtype, device)
    model = load(options.model, device=device, dtype=dtype, tracker=options.tracker)
    vp = VideoPredictor(model)
    for video in todo:
        summary = track_video(vp, video, output_dir(options, video, many), options)
        write_json(output_dir(options, video, many) / "summary.json", summary)
        report["done"].append(summary)
    return report
