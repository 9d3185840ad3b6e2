"""``sam3lite track``: every instance of noun phrases, and objects given by clicks / boxes, tracked through
videos, outputs per video.

For each video: the prompts are checked against it first (nothing is written for a bad prompt), the
objects are added; with phrases, every frame is detected and tracked from the first (outputs come
``hotstart_delay`` frames late); with clicks only, frames before the earliest prompt are tracked
backwards from it, then every frame from it forwards. ``masks.jsonl`` and ``overlay.mp4`` are written
as frames come, ``ytvis.json`` (phrases) and ``summary.json`` last. One video writes into ``--out``;
several write into ``--out/<video name>/`` and, with phrases, ``--out/ytvis.json`` gathers them all.

Resume: a video whose ``summary.json`` exists with the same settings (model, phrases, clicks, thresholds)
is skipped; with other settings the run refuses (``--overwrite`` redoes it). A folder holding files
sam3lite did not write is refused.

Under torchrun each rank takes every WORLD_SIZE-th pending video (rank 0 decides which are done, as
``segment`` does); rank 0 waits for the others and writes the gathered ``ytvis.json``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..processing.video import VIDEO_EXTENSIONS, VideoError, open_video
from ..segment import distributed
from ..segment.inputs import shard
from ..video_predictor import VideoPredictor
from .prompts import ObjectPrompt, check_prompts
from .writers import TMP_SUFFIX, LinesFile, OverlayVideo, VisResults, frame_record, write_json

OUTPUT_NAMES = ("masks.jsonl", "overlay.mp4", "summary.json", "ytvis.json")


@dataclass
class TrackOptions:
    videos: list[str]
    out: Path
    prompts: list[ObjectPrompt] = field(default_factory=list)
    phrases: list[str] = field(default_factory=list)
    thresholds: dict[str, Any] = field(default_factory=dict)  # detect-and-track settings overridden
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
            "phrases": list(self.phrases),
            "thresholds": dict(sorted(self.thresholds.items())),
        }


# Settings added after folders were written without them: the value those runs had in effect.
SETTING_DEFAULTS: dict[str, Any] = {"phrases": [], "thresholds": {}}


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
    if isinstance(previous, dict):  # folders made before a setting existed had its default in effect
        previous = {**SETTING_DEFAULTS, **previous}
    if previous == settings and not overwrite:
        return True
    if not overwrite:
        changed = sorted(k for k in settings if previous is None or previous.get(k) != settings[k])
        raise ValueError(f"{directory} was made with other settings ({', '.join(changed)}); add --overwrite to redo it")
    return False


def track_video(vp: VideoPredictor, video: Path, directory: Path, options: TrackOptions, video_id: int = 1) -> dict:
    """Track one video into ``directory``; return its summary."""
    from tqdm import tqdm

    frames = open_video(video)
    try:
        if options.prompts:
            check_prompts(options.prompts, len(frames), frames.size)
    except ValueError as err:
        frames.close()
        raise ValueError(f"{video}: {err}") from err
    progress = tqdm(total=len(frames), desc=video.name, unit="frame", leave=False)
    session = vp.start(frames, text=options.phrases or None, settings=options.thresholds or None)
    start = time.perf_counter()
    directory.mkdir(parents=True, exist_ok=True)
    lines = LinesFile(directory / "masks.jsonl")
    overlay = OverlayVideo(directory / "overlay.mp4", frames.size, frames.fps) if options.overlay else None
    vis = VisResults(options.phrases, video.name, len(frames), frames.size, video_id) if options.phrases else None
    objects: set[int] = set()
    try:
        for p in sorted(options.prompts, key=lambda q: q.frame):
            vp.add_object(session, p.frame, p.obj_id, points=p.points or None,
                          point_labels=p.labels or None, box=p.box)  # fmt: skip
        for result in _results(vp, session, options):
            record = frame_record(result.frame, result.object_ids, result.masks, result.scores, result.phrases)
            lines.write(record)
            objects.update(result.object_ids)
            if vis is not None:
                vis.add(record)
            if overlay is not None:
                overlay.write(frames[result.frame], result.object_ids, result.masks, result.phrases)
            progress.update(1)
        lines.close()
        if overlay is not None:
            overlay.close()
    except BaseException as err:
        lines.abort()
        if overlay is not None:
            overlay.abort()
        if isinstance(err, VideoError):  # e.g. a frame of another size, found when decoded: name the video
            raise VideoError(f"{video}: {err}") from err
        raise
    finally:
        frames.close()
        progress.close()
    if vis is not None:
        write_json(directory / "ytvis.json", vis.to_dict())
    seconds = time.perf_counter() - start
    text = session.text
    return {
        "video": str(video),
        "frames": len(frames),
        "size": {"height": frames.size[0], "width": frames.size[1]},
        "fps": frames.fps,
        "objects": sorted(objects | {p.obj_id for p in options.prompts}),
        "phrases": {str(o): text.phrases[i] for o, i in sorted(text.phrase_of.items()) if o in objects}
        if text is not None
        else {},
        "events": dict(text.stats) if text is not None else {},
        "seconds": round(seconds, 3),
        "frames_per_second": round(len(frames) / seconds, 3) if seconds else None,
        "settings": options.settings(),
    }


def _results(vp: VideoPredictor, session: Any, options: TrackOptions):
    """Every frame's result in frame order: with phrases, detect-and-track from frame 0; with clicks only,
    frames before the first prompt tracked backwards (kept until they can be written in order), then forwards."""
    if options.phrases:
        yield from vp.propagate(session, start=0)
        return
    first = min(p.frame for p in options.prompts)
    earlier = [] if first == 0 else [r for r in vp.propagate(session, start=first, reverse=True) if r.frame < first]
    yield from reversed(earlier)
    yield from vp.propagate(session, start=first)


def run(options: TrackOptions) -> dict[str, Any]:
    """Every video (this rank's share under torchrun); returns {"done": [...], "skipped": [...]} with the
    summaries (on rank 0: every rank's)."""
    from ..checkpoints import load
    from ..runtime import select_device, select_dtype

    if not options.prompts and not options.phrases:
        raise ValueError("nothing to track: give --prompt PHRASE, --object / --object-box, or --prompts FILE")
    videos = list_videos(options.videos)
    many = len(videos) > 1
    settings = options.settings()
    ranks = distributed.from_environment()
    distributed.start(ranks)
    try:
        done = [check_output_dir(output_dir(options, v, many), settings, options.overwrite) for v in videos]
        done = distributed.share_done_mask(ranks, done if ranks.main else None, _fingerprint(videos, settings))
        pending = [i for i, d in enumerate(done) if not d]
        mine = shard(pending, ranks.rank, ranks.world_size)
        report: dict[str, Any] = {"done": [], "skipped": [str(v) for v, d in zip(videos, done, strict=True) if d]}
        for i in mine:  # every video readable and every prompt inside it before anything is loaded or written
            _check_video(videos[i], options)
        if mine:
            device = select_device(options.device)
            dtype = select_dtype(options.dtype, device)
            model = load(options.model, device=device, dtype=dtype, tracker=options.tracker)
            vp = VideoPredictor(model)
            if options.thresholds:
                vp.start(None, settings=options.thresholds)  # unknown names and bad values fail before any video
            for i in mine:
                directory = output_dir(options, videos[i], many)
                summary = track_video(vp, videos[i], directory, options, video_id=i + 1)
                write_json(directory / "summary.json", summary)
                report["done"].append(summary)
        everyone = distributed.gather(ranks, report["done"])
        if not ranks.main:
            return {"done": [], "skipped": []}  # rank 0 reports for the whole run
        report["done"] = sorted((s for part in everyone for s in part), key=lambda s: s["video"])
        if many and options.phrases:
            _gather_vis(options, videos)
        return report
    finally:
        distributed.stop(ranks)


def _check_video(video: Path, options: TrackOptions) -> None:
    frames = open_video(video)
    try:
        if options.prompts:
            check_prompts(options.prompts, len(frames), frames.size)
    except ValueError as err:
        raise ValueError(f"{video}: {err}") from err
    finally:
        frames.close()


def _fingerprint(videos: list[Path], settings: dict[str, Any]) -> str:
    import hashlib
    import json

    text = json.dumps([[str(v) for v in videos], settings], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _gather_vis(options: TrackOptions, videos: list[Path]) -> None:
    """``--out/ytvis.json``: every video's ``ytvis.json`` in one (video ids = position in the video list)."""
    import json

    merged: dict[str, Any] = {"videos": [], "categories": [], "results": []}
    for video in videos:
        path = output_dir(options, video, True) / "ytvis.json"
        if not path.is_file():
            continue
        part = json.loads(path.read_text(encoding="utf-8"))
        merged["videos"] += part["videos"]
        merged["categories"] = part["categories"]
        merged["results"] += part["results"]
    write_json(options.out / "ytvis.json", merged)
