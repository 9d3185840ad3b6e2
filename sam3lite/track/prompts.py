"""What to track: objects given on the command line (``--object ID:FRAME:x,y[,label]``,
``--object-box ID:FRAME:x0,y0,x1,y1``) or in a JSON file (``--prompts``).

JSON layout::

    {"objects": [{"id": 1, "frame": 0, "points": [[x, y], ...], "labels": [1, ...], "box": [x0, y0, x1, y1]},
                 ...]}

Several entries may name one object (on one frame: clicks and box combine; on other frames: corrections).
Coordinates are pixels of the video.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class ObjectPrompt:
    """One object's prompt on one frame: clicks (x, y) with labels 1/0, and/or a box (x0, y0, x1, y1)."""

    obj_id: int
    frame: int
    points: list[list[float]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    box: list[float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.obj_id, "frame": self.frame, "points": self.points, "labels": self.labels, "box": self.box}


def _numbers(text: str, what: str, count: int | tuple[int, ...]) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError as err:
        raise ValueError(f"{what}: expected comma-separated numbers, got {text!r}") from err
    allowed = (count,) if isinstance(count, int) else count
    if len(values) not in allowed:
        raise ValueError(f"{what}: expected {' or '.join(map(str, allowed))} numbers, got {text!r}")
    return values


def _id_frame(text: str, flag: str) -> tuple[int, int, str]:
    parts = text.split(":")
    if len(parts) != 3:
        raise ValueError(f"{flag} {text!r}: expected ID:FRAME:coordinates")
    try:
        obj_id, frame = int(parts[0]), int(parts[1])
    except ValueError as err:
        raise ValueError(f"{flag} {text!r}: ID and FRAME must be integers") from err
    if frame < 0:
        raise ValueError(f"{flag} {text!r}: FRAME must be >= 0")
    return obj_id, frame, parts[2]


def parse_cli(points: list[str], boxes: list[str]) -> list[ObjectPrompt]:
    """``--object ID:FRAME:x,y[,label]`` and ``--object-box ID:FRAME:x0,y0,x1,y1`` -> merged prompts."""
    merged: dict[tuple[int, int], ObjectPrompt] = {}
    for text in points:
        obj_id, frame, rest = _id_frame(text, "--object")
        values = _numbers(rest, f"--object {text!r}", (2, 3))
        label = int(values[2]) if len(values) == 3 else 1
        if label not in (0, 1) or (len(values) == 3 and values[2] != label):
            raise ValueError(f"--object {text!r}: the label must be 1 (object) or 0 (background)")
        prompt = merged.setdefault((obj_id, frame), ObjectPrompt(obj_id, frame))
        prompt.points.append(values[:2])
        prompt.labels.append(label)
    for text in boxes:
        obj_id, frame, rest = _id_frame(text, "--object-box")
        box = _numbers(rest, f"--object-box {text!r}", 4)
        prompt = merged.setdefault((obj_id, frame), ObjectPrompt(obj_id, frame))
        if prompt.box is not None:
            raise ValueError(f"--object-box {text!r}: object {obj_id} already has a box on frame {frame}")
        prompt.box = box
    return list(merged.values())


def read_json(path: str | Path) -> list[ObjectPrompt]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise ValueError(f"--prompts {path}: no such file") from err
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"--prompts {path}: not readable JSON ({err})") from err
    entries = data.get("objects") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise ValueError(f'--prompts {path}: expected {{"objects": [...]}}')
    prompts = []
    for k, entry in enumerate(entries):
        where = f"--prompts {path}: objects[{k}]"
        if not isinstance(entry, dict) or "id" not in entry or "frame" not in entry:
            raise ValueError(f"{where} needs 'id' and 'frame'")
        points, labels, box = entry.get("points") or [], entry.get("labels"), entry.get("box")
        if labels is None:
            labels = [1] * len(points)
        if len(labels) != len(points):
            raise ValueError(f"{where}: one label per point")
        if not points and box is None:
            raise ValueError(f"{where}: give points and/or a box")
        try:
            prompts.append(
                ObjectPrompt(int(entry["id"]), int(entry["frame"]), [[float(x), float(y)] for x, y in points],
                             [int(v) for v in labels], None if box is None else [float(v) for v in box])
            )  # fmt: skip
        except (TypeError, ValueError) as err:
            raise ValueError(f"{where}: {err}") from err
    return prompts


def check_prompts(prompts: list[ObjectPrompt], num_frames: int, size: tuple[int, int]) -> None:
    """Every prompt fits the video (frames in range, coordinates inside); one line per problem."""
    if not prompts:
        raise ValueError("nothing to track: give --object / --object-box, or --prompts FILE")
    height, width = size
    seen: set[tuple[int, int]] = set()
    for p in prompts:
        if (p.obj_id, p.frame) in seen:
            raise ValueError(f"object {p.obj_id} has two prompts on frame {p.frame}; give its clicks and box once")
        seen.add((p.obj_id, p.frame))
        if not 0 <= p.frame < num_frames:
            raise ValueError(f"object {p.obj_id}: frame {p.frame} is past the end (the video has {num_frames} frames)")
        xy = [*p.points, *([p.box[:2], p.box[2:]] if p.box else [])]
        for x, y in xy:
            if not (0 <= x <= width and 0 <= y <= height):
                raise ValueError(
                    f"object {p.obj_id} on frame {p.frame}: ({x:g}, {y:g}) is outside the {width}x{height} video"
                )
        if p.box and (p.box[2] <= p.box[0] or p.box[3] <= p.box[1]):
            raise ValueError(f"object {p.obj_id} on frame {p.frame}: box needs x1 > x0 and y1 > y0")
