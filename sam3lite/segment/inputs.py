"""Which images a run covers, in which order, and under which output names.

Every rank builds the same list from the same arguments (sorted by output name), so shards agree
without any exchange. Arguments may be:

- an image file (any extension: the user asked for it);
- a folder: every file with an image extension below it, recursively (hidden entries, and overlays
  that sam3lite wrote into the output folder, are skipped);
- a glob (``"photos/**/*.jpg"``, quoted so that the shell leaves it alone);
- a text file (``.txt``) listing images, one per line, relative to the list's folder; ``#`` comments;
- a COCO dataset json (``.json`` with an ``images`` list): see ``coco_dataset``.

An argument that names nothing (a missing file, a folder without images, a glob that matches none,
an empty list) is a usage error: the run stops before it starts. Images listed in a list or a
dataset that turn out missing or unreadable fail one by one while the others are processed.

Output names: the image's path relative to the common folder of all arguments, without extension,
with ``/`` replaced by ``__`` (``a/x.jpg`` -> ``a__x``). Images that would still share a name keep
their extension (``x.jpg``, ``x.png``), and a last clash gets a short hash of the path. Names are
deterministic for a given set of arguments, so a rerun finds its earlier outputs.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..processing.images import IMAGE_EXTENSIONS

LIST_EXTENSIONS = frozenset({".txt", ".lst"})
# Run-level files in the output folder (results.json, ..., run.json); an image of such a name keeps its extension.
RESERVED_NAMES = frozenset({"results", "images", "summary", "errors", "run"})
OVERLAY_SUFFIX = ".overlay.png"
_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class ImageItem:
    """One image of the run.

    path: the file to read, as the user spelled it (joined to the folder / list / glob it came from).
    name: unique output name: ``DIR/<name>.json`` and ``DIR/<name>.overlay.png``.
    image_id: the COCO ``image_id`` in ``results.json`` (index in the sorted list, or the dataset's id).
    """

    path: str
    name: str
    image_id: int


@dataclass
class Inputs:
    """The images of a run (and a COCO dataset's categories)."""

    items: list[ImageItem]
    categories: list[tuple[int, str]] | None = None  # a COCO dataset's (id, name), when one was given


def is_glob(text: str) -> bool:
    return any(c in _GLOB_CHARS for c in text)


def is_image_file(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def discover(arguments: Sequence[str], out_dir: str | os.PathLike, image_root: str | None = None) -> Inputs:
    """Expand the command-line arguments into a sorted, uniquely named image list.

    ``image_root`` is where a COCO dataset's ``file_name`` entries live (default: the json's folder).

    Raises:
        ValueError: an argument that yields no image (all of them named in one line).
    """
    if not arguments:
        raise ValueError("no images given")
    datasets = [a for a in arguments if a.lower().endswith(".json")]
    if datasets:
        if len(arguments) != 1:
            raise ValueError("a COCO dataset json must be the only input (its image ids number the results)")
        return coco_dataset(datasets[0], image_root)
    skip = os.path.realpath(out_dir)
    found: list[tuple[str, str]] = []  # (image path, the folder its name is relative to)
    problems: list[str] = []
    for argument in arguments:
        paths, problem = _expand(argument, skip)
        found.extend(paths)
        if problem:
            problems.append(problem)
    if problems:
        raise ValueError("; ".join(problems))
    unique = list(dict.fromkeys(found))  # the same file named twice is one image
    return Inputs(items=number(name_images(unique)))


def coco_dataset(json_path: str, image_root: str | None = None) -> Inputs:
    """Images (and categories) of a COCO-style dataset json."""
    try:
        with open(json_path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError as err:
        raise ValueError(f"dataset file not found: {json_path}") from err
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read dataset {json_path}: {err}") from err
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ValueError(f"{json_path} is not a COCO dataset json (no 'images' list)")
    root = image_root if image_root is not None else (os.path.dirname(json_path) or ".")
    ids: dict[str, int] = {}
    for k, image in enumerate(data["images"]):
        if not isinstance(image, dict) or "file_name" not in image or "id" not in image:
            raise ValueError(f"{json_path}: images[{k}] needs 'id' and 'file_name'")
        ids[os.path.join(root, str(image["file_name"]))] = int(image["id"])
    named = name_images((path, root) for path in ids)
    items = [ImageItem(path=path, name=name, image_id=ids[path]) for path, name in named]
    categories = [(int(c["id"]), str(c["name"])) for c in data.get("categories", []) if "id" in c and "name" in c]
    if not items:
        raise ValueError(f"{json_path}: the dataset lists no images")
    return Inputs(items=items, categories=categories or None)


def _expand(argument: str, skip: str) -> tuple[list[tuple[str, str]], str | None]:
    """One argument -> (image path, root) pairs, or a message saying why it gave none."""
    if os.path.isdir(argument):
        paths = walk_folder(argument, skip)
        return [(p, argument) for p in paths], None if paths else f"{argument}: no images in this folder"
    if os.path.isfile(argument) and os.path.splitext(argument)[1].lower() in LIST_EXTENSIONS:
        paths = read_image_list(argument)
        return [(p, os.path.dirname(p) or ".") for p in paths], None if paths else f"{argument}: empty image list"
    if not os.path.exists(argument) and is_glob(argument):
        matches = sorted(p for p in glob.glob(argument, recursive=True) if os.path.isfile(p) and is_image_file(p))
        matches = [p for p in matches if not is_own_output(p, skip)]
        root = glob_root(argument)
        return [(p, root) for p in matches], None if matches else f"{argument}: no images match this pattern"
    if not os.path.exists(argument):
        return [], f"{argument}: no such file or folder"
    # A file of any type: the user asked for it; an unreadable one fails when read, like a corrupt image.
    return [(argument, os.path.dirname(argument) or ".")], None


def walk_folder(folder: str, skip: str) -> list[str]:
    """Image files below ``folder``, recursively, hidden entries left out, as are overlays that an
    earlier run wrote into the output folder ``skip`` (so ``--out`` may be the input folder)."""
    paths: list[str] = []
    for current, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))  # in place: os.walk descends into these only
        for name in sorted(files):
            path = os.path.join(current, name)
            if not name.startswith(".") and is_image_file(name) and not is_own_output(path, skip):
                paths.append(path)
    return paths


def read_listed_lines(path: str, what: str) -> list[str]:
    """Stripped lines of a UTF-8 text file, blank lines and ``#`` comments skipped.

    Raises:
        ValueError: the file cannot be read; the message names it as ``what`` (e.g. "image list").
    """
    try:
        with open(path, encoding="utf-8") as fh:
            lines = [line.strip() for line in fh]
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot read {what} {path}: {err}") from err
    return [line for line in lines if line and not line.startswith("#")]


def read_image_list(list_path: str) -> list[str]:
    """Paths listed in a text file, one per line; relative ones are relative to the list's folder."""
    base = os.path.dirname(list_path)
    entries = read_listed_lines(list_path, "image list")
    return [entry if os.path.isabs(entry) else os.path.join(base, entry) for entry in entries]


def glob_root(pattern: str) -> str:
    """The folder part of a glob before its first wildcard (``data/**/*.jpg`` -> ``data``)."""
    parts = Path(pattern).parts
    fixed: list[str] = []
    for part in parts[:-1]:
        if is_glob(part):
            break
        fixed.append(part)
    return str(Path(*fixed)) if fixed else "."


def is_own_output(path: str, out_dir: str) -> bool:
    """An overlay picture written by sam3lite into ``out_dir`` (a real path)."""
    return path.endswith(OVERLAY_SUFFIX) and os.path.dirname(os.path.realpath(path)) == out_dir


# ----------------------------------------------------------------------------------------------
# Output names
# ----------------------------------------------------------------------------------------------


def name_images(paths: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """(path, root) pairs -> (path, unique output name), sorted by name."""
    pairs = list(paths)
    if not pairs:
        return []
    roots = [os.path.abspath(root) for _, root in pairs]
    try:
        common = os.path.commonpath(roots)
    except ValueError:  # different drives (Windows): no common folder
        common = ""
    relative = [_relative_parts(path, common) for path, _ in pairs]
    names = _unique_names(relative)
    return sorted(zip((p for p, _ in pairs), names, strict=True), key=lambda pair: pair[1])


def _relative_parts(path: str, common: str) -> tuple[str, ...]:
    full = os.path.abspath(path)
    rel = os.path.relpath(full, common) if common else full
    parts = tuple(p for p in Path(rel).parts if p not in (os.sep, ""))
    # ".." parts (a file outside the common folder cannot happen, but be safe) become readable.
    return tuple("up" if p == ".." else p for p in parts)


def _unique_names(relative: Sequence[tuple[str, ...]]) -> list[str]:
    """Names without extension; clashing ones keep it; remaining clashes get a hash of the path."""

    def joined(parts: tuple[str, ...], keep_suffix: bool) -> str:
        last = parts[-1] if keep_suffix else os.path.splitext(parts[-1])[0] or parts[-1]
        return "__".join((*parts[:-1], last))

    names = [joined(parts, keep_suffix=False) for parts in relative]
    for indices in _clashes(names):
        for i in indices:
            names[i] = joined(relative[i], keep_suffix=True)
    for indices in _clashes(names):
        for i in indices:
            digest = hashlib.sha1("/".join(relative[i]).encode()).hexdigest()[:8]
            names[i] = f"{names[i]}-{digest}"
    return names


def _clashes(names: Sequence[str]) -> list[list[int]]:
    """Groups of indices whose names are equal (or equal a reserved run-level file name)."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, name in enumerate(names):
        groups[name].append(i)
    return [idx for name, idx in groups.items() if len(idx) > 1 or name in RESERVED_NAMES]


def number(named: Sequence[tuple[str, str]]) -> list[ImageItem]:
    """Sorted (path, name) pairs -> items whose ``image_id`` is the index in that order."""
    return [ImageItem(path=path, name=name, image_id=i) for i, (path, name) in enumerate(named)]


def shard(indices: Sequence[int], rank: int, world_size: int) -> list[int]:
    """Rank ``rank``'s share: every ``world_size``-th entry. Strided rather than contiguous, so that
    slow parts of a dataset (big images in one folder) spread over all ranks."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside a world of {world_size}")
    return list(indices[rank::world_size])
