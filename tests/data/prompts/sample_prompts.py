"""Rebuild the prompt samples in this folder from the full lists (not needed to run the tests).

    python tests/data/prompts/sample_prompts.py FULL_LISTS_DIR

Each sample keeps the source's order: evenly spaced lines, plus the source's longest lines in BPE
tokens (so truncation is exercised) and, for ``v3det_13204``, every line with non-ASCII characters.
"""

from __future__ import annotations

import sys
from pathlib import Path

# file name -> lines to keep (None: the whole file)
SAMPLES: dict[str, int | None] = {
    "coco80.txt": None,
    "clip_imagenet_templates.txt": None,
    "ade20k150.txt": None,
    "lvis_v1.txt": 300,
    "lvis_v1_synonyms.txt": 300,
    "lvis_v1_defs.txt": 200,
    "refytvos_valid_expressions.txt": 300,
    "ade20k847.txt": 200,
    "openimages_v6_boxable.txt": 150,
    "objects365_v2.txt": 150,
    "pascal_context459.txt": 150,
    "rf100_classes.txt": 150,
    "detic_lvis_in21k_22k.txt": 200,
    "v3det_13204.txt": 100,
}
LONGEST = 5  # the source's longest prompts always kept


def sample(lines: list[str], keep: int | None, lengths: list[int]) -> list[str]:
    """``keep`` lines of ``lines`` in their order: the longest and the non-ASCII ones, then evenly spaced others."""
    if keep is None or keep >= len(lines):
        return lines
    must = set(sorted(range(len(lines)), key=lambda i: -lengths[i])[:LONGEST])
    must |= {i for i, line in enumerate(lines) if not line.isascii()}
    others = [i for i in range(len(lines)) if i not in must]
    count = keep - len(must)
    spaced = {others[i * len(others) // count] for i in range(count)}
    return [lines[i] for i in sorted(must | spaced)]


def main(source: Path) -> None:
    from sam3lite.processing.tokenizer import Tokenizer

    tokenizer = Tokenizer()
    here = Path(__file__).parent
    for name, keep in SAMPLES.items():
        lines = (source / name).read_text("utf-8").splitlines()
        lengths = [len(tokenizer.encode(line)) for line in lines]
        kept = sample(lines, keep, lengths)
        (here / name).write_text("\n".join(kept) + "\n", encoding="utf-8")
        print(f"{name}: {len(kept)} of {len(lines)} lines")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
