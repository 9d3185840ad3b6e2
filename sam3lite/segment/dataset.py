"""The prompts of a run: noun phrases (from the command line, a prompts file or a COCO dataset's
categories, whose ids then become ``category_id`` in ``results.json``), exemplar boxes, and one object
given by clicks and/or an object box (SAM3's tracker head)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ..processing.images import image_size
from .inputs import read_listed_lines

VISUAL_PROMPT = "visual"  # the text the model pairs with box-only prompts
OBJECT_PROMPT = "object"  # the name under which the clicked / boxed object is written


@dataclass(frozen=True)
class Prompts:
    """What every image is asked.

    texts: one noun phrase per category ("visual" when only boxes are given).
    category_ids: the COCO ``category_id`` of each text.
    boxes: exemplar boxes (pixel xyxy) shared by every text, or None.
    box_labels: 1 positive / 0 negative per box, or None.
    object: the clicked / boxed object (``--point``, ``--object-box``), or None; written as the
        category ``"object"`` with the id after the texts'.
    """

    texts: list[str]
    category_ids: list[int]
    boxes: list[list[float]] | None = None
    box_labels: list[int] | None = None
    object: ObjectSpec | None = None

    @property
    def names(self) -> list[str]:
        """Every category written: the texts, then ``"object"`` when an object is asked for."""
        return self.texts + ([OBJECT_PROMPT] if self.object else [])

    @property
    def ids(self) -> list[int]:
        """The ``category_id`` of each of ``names``."""
        extra = [max(self.category_ids, default=0) + 1] if self.object else []
        return self.category_ids + extra

    def category_of(self) -> dict[str, int]:
        return dict(zip(self.names, self.ids, strict=True))


@dataclass(frozen=True)
class ObjectSpec:
    """One object to segment in every image, in pixels: clicks [N, 2] with labels [N] (1 on the
    object, 0 background) and/or an object box [4] (x0, y0, x1, y1)."""

    points: list[list[float]] | None
    point_labels: list[int] | None
    box: list[float] | None

    @property
    def multimask(self) -> bool:
        """A single click is ambiguous (part or whole?): ask for 3 masks and keep the best, as SAM does."""
        return self.box is None and self.points is not None and len(self.points) == 1


def read_prompts_file(path: str) -> list[str]:
    """Prompts listed one per line; blank lines and ``#`` comments are skipped."""
    prompts = read_listed_lines(path, "prompts file")
    if not prompts:
        raise ValueError(f"prompts file {path} lists no prompts")
    return prompts


def parse_box(text: str) -> tuple[list[float], int]:
    """``"x1,y1,x2,y2"`` or ``"x1,y1,x2,y2,neg"`` (or ``pos``) -> (pixel xyxy box, label 1 or 0)."""
    fields = [f.strip() for f in text.split(",")]
    hint = "expected x1,y1,x2,y2 or x1,y1,x2,y2,neg (pixels, x2 > x1, y2 > y1)"
    if len(fields) not in (4, 5):
        raise ValueError(f"malformed --box {text!r}: {hint}")
    label = 1
    if len(fields) == 5:
        if fields[4].lower() not in ("neg", "pos"):
            raise ValueError(f"malformed --box {text!r}: the fifth field must be 'neg' or 'pos'")
        label = 0 if fields[4].lower() == "neg" else 1
    try:
        box = [float(v) for v in fields[:4]]
    except ValueError:
        raise ValueError(f"malformed --box {text!r}: {hint}") from None
    if not all(math.isfinite(v) for v in box) or not (box[2] > box[0] and box[3] > box[1]):
        raise ValueError(f"malformed --box {text!r}: {hint}")
    return box, label


def parse_point(text: str) -> tuple[list[float], int]:
    """``"x,y"`` or ``"x,y,label"`` (label 1 on the object, 0 background) -> (pixel point, label)."""
    fields = [f.strip() for f in text.split(",")]
    hint = "expected X,Y or X,Y,LABEL (pixels; LABEL 1 on the object, 0 background)"
    if len(fields) not in (2, 3):
        raise ValueError(f"malformed --point {text!r}: {hint}")
    try:
        point = [float(v) for v in fields[:2]]
    except ValueError:
        raise ValueError(f"malformed --point {text!r}: {hint}") from None
    if not all(math.isfinite(v) for v in point):
        raise ValueError(f"malformed --point {text!r}: {hint}")
    if len(fields) == 3 and fields[2] not in ("0", "1"):
        raise ValueError(f"malformed --point {text!r}: LABEL must be 1 (object) or 0 (background)")
    return point, int(fields[2]) if len(fields) == 3 else 1


def parse_object(points: Sequence[str], object_box: str | None) -> ObjectSpec | None:
    """``--point`` clicks and ``--object-box`` as one object, or None when neither is given."""
    if not points and object_box is None:
        return None
    parsed = [parse_point(p) for p in points]
    if parsed and not any(label for _, label in parsed) and object_box is None:
        raise ValueError("--point: every click is a background click (label 0); add one on the object")
    box = None
    if object_box is not None:
        fields = [f.strip() for f in object_box.split(",")]
        try:
            box = [float(v) for v in fields]
        except ValueError:
            box = []
        if len(box) != 4 or not all(math.isfinite(v) for v in box) or not (box[2] > box[0] and box[3] > box[1]):
            raise ValueError(f"malformed --object-box {object_box!r}: expected X0,Y0,X1,Y1 (pixels, X1 > X0, Y1 > Y0)")
    return ObjectSpec([p for p, _ in parsed] or None, [lab for _, lab in parsed] or None, box)


def build_prompts(
    texts: Sequence[str],
    prompts_file: str | None,
    boxes: Sequence[str],
    categories: Sequence[tuple[int, str]] | None,
    obj: ObjectSpec | None = None,
) -> Prompts:
    """The run's prompts: ``--prompt`` and ``--prompts-file`` texts (category ids 1, 2, ... in that
    order), else a dataset's category names (its ids; ``_`` read as a space, as in LVIS names), else
    "visual" when only ``--box`` is given; plus the clicked / boxed object, if any."""
    given = list(texts) + (read_prompts_file(prompts_file) if prompts_file else [])
    for text in given:
        if not text.strip():
            raise ValueError("empty prompt: every --prompt needs a noun phrase, e.g. --prompt cat")
    parsed = [parse_box(b) for b in boxes]
    box_list = [b for b, _ in parsed] or None
    labels = [lab for _, lab in parsed] or None
    if given:
        duplicates = sorted({t for t in given if given.count(t) > 1})
        if duplicates:
            raise ValueError(f"prompt {duplicates[0]!r} is given more than once")
        if obj is not None and OBJECT_PROMPT in given:
            raise ValueError(f"prompt {OBJECT_PROMPT!r} clashes with the name of the --point/--object-box object")
        return Prompts(given, list(range(1, len(given) + 1)), box_list, labels, obj)
    if categories:
        names = [name.replace("_", " ").strip() for _, name in categories]
        if len(set(names)) != len(names) or not all(names):
            raise ValueError("the dataset's category names are empty or repeat; pass prompts with --prompt")
        if obj is not None and OBJECT_PROMPT in names:
            raise ValueError(f"the dataset's category {OBJECT_PROMPT!r} clashes with the --point/--object-box object")
        return Prompts(names, [cid for cid, _ in categories], box_list, labels, obj)
    if box_list:
        return Prompts([VISUAL_PROMPT], [1], box_list, labels, obj)
    if obj is not None:
        return Prompts([], [], None, None, obj)
    raise ValueError("nothing to look for: give --prompt TEXT (or --prompts-file, --box, --point or --object-box)")


def check_boxes(prompts: Prompts, paths: Sequence[str]) -> list[str]:
    """``--box`` against every image's size (read from its header), before any work.

    Returns one warning per box that sticks out of some images (it is clipped there). Unreadable
    images are left to fail when they are read.

    Raises:
        ValueError: a box lies wholly outside an image (the message names ``--box`` and the image).
    """
    if not prompts.boxes:
        return []
    labels = prompts.box_labels or [1] * len(prompts.boxes)
    texts = [box_text(box, label) for box, label in zip(prompts.boxes, labels, strict=True)]
    clipped = [0] * len(prompts.boxes)
    for path in paths:
        try:
            height, width = image_size(path)
        except (OSError, ValueError):
            continue
        for j, (x1, y1, x2, y2) in enumerate(prompts.boxes):
            inside = (max(x1, 0.0), max(y1, 0.0), min(x2, float(width)), min(y2, float(height)))
            if not (inside[2] > inside[0] and inside[3] > inside[1]):
                raise ValueError(f"--box {texts[j]} lies outside image {path} ({width}x{height} pixels)")
            clipped[j] += inside != (x1, y1, x2, y2)
    return [
        f"--box {text} extends past the edge of {count} of {len(paths)} image(s) and is clipped there"
        for text, count in zip(texts, clipped, strict=True)
        if count
    ]


def check_object(prompts: Prompts, paths: Sequence[str]) -> None:
    """``--point`` and ``--object-box`` against every image's size (read from its header), before any
    work: a click outside an image, or an object box wholly outside it, is a usage error naming both.
    Unreadable images are left to fail when they are read."""
    obj = prompts.object
    if obj is None:
        return
    for path in paths:
        try:
            height, width = image_size(path)
        except (OSError, ValueError):
            continue
        for x, y in obj.points or []:
            if not (0.0 <= x <= width and 0.0 <= y <= height):
                raise ValueError(f"--point {x:g},{y:g} lies outside image {path} ({width}x{height} pixels)")
        if obj.box is not None:
            x0, y0, x1, y1 = obj.box
            if not (min(x1, width) > max(x0, 0.0) and min(y1, height) > max(y0, 0.0)):
                box = ",".join(f"{v:g}" for v in obj.box)
                raise ValueError(f"--object-box {box} lies outside image {path} ({width}x{height} pixels)")


def box_text(box: Sequence[float], label: int) -> str:
    """A box as the user wrote it: ``-50,-20,200,220`` (``,neg`` for a negative one)."""
    return ",".join(f"{v:g}" for v in box) + ("" if label else ",neg")
