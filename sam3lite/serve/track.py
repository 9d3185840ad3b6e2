"""``POST /v1/track``: a short video and noun phrases -> every instance tracked, one COCO RLE per object per frame.

multipart/form-data: ``video`` (a file: mp4, webm, mov... anything PyAV reads), ``prompts`` (one field per
phrase, or a JSON list), optional ``settings`` (JSON object of detect-and-track thresholds, the fields of
``TextTrackSettings``). The video is checked before any frame is tracked: its frames
(``max_video_frames``), duration (``max_video_seconds``), frame size (``max_image_pixels``) and the body
(``max_body_bytes``).

Response::

    {"video": {"width", "height", "frames", "fps"}, "prompts": [...],
     "frames": [{"frame": 0, "objects": [{"id", "phrase", "score", "rle": {"size", "counts"}}]}],
     "timings": {"queue_ms", "track_ms", "total_ms"}}
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request

from ..processing.rle import masks_to_rle
from ..processing.video import VideoError, VideoFrames, open_video
from ..video_predictor import VideoPredictor
from .errors import ApiError, invalid
from .settings import ServeSettings


@dataclass
class TrackRequest:
    """A parsed ``/v1/track`` request: the video in a temporary file, the phrases, the threshold overrides."""

    path: str
    prompts: list[str]
    settings: dict[str, Any] = field(default_factory=dict)

    def close(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


async def parse_track_form(request: Request, body: bytes, limits: ServeSettings) -> TrackRequest:
    """multipart body -> ``TrackRequest`` (the video written to a temporary file); 422 naming the field."""

    async def replay() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "multipart/form-data":
        raise ApiError(
            415, "unsupported_media_type", "send multipart/form-data with a 'video' file", field="content-type"
        )
    try:
        form = await Request(request.scope, replay).form(max_files=1, max_fields=limits.max_prompts + 8)
    except HTTPException as err:
        raise ApiError(400, "invalid_multipart", f"malformed multipart body: {err.detail}", field="body") from err
    try:
        upload = form.get("video")
        if not isinstance(upload, UploadFile):
            raise invalid("video", "missing: send the video file as the form field 'video'")
        data = await upload.read()
        prompts = _prompts(form.getlist("prompts"), limits)
        settings = _settings(form.getlist("settings"))
        unknown = sorted(set(form.keys()) - {"video", "prompts", "settings"})
        if unknown:
            raise invalid(unknown[0], "unknown field (fields: video, prompts, settings)")
    finally:
        await form.close()
    handle, path = tempfile.mkstemp(suffix=os.path.splitext(upload.filename or "")[1] or ".mp4")
    with os.fdopen(handle, "wb") as out:
        out.write(data)
    return TrackRequest(path, prompts, settings)


def _prompts(values: list[Any], limits: ServeSettings) -> list[str]:
    if any(not isinstance(v, str) for v in values):
        raise invalid("prompts", "must be text fields")
    phrases: list[str] = []
    for value in values:
        items = json.loads(value) if value.strip().startswith("[") else [value]
        for item in items:
            if not isinstance(item, str) or not item.strip():
                raise invalid("prompts", f"each prompt must be a non-empty noun phrase such as 'person', got {item!r}")
            if len(item) > limits.max_prompt_chars:
                raise invalid("prompts", f"a prompt is at most {limits.max_prompt_chars} characters")
            phrase = " ".join(item.split())
            if phrase not in phrases:
                phrases.append(phrase)
    if not phrases:
        raise invalid("prompts", "missing: give at least one noun phrase (form field 'prompts')")
    if len(phrases) > limits.max_prompts:
        raise invalid("prompts", f"at most {limits.max_prompts} prompts per request, got {len(phrases)}")
    return phrases


def _settings(values: list[Any]) -> dict[str, Any]:
    if not values:
        return {}
    try:
        settings = json.loads(values[-1])
    except (TypeError, json.JSONDecodeError) as err:
        raise invalid("settings", 'must be a JSON object of thresholds, e.g. {"new_det_thresh": 0.6}') from err
    if not isinstance(settings, dict):
        raise invalid("settings", 'must be a JSON object of thresholds, e.g. {"new_det_thresh": 0.6}')
    return settings


def open_checked(path: str, limits: ServeSettings) -> VideoFrames:
    """Open the uploaded video and check it against the limits (422 unreadable, 413 too big)."""
    try:
        frames = open_video(path)
    except VideoError as err:
        raise invalid("video", str(err).replace(path, "the upload")) from err
    height, width = frames.size
    count, fps = len(frames), frames.fps
    problem = None
    if height * width > limits.max_image_pixels:
        problem = f"frames of {width}x{height} exceed the server's limit of {limits.max_image_pixels} pixels"
    elif count > limits.max_video_frames:
        problem = f"{count} frames exceed the server's limit of {limits.max_video_frames}"
    elif fps and count / fps > limits.max_video_seconds:
        problem = f"{count / fps:.1f} s exceed the server's limit of {limits.max_video_seconds:g} s"
    if problem:
        frames.close()
        raise ApiError(413, "video_too_large", f"video: {problem}", field="video")
    return frames


def track_frames(vp: VideoPredictor, frames: VideoFrames, request: TrackRequest) -> list[dict[str, Any]]:
    """Every frame's objects (on the model's thread)."""
    try:
        session = vp.start(frames, text=request.prompts, settings=request.settings or None)
    except ValueError as err:
        raise invalid("settings", str(err)) from err
    out = []
    try:
        for result in vp.propagate(session, start=0):
            rles = masks_to_rle(result.masks) if result.object_ids else []
            objects = [
                {"id": obj, "phrase": phrase, "score": round(float(score), 5), "rle": rle}
                for obj, phrase, score, rle in zip(
                    result.object_ids, result.phrases, result.scores.tolist(), rles, strict=True
                )
            ]
            out.append({"frame": result.frame, "objects": objects})
    except VideoError as err:
        raise invalid("video", str(err)) from err
    return out


def response_body(frames: VideoFrames, request: TrackRequest, results: list, queue_ms: float, track_ms: float,
                  started: float) -> bytes:  # fmt: skip
    height, width = frames.size
    body = {
        "video": {"width": width, "height": height, "frames": len(frames), "fps": frames.fps},
        "prompts": request.prompts,
        "frames": results,
        "timings": {
            "queue_ms": round(queue_ms, 3),
            "track_ms": round(track_ms, 3),
            "total_ms": round((time.perf_counter() - started) * 1000, 3),
        },
    }
    return json.dumps(body, separators=(",", ":")).encode()
