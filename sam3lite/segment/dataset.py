"""The prompts of a run: noun phrases (from the command line, a prompts file or a COCO dataset's
categories, whose ids then become ``category_id`` in ``results.json``) and exemplar boxes."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ..processing.images import image_size
from .inputs import read_listed_lines

VISUAL_PROMPT = "visual"  # the text the model pairs with box-only prompts


@dataclass(frozen=True)
class Prompts:
    """What every image is asked.

    texts: one noun phrase per category ("visual" when only boxes are given).
    category_ids: the COCO ``category_id`` of each text.
    boxes: exemplar boxes (pixel xyxy) shared by every text, or None.
    box_labels: 1 positive / 0 negative per box, or None.
    """

    texts: list[str]
    category_ids: list[int]
    boxes: list[list[float]] | None = None
    box_labels: list[int] | None = None

    def category_of(self) -> dict[str, int]:
        return dict(zip(self.texts, self.category_ids, strict=True))


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


def build_prompts(
    texts: Sequence[str],
    prompts_file: str | None,
    boxes: Sequence[str],
    categories: Sequence[tuple[int, str]] | None,
) -> Prompts:
    """The run's prompts: ``--prompt`` and ``--prompts-file`` texts (category ids 1, 2, ... in that
    order), else a dataset's category names (its ids; ``_`` read as a space, as in LVIS names), else
    "visual" when only ``--box`` is given."""
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
        return Prompts(given, list(range(1, len(given) + 1)), box_list, labels)
    if categories:
        names = [name.replace("_", " ").strip() for _, name in categories]
        if len(set(names)) != len(names) or not all(names):
            raise ValueError("the dataset's category names are empty or repeat; pass prompts with --prompt")
        return Prompts(names, [cid for cid, _ in categories], box_list, labels)
    if box_list:
        return Prompts([VISUAL_PROMPT], [1], box_list, labels)
    raise ValueError("nothing to look for: give --prompt TEXT (or --prompts-file, or --box)")


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


def box_text(box: Sequence[float], label: int) -> str:
    """A box as the user wrote it: ``-50,-20,200,220`` (``,neg`` for a negative one)."""
    return ",".join(f"{v:g}" for v in box) + ("" if label else ",neg")
